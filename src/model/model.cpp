#include "model/model.h"

#include <cmath>

#include "core/check.h"

namespace lp::model {

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir) {
  ModelConfig c = ModelConfig::from_dir(dir);
  ModelWeights w = ModelWeights::load(dir, c);
  return std::make_unique<Model>(std::move(c), std::move(w));
}

Model::Model(ModelConfig config, ModelWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  const int half = config_.head_dim / 2;
  const int64_t n_pos = config_.max_model_len;
  LP_CHECK(n_pos > 0);
  cos_.resize(n_pos * half);
  sin_.resize(n_pos * half);
  std::vector<double> inv = rope_inv_freq(config_);
  // Angles in double, then rounded once: the table is exact to f32 precision for every position.
  for (int64_t p = 0; p < n_pos; ++p)
    for (int i = 0; i < half; ++i) {
      double a = static_cast<double>(p) * inv[i];
      cos_[p * half + i] = static_cast<float>(std::cos(a));
      sin_[p * half + i] = static_cast<float>(std::sin(a));
    }
}

kv::KvShape Model::kv_shape(int block_size) const {
  return kv::KvShape{config_.n_layers, config_.n_kv_heads, config_.head_dim, block_size};
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

void Model::attention_block(ComputePool& pool, const Batch& b, kv::KvCache& cache, int layer) {
  const auto& c = config_;
  const LayerWeights& lw = weights_.layers[layer];
  const int64_t T = b.size(), H = c.hidden_size;
  using kernels::matmul;
  kernels::rmsnorm(pool, x_.data(), T, H, lw.attn_norm, lw.norm_dtype, static_cast<float>(c.rms_norm_eps),
                   xn_.data());
  const int q = static_cast<int>(Proj::kQ), k = static_cast<int>(Proj::kK), v = static_cast<int>(Proj::kV);
  matmul(pool, xn_.data(), T, H, lw.proj[q], lw.bias[q], q_.data(), c.q_dim());
  matmul(pool, xn_.data(), T, H, lw.proj[k], lw.bias[k], k_.data(), c.kv_dim());
  matmul(pool, xn_.data(), T, H, lw.proj[v], lw.bias[v], v_.data(), c.kv_dim());
  kernels::rope(q_.data(), T, c.n_heads, c.head_dim, b.positions.data(), cos_.data(), sin_.data());
  kernels::rope(k_.data(), T, c.n_kv_heads, c.head_dim, b.positions.data(), cos_.data(), sin_.data());
  kernels::PagedKV kv{cache.k(layer), cache.v(layer), cache.shape().block_size, c.n_kv_heads, c.head_dim};
  kernels::kv_write(kv, k_.data(), v_.data(), b.slots.data(), T);
  kernels::attention(pool, q_.data(), kv, b.seqs, c.n_heads, 1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                     attn_.data());
  const int o = static_cast<int>(Proj::kO);
  // Residual add fused into the output projection: x += attn · Woᵀ (+ bias).
  matmul(pool, attn_.data(), T, c.q_dim(), lw.proj[o], lw.bias[o], x_.data(), H, /*accumulate=*/true);
}

void Model::mlp_block(ComputePool& pool, int64_t T, int layer) {
  const auto& c = config_;
  const LayerWeights& lw = weights_.layers[layer];
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  using kernels::matmul;
  kernels::rmsnorm(pool, x_.data(), T, H, lw.mlp_norm, lw.norm_dtype, static_cast<float>(c.rms_norm_eps),
                   xn_.data());
  const int g = static_cast<int>(Proj::kGate), u = static_cast<int>(Proj::kUp),
            d = static_cast<int>(Proj::kDown);
  matmul(pool, xn_.data(), T, H, lw.proj[g], lw.bias[g], gate_.data(), I);
  matmul(pool, xn_.data(), T, H, lw.proj[u], lw.bias[u], up_.data(), I);
  kernels::silu_mul(pool, gate_.data(), up_.data(), gate_.data(), T * I);
  matmul(pool, gate_.data(), T, I, lw.proj[d], lw.bias[d], x_.data(), H, /*accumulate=*/true);
}

void Model::forward(ComputePool& pool, const Batch& b, kv::KvCache& cache, float* logits) {
  const auto& c = config_;
  const int64_t T = b.size(), H = c.hidden_size;
  const int64_t R = static_cast<int64_t>(b.logit_rows.size());
  LP_CHECK(T > 0, "empty batch");
  LP_CHECK(b.positions.size() == b.tokens.size() && b.slots.size() == b.tokens.size());
  for (int64_t t = 0; t < T; ++t) {
    LP_CHECK(b.tokens[t] >= 0 && b.tokens[t] < c.vocab_size, "token id {} out of range", b.tokens[t]);
    LP_CHECK(b.positions[t] >= 0 && b.positions[t] < c.max_model_len, "position {} out of range",
             b.positions[t]);
  }
  ensure_scratch(T, R);

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
