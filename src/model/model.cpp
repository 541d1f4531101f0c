#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace lp::model {

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, WeightPlacement placement) {
  LoadOptions o;
  o.placement = placement;
  return load(dir, o);
}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const LoadOptions& options) {
  ModelConfig c = ModelConfig::from_dir(dir);
  ModelWeights w = ModelWeights::load(dir, c, options);
  return std::make_unique<Model>(std::move(c), std::move(w));
}

Model::Model(ModelConfig config, ModelWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  LP_CHECK(config_.max_model_len > 0);
}

std::string Model::describe() const { return fmt::format("cpu: {}", kernels::isa_name()); }

std::unique_ptr<kv::KvCache> Model::make_kv_cache(const kv::KvShape& shape, int num_blocks) {
  return std::make_unique<kv::KvCache>(shape, num_blocks);
}

void Model::ensure_scratch(int64_t T, int64_t R) {
  const auto& c = config_;
  if (T > cap_tokens_) {
    cap_tokens_ = T;
    x_.resize(T * c.hidden_size);
    xn_.resize(T * c.hidden_size);
    q_.resize(T * c.q_dim());
    k_.resize(T * c.kv_dim());
    v_.resize(T * c.kv_dim());
    attn_.resize(T * c.q_dim());
    gate_.resize(T * c.intermediate_size);
    up_.resize(T * c.intermediate_size);
  }
  if (R > cap_rows_) {
    cap_rows_ = R;
    last_.resize(R * c.hidden_size);
  }
}

std::span<const kernels::MatView> Model::weights_after(int layer, Proj p) const {
  const kernels::MatView* w = weights_.layers[layer].proj;
  switch (p) {
    case Proj::kQ:
    case Proj::kK:
    case Proj::kV:
      return {w + static_cast<int>(Proj::kO), 1};
    case Proj::kO:
      return {w + static_cast<int>(Proj::kGate), 2};
    case Proj::kGate:
    case Proj::kUp:
      return {w + static_cast<int>(Proj::kDown), 1};
    case Proj::kDown:
      if (layer + 1 < config_.n_layers) return {weights_.layers[layer + 1].proj, 3};
      return {&weights_.lm_head, 1};
  }
  return {};
}

void Model::project(ComputePool& pool, int layer, Proj p, const float* x, int64_t T, float* y,
                    bool accumulate) {
  const LayerWeights& lw = weights_.layers[layer];
  const int i = static_cast<int>(p);
  const kernels::MatView& W = lw.proj[i];
  kernels::matmul(pool, x, T, W.cols, W, lw.bias[i], y, W.rows, accumulate, weights_after(layer, p));
}

void Model::project_multi(ComputePool& pool, int layer, const float* x, int64_t T,
                          std::initializer_list<std::pair<Proj, float*>> outs) {
  const LayerWeights& lw = weights_.layers[layer];
  kernels::MatmulOut mo[kNumProj];
  size_t n = 0;
  for (auto [p, y] : outs) {
    const int i = static_cast<int>(p);
    mo[n++] = {lw.proj[i], lw.bias[i], y, lw.proj[i].rows, false};
  }
  kernels::matmul_multi(pool, x, T, mo[0].W.cols, std::span<const kernels::MatmulOut>(mo, n),
                        weights_after(layer, outs.begin()->first));
}

void Model::add_lora(ComputePool& pool, int layer, const float* x,
                     std::initializer_list<std::pair<Proj, float*>> outs) {
  if (lora_ == nullptr || lora_plan_.empty()) return;
  kernels::LoraTarget targets[kNumProj];
  size_t n = 0;
  int64_t ldx = 0;
  for (auto [p, y] : outs) {
    const kernels::MatView& W = weights_.layers[layer].proj[static_cast<int>(p)];
    ldx = W.cols;
    if (const kernels::LoraWeights* w = lora_->get(layer, p)) targets[n++] = {w, y, W.rows};
  }
  if (n > 0)
    kernels::lora_apply(pool, lora_plan_, x, ldx, std::span<const kernels::LoraTarget>(targets, n),
                        lora_scratch_);
}

