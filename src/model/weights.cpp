#include "model/weights.h"

#include <cstring>

#include "core/check.h"

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
  if (!t) fail("missing tensor '{}' (expected shape {})", name, io::shape_str(shape));
  if (t->shape != shape)
    fail("tensor '{}' has shape {}, expected {}", name, t->shape_str(), io::shape_str(shape));
  return *t;
}

kernels::MatView mat(const io::TensorInfo& t) {
  return kernels::MatView{t.data, t.dtype, t.shape[0], t.shape[1], t.shape[1]};
}

size_t mat_bytes(const kernels::MatView& m) {
  return static_cast<size_t>(m.rows * m.row_stride) * dtype_size(m.dtype);
}

// Copies the streamed matrices into one huge-page buffer (each on a 4 KiB boundary) and points the views at
// the copies; then gives the file pages they came from back (TensorSet::drop_resident), so the copy does
// not double the RSS.
void copy_streamed(ModelWeights& w) {
  std::vector<kernels::MatView*> mats;
  for (LayerWeights& lw : w.layers)
    for (kernels::MatView& m : lw.proj) mats.push_back(&m);
  const bool tied = w.lm_head.data == w.embed.data;
  mats.push_back(&w.lm_head);
  constexpr size_t kPage = 4096;
  size_t total = 0;
  for (const kernels::MatView* m : mats) total += round_up(mat_bytes(*m), kPage);
  w.streamed.resize(total);
  size_t off = 0;
  for (kernels::MatView* m : mats) {
    const size_t n = mat_bytes(*m);
    std::memcpy(w.streamed.data() + off, m->data, n);
    w.tensors.drop_resident(m->data, n);
    m->data = w.streamed.data() + off;
    off += round_up(n, kPage);
  }
  if (tied) w.embed = w.lm_head;
}

}  // namespace

ModelWeights ModelWeights::load(const std::filesystem::path& dir, const ModelConfig& c,
                                WeightPlacement placement) {
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
  size_t step_bytes = mat_bytes(w.lm_head) + fnorm.nbytes;

  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    std::string pre = "model.layers." + std::to_string(l) + ".";
    for (int p = 0; p < kNumProj; ++p) {
      Proj pr = static_cast<Proj>(p);
      auto [in, out] = proj_shape(c, pr);
      std::string base = pre + proj_parent(pr) + "." + proj_name(pr);
      const auto& t = need(ts, base + ".weight", {out, in});
      lw.proj[p] = mat(t);
      step_bytes += t.nbytes;
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
  if (placement == WeightPlacement::kMemory) copy_streamed(w);
  w.bytes_per_decode_step = step_bytes;
  w.total_bytes = ts.total_bytes();
  return w;
}

}  // namespace lp::model
