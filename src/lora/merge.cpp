#include "lora/merge.h"

#include <map>

#include "core/buffer.h"
#include "core/check.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "lora/slot_bank.h"
#include "model/config.h"

namespace lp::lora {

namespace fs = std::filesystem;

void merge_adapter(const fs::path& model_dir, const fs::path& adapter_dir, const fs::path& out_dir) {
  model::ModelConfig cfg = model::ModelConfig::from_dir(model_dir);  // refuses quantizations it can't load
  if (!cfg.quant.method.empty())
    fail(
        "cannot merge into {}: it is a quantized checkpoint ({}, from quantization_config in config.json); "
        "merging W + s*B*A into quantized weights would requantize them and round the adapter's update "
        "away. Serve the adapter on the quantized base (serve --lora-modules), or merge into the "
        "unquantized model",
        model_dir.string(), cfg.quant.method);
  io::TensorSet base = io::TensorSet::open_dir(model_dir);
  LoraAdapter adapter = load_adapter(adapter_dir, base_shapes(cfg));
  if (fs::exists(out_dir) && fs::equivalent(out_dir, model_dir)) fail("--out must differ from --model");
  fs::create_directories(out_dir);

  std::map<std::string, const LoraWeights*> by_tensor;
  for (const LoraWeights& w : adapter.weights) by_tensor[module_path(w.layer, w.module) + ".weight"] = &w;

  io::SafetensorsWriter writer;
  std::vector<Buffer<uint8_t>> store;
  for (const io::TensorInfo* t : base.all()) {
    auto it = by_tensor.find(t->name);
    if (it == by_tensor.end()) {
      writer.add(t->name, t->dtype, t->shape, t->data);
      continue;
    }
    const LoraWeights& w = *it->second;
    LP_CHECK(t->shape.size() == 2 && t->shape[0] == w.out && t->shape[1] == w.in);
    // W + s·B·A in double, rounded once to the base dtype.
    std::vector<float> wf(static_cast<size_t>(w.out * w.in));
    to_f32(t->dtype, t->data, wf.data(), wf.size());
    std::vector<double> row(static_cast<size_t>(w.in));
    for (int64_t n = 0; n < w.out; ++n) {
      std::fill(row.begin(), row.end(), 0.0);
      for (int j = 0; j < w.rank; ++j) {
        double bj = static_cast<double>(w.b[n * w.rank + j]) * w.scale;
        const float* a = w.a.data() + static_cast<size_t>(j) * w.in;
        for (int64_t k = 0; k < w.in; ++k) row[k] += bj * a[k];
      }
      for (int64_t k = 0; k < w.in; ++k) wf[n * w.in + k] = static_cast<float>(wf[n * w.in + k] + row[k]);
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

}  // namespace lp::lora