void Model::attention_block(ComputePool& pool, const Batch& b, kv::KvCache& cache, int layer) {
  const auto& c = config_;
  const LayerWeights& lw = weights_.layers[layer];
  const int64_t T = b.size(), H = c.hidden_size;
  kernels::rmsnorm(pool, x_.data(), T, H, lw.attn_norm, lw.norm_dtype, static_cast<float>(c.rms_norm_eps),
                   xn_.data());
  project_multi(pool, layer, xn_.data(), T,
                {{Proj::kQ, q_.data()}, {Proj::kK, k_.data()}, {Proj::kV, v_.data()}});
  add_lora(pool, layer, xn_.data(), {{Proj::kQ, q_.data()}, {Proj::kK, k_.data()}, {Proj::kV, v_.data()}});
  kernels::rope(q_.data(), T, c.n_heads, c.head_dim, b.positions.data(), rope_.cos.data(), rope_.sin.data());
  kernels::rope(k_.data(), T, c.n_kv_heads, c.head_dim, b.positions.data(), rope_.cos.data(), rope_.sin.data());
  kernels::PagedKV kv{cache.k(layer), cache.v(layer), cache.shape().block_size,
                      c.n_kv_heads,   c.head_dim,     cache.shape().dtype};
  kernels::kv_write(kv, k_.data(), v_.data(), b.slots.data(), T);
  kernels::attention(pool, q_.data(), kv, b.seqs, c.n_heads, 1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                     attn_.data());
  // Residual add fused into the output projection: x += attn · Woᵀ (+ bias) (+ LoRA).
  project(pool, layer, Proj::kO, attn_.data(), T, x_.data(), /*accumulate=*/true);
  add_lora(pool, layer, attn_.data(), {{Proj::kO, x_.data()}});
}

void Model::mlp_block(ComputePool& pool, int64_t T, int layer) {
  const auto& c = config_;
  const LayerWeights& lw = weights_.layers[layer];
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  kernels::rmsnorm(pool, x_.data(), T, H, lw.mlp_norm, lw.norm_dtype, static_cast<float>(c.rms_norm_eps),
                   xn_.data());
  project_multi(pool, layer, xn_.data(), T, {{Proj::kGate, gate_.data()}, {Proj::kUp, up_.data()}});
  add_lora(pool, layer, xn_.data(), {{Proj::kGate, gate_.data()}, {Proj::kUp, up_.data()}});
  kernels::silu_mul(pool, gate_.data(), up_.data(), gate_.data(), T * I);
  project(pool, layer, Proj::kDown, gate_.data(), T, x_.data(), /*accumulate=*/true);
  add_lora(pool, layer, gate_.data(), {{Proj::kDown, x_.data()}});
}

void Model::forward(ComputePool& pool, const Batch& b, kv::KvCache& cache, float* logits,
                    const LoraBankView* lora) {
  const auto& c = config_;
  const int64_t T = b.size(), H = c.hidden_size;
  const int64_t R = static_cast<int64_t>(b.logit_rows.size());
  LP_CHECK(T > 0, "empty batch");
  const kv::KvShape& ks = cache.shape();
  LP_CHECK(ks.n_layers == c.n_layers && ks.n_kv_heads == c.n_kv_heads && ks.head_dim == c.head_dim,
           "KV cache shape ({} layers, {} kv heads, head_dim {}) is not this model's", ks.n_layers,
           ks.n_kv_heads, ks.head_dim);
  LP_CHECK(b.positions.size() == b.tokens.size() && b.slots.size() == b.tokens.size());
  int64_t max_pos = 0;
  for (int64_t t = 0; t < T; ++t) {
    LP_CHECK(b.tokens[t] >= 0 && b.tokens[t] < c.vocab_size, "token id {} out of range", b.tokens[t]);
    LP_CHECK(b.positions[t] >= 0 && b.positions[t] < c.max_model_len, "position {} out of range",
             b.positions[t]);
    max_pos = std::max<int64_t>(max_pos, b.positions[t]);
  }
  ensure_scratch(T, R);
  rope_.grow(config_, max_pos + 1);
  lora_ = nullptr;  // add_lora reads lora_plan_ only when lora_ is set, i.e. after lora_plan_build below
  if (lora != nullptr && !b.lora_slots.empty()) {
    LP_CHECK(b.lora_slots.size() == b.tokens.size() && static_cast<int>(lora->layers.size()) == c.n_layers);
    lora_ = lora;
    kernels::lora_plan_build(b.lora_slots, b.lora_scales, b.lora_more, lora_plan_, lora_merge_);
  }

  kernels::embed(weights_.embed, b.tokens.data(), T, x_.data());
  for (int l = 0; l < c.n_layers; ++l) {
    attention_block(pool, b, cache, l);
    mlp_block(pool, T, l);
  }
  if (R == 0) return;
  for (int64_t r = 0; r < R; ++r) {
    int32_t row = b.logit_rows[r];
    LP_CHECK(row >= 0 && row < T);
    std::copy_n(x_.data() + row * H, H, last_.data() + r * H);
  }
  kernels::rmsnorm(pool, last_.data(), R, H, weights_.final_norm, weights_.final_norm_dtype,
                   static_cast<float>(c.rms_norm_eps), last_.data());
  kernels::matmul(pool, last_.data(), R, H, weights_.lm_head, nullptr, logits, c.vocab_size);
}

}  // namespace lp::model
