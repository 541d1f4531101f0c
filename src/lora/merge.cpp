#include "lora/merge.h"

#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/check.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "lora/slot_bank.h"
#include "model/config.h"

namespace lp::lora {

namespace fs = std::filesystem;

void merge_adapters(const fs::path& model_dir, std::span<const MergeTerm> terms, const fs::path& out_dir) {
  model::ModelConfig cfg = model::ModelConfig::from_dir(model_dir);  // refuses quantizations it can't load
  if (!cfg.quant.method.empty())
    fail(
        "cannot merge into {}: it is a quantized checkpoint ({}, from quantization_config in config.json); "
        "merging W + s*B*A into quantized weights would requantize them and round the adapter's update "
        "away. Serve the adapter on the quantized base (serve --lora-modules), or merge into the "
        "unquantized model",
        model_dir.string(), cfg.quant.method);
  io::TensorSet base = io::TensorSet::open_dir(model_dir);
  if (terms.empty()) fail("merge: no adapter given");
  std::vector<LoraAdapter> adapters;
  for (const MergeTerm& t : terms) {
    if (!std::isfinite(t.scale)) fail("merge: the scale of {} is not a finite number", t.adapter.string());
    adapters.push_back(load_adapter(t.adapter, base_shapes(cfg)));
  }
  if (fs::exists(out_dir) && fs::equivalent(out_dir, model_dir)) fail("--out must differ from --model");
  fs::create_directories(out_dir);

  // Per base tensor, the adapters' updates with their request scales, in the order given.
  std::map<std::string, std::vector<std::pair<const LoraWeights*, double>>> by_tensor;
  for (size_t i = 0; i < adapters.size(); ++i)
    for (const LoraWeights& w : adapters[i].weights)
      by_tensor[module_path(w.layer, w.module) + ".weight"].emplace_back(&w, terms[i].scale);

  io::SafetensorsWriter writer;
  std::vector<Buffer<uint8_t>> store;
  for (const io::TensorInfo* t : base.all()) {
    auto it = by_tensor.find(t->name);
    if (it == by_tensor.end()) {
      writer.add(t->name, t->dtype, t->shape, t->data);
      continue;
    }
    LP_CHECK(t->shape.size() == 2);
    const int64_t rows = t->shape[0], in = t->shape[1];
    // W + sum_i m_i·s_i·B_i·A_i in double, rounded once to the base dtype.
    std::vector<float> wf(static_cast<size_t>(rows * in));
    to_f32(t->dtype, t->data, wf.data(), wf.size());
    std::vector<double> row(static_cast<size_t>(in));
    for (int64_t n = 0; n < rows; ++n) {
      std::fill(row.begin(), row.end(), 0.0);
      for (auto [w, m] : it->second) {
        LP_CHECK(w->out == rows && w->in == in);
        for (int j = 0; j < w->rank; ++j) {
          double bj = static_cast<double>(w->b[n * w->rank + j]) * w->scale * m;
          const float* a = w->a.data() + static_cast<size_t>(j) * in;
          for (int64_t k = 0; k < in; ++k) row[k] += bj * a[k];
        }
      }
      for (int64_t k = 0; k < in; ++k) wf[n * in + k] = static_cast<float>(wf[n * in + k] + row[k]);
    }
    Buffer<uint8_t> out(wf.size() * dtype_size(t->dtype));
    from_f32(t->dtype, wf.data(), out.data(), wf.size());
    writer.add(t->name, t->dtype, t->shape, out.data());
    store.push_back(std::move(out));
  }
  writer.set_metadata("format", "pt");
  writer.write(out_dir / "model.safetensors");
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                        "special_tokens_map.json"}) {
    if (fs::exists(model_dir / f)) fs::copy_file(model_dir / f, out_dir / f, fs::copy_options::overwrite_existing);
  }
}

void merge_adapter(const fs::path& model_dir, const fs::path& adapter_dir, const fs::path& out_dir) {
  const MergeTerm t{adapter_dir, 1.0};
  merge_adapters(model_dir, std::span<const MergeTerm>(&t, 1), out_dir);
}

}  // namespace lp::lora
