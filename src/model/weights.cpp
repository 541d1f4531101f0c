#include "model/weights.h"

#include <cstring>

#include "core/check.h"
#include "core/log.h"
#include "model/checkpoint_quant.h"

namespace lp::model {

const char* proj_name(Proj p) {
  static const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return names[static_cast<int>(p)];
}

const char* proj_parent(Proj p) { return static_cast<int>(p) < 4 ? "self_attn" : "mlp"; }

std::pair<int, int> proj_shape(const ModelConfig& c, Proj p) {
  switch (p) {
    case Proj::kQ: return {c.hidden_size, c.q_dim()};
    case Proj::kK:
    case Proj::kV: return {c.hidden_size, c.kv_dim()};
    case Proj::kO: return {c.q_dim(), c.hidden_size};
    case Proj::kGate:
    case Proj::kUp: return {c.hidden_size, c.intermediate_size};
    case Proj::kDown: return {c.intermediate_size, c.hidden_size};
  }
  return {0, 0};
}

bool has_bias(const ModelConfig& c, Proj p) {
  switch (p) {
    case Proj::kQ:
    case Proj::kK:
    case Proj::kV: return c.attention_bias;
    case Proj::kO: return c.o_bias;
    case Proj::kGate:
    case Proj::kUp:
    case Proj::kDown: return c.mlp_bias;
  }
  return false;
}

namespace {

const io::TensorInfo& need(const io::TensorSet& ts, const std::string& name, std::vector<int64_t> shape) {
  const io::TensorInfo* t = ts.find(name);
  if (!t && ts.find_i32(name))
    fail("tensor '{}' has dtype I32, expected a float tensor of shape {}", name, io::shape_str(shape));
  if (!t) fail("missing tensor '{}' (expected shape {})", name, io::shape_str(shape));
  if (t->shape != shape)
    fail("tensor '{}' has shape {}, expected {}", name, t->shape_str(), io::shape_str(shape));
  return *t;
}

kernels::MatView mat(const io::TensorInfo& t) {
  return kernels::MatView{t.data, t.dtype, t.shape[0], t.shape[1], t.shape[1]};
}

size_t view_bytes(const kernels::MatView& m) {
  return static_cast<size_t>(kernels::mat_bytes(m));
}

const char* format_name(const kernels::MatView& m) {
  switch (m.format) {
    case kernels::WeightFormat::kQ8:
      return "int8";
    case kernels::WeightFormat::kQ4:
      return "int4";
    case kernels::WeightFormat::kDense:
      break;
  }
  return dtype_name(m.dtype).data();
}

// Replaces the dense view m by its int8 quantization and lets the file pages it was read from go, unless
// the embedding still reads them (a tied lm_head: the embedding keeps its dense copy).
void quantize_int8(ModelWeights& w, kernels::MatView& m) {
  kernels::QuantMatrix q = kernels::QuantMatrix::quantize_int8(m);
  if (m.data != w.embed.data) w.tensors.drop_resident(m.data, view_bytes(m));
  m = q.view();
  w.quant_storage.push_back(std::move(q));
}

// Copies the streamed matrices into one huge-page buffer (each on a 4 KiB boundary) and points the views at
// the copies; then gives the file pages they came from back (TensorSet::drop_resident), so the copy does
// not double the RSS.
void copy_streamed(ModelWeights& w, const LoadOptions& opt) {
  std::vector<kernels::MatView*> mats;
  for (LayerWeights& lw : w.layers)
    for (kernels::MatView& m : lw.proj) mats.push_back(&m);
  const bool tied = w.lm_head.data == w.embed.data;
  mats.push_back(&w.lm_head);
  std::erase_if(mats, [](const kernels::MatView* m) { return m->format != kernels::WeightFormat::kDense; });
  constexpr size_t kPage = 4096;
  size_t total = 0;
  for (const kernels::MatView* m : mats) total += round_up(view_bytes(*m), kPage);
  w.streamed.resize(total);
  size_t off = 0, done = 0, all = 0;
  for (const kernels::MatView* m : mats) all += view_bytes(*m);
  for (kernels::MatView* m : mats) {
    const size_t n = view_bytes(*m);
    std::memcpy(w.streamed.data() + off, m->data, n);  // reads the file pages: most of a cold load's time
    w.tensors.drop_resident(m->data, n);
    m->data = w.streamed.data() + off;
    off += round_up(n, kPage);
    if (opt.progress) opt.progress("copying", done += n, all);
  }
  if (tied) w.embed = w.lm_head;
}

}  // namespace

void check_load_options(const ModelConfig& c, const LoadOptions& o) {
  if (!c.quant.method.empty() && o.quantization == Quantization::kInt8)
    fail(
        "--quantization int8: config.json's quantization_config says {} (an int4 checkpoint); "
        "--quantization int8 applies to F32/F16/BF16 checkpoints only",
        c.quant.method);
}

Quantization parse_quantization_flag(std::string_view v, std::string_view flag) {
  if (v == "none") return Quantization::kNone;
  if (v == "int8") return Quantization::kInt8;
  fail("{} {}: expected none or int8 (int4 AWQ / GPTQ checkpoints are detected from config.json)", flag, v);
}

std::vector<std::pair<std::string, size_t>> ModelWeights::bytes_by_format() const {
  std::vector<std::pair<std::string, size_t>> out;
  auto add = [&](const kernels::MatView& m) {
    std::string f = format_name(m);
    for (auto& [name, n] : out)
      if (name == f) return void(n += view_bytes(m));
    out.emplace_back(f, view_bytes(m));
  };
  for (const LayerWeights& lw : layers)
    for (const kernels::MatView& m : lw.proj) add(m);
  add(lm_head);
  return out;
}

ModelWeights ModelWeights::load(const std::filesystem::path& dir, const ModelConfig& c,
                                const LoadOptions& opt) {
  check_load_options(c, opt);
  const bool int4 = !c.quant.method.empty();  // an AWQ / GPTQ checkpoint: projections come packed
  ModelWeights w;
  w.tensors = io::TensorSet::open_dir(dir);
  const auto& ts = w.tensors;
  const int64_t H = c.hidden_size;
  w.embed = mat(need(ts, "model.embed_tokens.weight", {c.vocab_size, H}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    w.lm_head = mat(need(ts, "lm_head.weight", {c.vocab_size, H}));
  }
  const auto& fnorm = need(ts, "model.norm.weight", {H});
  w.final_norm = fnorm.data;
  w.final_norm_dtype = fnorm.dtype;
  size_t step_bytes = fnorm.nbytes;  // + the matrices, counted in the format they run in (below)

  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    std::string pre = "model.layers." + std::to_string(l) + ".";
    for (int p = 0; p < kNumProj; ++p) {
      Proj pr = static_cast<Proj>(p);
      auto [in, out] = proj_shape(c, pr);
      std::string base = pre + proj_parent(pr) + "." + proj_name(pr);
      if (int4) {
        kernels::QuantMatrix q = load_checkpoint_q4(ts, base, in, out, c.quant);
        lw.proj[p] = q.view();
        w.quant_storage.push_back(std::move(q));
      } else {
        if (!ts.find(base + ".weight") && ts.find_i32(base + ".qweight"))
          fail("{} has packed int4 tensors ({}.qweight) but config.json has no quantization_config",
               dir.string(), base);
        lw.proj[p] = mat(need(ts, base + ".weight", {out, in}));
      }
      if (has_bias(c, pr)) {
        const auto& b = need(ts, base + ".bias", {out});
        Buffer<float> f(out);
        to_f32(b.dtype, b.data, f.data(), out);
        lw.bias[p] = f.data();
        w.bias_storage.push_back(std::move(f));
        step_bytes += b.nbytes;
      }
    }
    const auto& an = need(ts, pre + "input_layernorm.weight", {H});
    const auto& mn = need(ts, pre + "post_attention_layernorm.weight", {H});
    if (an.dtype != mn.dtype) fail("layer {} norm weights have different dtypes", l);
    lw.attn_norm = an.data;
    lw.mlp_norm = mn.data;
    lw.norm_dtype = an.dtype;
    step_bytes += an.nbytes + mn.nbytes;
  }
  if (opt.quantization == Quantization::kInt8) {
    size_t done = 0, all = 0;
    for (const LayerWeights& lw : w.layers)
      for (const kernels::MatView& m : lw.proj)
        if (m.format == kernels::WeightFormat::kDense) all += view_bytes(m);
    for (LayerWeights& lw : w.layers)
      for (kernels::MatView& m : lw.proj)
        if (m.format == kernels::WeightFormat::kDense) {
          done += view_bytes(m);
          quantize_int8(w, m);
          if (opt.progress) opt.progress("quantizing", done, all);
        }
    w.quantization = "int8";
  }
  if (int4) w.quantization = c.quant.method;
  if (w.quantization != "none" && !kernels::fast_quantized_matmul())
    log_warn("{} weights: this CPU ({}) has no AVX512-VNNI, so quantized matmuls run the scalar reference "
             "kernels (correct, but far slower than the {} model would run unquantized)",
             w.quantization, kernels::isa_name(), dtype_name(c.torch_dtype));
  if (opt.quantize_lm_head && w.lm_head.format == kernels::WeightFormat::kDense) quantize_int8(w, w.lm_head);
  if (opt.placement == WeightPlacement::kMemory) copy_streamed(w, opt);
  step_bytes += view_bytes(w.lm_head);
  for (const LayerWeights& lw : w.layers)
    for (const kernels::MatView& m : lw.proj) step_bytes += view_bytes(m);
  w.bytes_per_decode_step = step_bytes;
  w.total_bytes = ts.total_bytes();
  return w;
}

}  // namespace lp::model
