#include "kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "kernels/quant.h"

namespace lp::kernels::ref {

namespace {

// Stored integer of element (r, c) of a quantized W, and the zero point it is offset by.
std::pair<int, int> quant_int(const MatView& W, int64_t r, int64_t c) {
  if (W.format == WeightFormat::kQ8) return {static_cast<const uint8_t*>(W.data)[r * W.row_stride + c], 128};
  const auto [b, shift] = q4_position(c);
  const int nib = (static_cast<const uint8_t*>(W.data)[r * (W.row_stride / 2) + b] >> shift) & 0xF;
  return {nib, W.group_zero[r * (W.row_stride / W.group) + c / W.group]};
}

// The scale element (r, c) is multiplied by.
float quant_scale(const MatView& W, int64_t r, int64_t c) {
  if (W.format == WeightFormat::kQ8) return W.row_scale[r];
  return f16_to_f32(W.group_scale[r * (W.row_stride / W.group) + c / W.group]);
}

}  // namespace

float mat_at(const MatView& W, int64_t r, int64_t c) {
  if (W.format != WeightFormat::kDense) {
    auto [q, z] = quant_int(W, r, c);
    return static_cast<float>(q - z) * quant_scale(W, r, c);
  }
  int64_t i = r * W.row_stride + c;
  switch (W.dtype) {
    case DType::kF32:
      return static_cast<const float*>(W.data)[i];
    case DType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(W.data)[i]);
    case DType::kBF16:
      return bf16_to_f32(static_cast<const uint16_t*>(W.data)[i]);
  }
  return 0.f;
}

static float vec_at(const void* w, DType t, int64_t i) {
  MatView v{w, t, 1, i + 1, i + 1};
  return mat_at(v, 0, i);
}

void quantize_acts(const float* x, int64_t t0, int64_t t1, int64_t ldx, int64_t K, const QuantActs& q) {
  for (int64_t t = t0; t < t1; ++t) {
    int8_t* xq = q.xq + t * q.ld;
    for (int64_t b = 0; b < q.n_blocks; ++b) {
      const int64_t k0 = b * q.block, k1 = std::min<int64_t>(k0 + q.block, q.ld);
      float amax = 0.f;
      for (int64_t k = k0; k < std::min(k1, K); ++k) amax = std::max(amax, std::fabs(x[t * ldx + k]));
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      q.scale[t * q.n_blocks + b] = amax / 127.f;
      int32_t* lanes = q.lane_sum + (t * q.n_blocks + b) * 16;
      for (int l = 0; l < 16; ++l) lanes[l] = 0;
      for (int64_t k = k0; k < k1; ++k) {
        const float v = k < K ? std::nearbyint(x[t * ldx + k] * inv) : 0.f;
        xq[k] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
        lanes[(k % 64) / 4] += xq[k];
      }
    }
  }
}

void matmul_quant(const QuantActs& xa, int64_t T, const MatView& W, int64_t n0, int64_t n1, const float* bias,
                  float* y, int64_t ldy, bool accumulate) {
  LP_CHECK(W.format != WeightFormat::kDense && xa.block == act_block(W) && xa.ld == W.row_stride,
           "matmul_quant: activations quantized for another matrix");
  for (int64_t t = 0; t < T; ++t) {
    const int8_t* xq = xa.xq + t * xa.ld;
    for (int64_t n = n0; n < n1; ++n) {
      double acc = 0;
      for (int64_t b = 0; b < xa.n_blocks; ++b) {
        const int64_t k0 = b * xa.block, k1 = std::min<int64_t>(k0 + xa.block, xa.ld);
        int64_t dot = 0;
        for (int64_t k = k0; k < k1; ++k) {
          auto [qv, z] = quant_int(W, n, k);
          dot += static_cast<int64_t>(qv - z) * xq[k];
        }
        const double s = W.format == WeightFormat::kQ4 ? quant_scale(W, n, k0) : 1.0;
        acc += static_cast<double>(xa.scale[t * xa.n_blocks + b]) * s * static_cast<double>(dot);
      }
      if (W.format == WeightFormat::kQ8) acc *= W.row_scale[n];
      float v = static_cast<float>(acc) + (bias ? bias[n] : 0.f);
      float& out = y[t * ldy + n];
      out = accumulate ? out + v : v;
    }
  }
}

void matmul(const float* x, int64_t T, int64_t ldx, const MatView& W, const float* bias, float* y,
            int64_t ldy, bool accumulate) {
  if (W.format != WeightFormat::kDense) {
    QuantActsBuffer buf;
    QuantActs xa = buf.prepare(T, W.cols, act_block(W));
    quantize_acts(x, 0, T, ldx, W.cols, xa);
    matmul_quant(xa, T, W, 0, W.rows, bias, y, ldy, accumulate);
    return;
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < W.rows; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < W.cols; ++k) acc += static_cast<double>(x[t * ldx + k]) * mat_at(W, n, k);
      float v = static_cast<float>(acc) + (bias ? bias[n] : 0.f);
      float& out = y[t * ldy + n];
      out = accumulate ? out + v : v;
    }
  }
}

void rmsnorm(const float* x, int64_t T, int64_t D, const void* w, DType w_dtype, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(x[t * D + i]) * x[t * D + i];
    double r = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
    for (int64_t i = 0; i < D; ++i)
      y[t * D + i] = static_cast<float>(x[t * D + i] * r * vec_at(w, w_dtype, i));
  }
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab) {
  int half = head_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos_tab + static_cast<int64_t>(pos[t]) * half;
    const float* s = sin_tab + static_cast<int64_t>(pos[t]) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        double a = v[i], b = v[i + half];
        v[i] = static_cast<float>(a * c[i] - b * s[i]);
        v[i + half] = static_cast<float>(b * c[i] + a * s[i]);
      }
    }
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = gate[i];
    out[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  double m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max<double>(m, x[i]);
  double sum = 0;
  std::vector<double> e(n);
  for (int64_t i = 0; i < n; ++i) sum += e[i] = std::exp(x[i] - m);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(e[i] / sum);
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

void embed(const MatView& table, const int32_t* ids, int64_t T, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    LP_CHECK(ids[t] >= 0 && ids[t] < table.rows, "token id {} out of range [0, {})", ids[t], table.rows);
    for (int64_t i = 0; i < table.cols; ++i) out[t * table.cols + i] = mat_at(table, ids[t], i);
  }
}

static int64_t kv_offset(const PagedKV& c, int64_t block, int g, int64_t s) {
  return ((block * c.n_kv_heads + g) * c.block_size + s) * c.head_dim;
}

// Element i of a cache array, as float.
static double kv_at(const PagedKV& c, const void* base, int64_t i) {
  float f;
  to_f32(c.dtype, static_cast<const char*>(base) + i * static_cast<int64_t>(dtype_size(c.dtype)), &f, 1);
  return f;
}

void kv_write(const PagedKV& cache, const float* k_new, const float* v_new, const int32_t* slot, int64_t T) {
  const int64_t esize = static_cast<int64_t>(dtype_size(cache.dtype));
  for (int64_t t = 0; t < T; ++t) {
    int64_t b = slot[t] / cache.block_size, s = slot[t] % cache.block_size;
    for (int g = 0; g < cache.n_kv_heads; ++g) {
      for (int d = 0; d < cache.head_dim; ++d) {
        int64_t src = (t * cache.n_kv_heads + g) * cache.head_dim + d;
        int64_t dst = (kv_offset(cache, b, g, s) + d) * esize;
        from_f32(cache.dtype, k_new + src, static_cast<char*>(cache.k) + dst, 1);
        from_f32(cache.dtype, v_new + src, static_cast<char*>(cache.v) + dst, 1);
      }
    }
  }
}

void attention_query(const PagedKV& cache, const int32_t* block_table, int32_t n_keys, int g, float scale,
                     const float* q, float* out) {
  int hd = cache.head_dim, bs = cache.block_size;
  std::vector<double> s(n_keys);
  double m = -INFINITY;
  for (int32_t j = 0; j < n_keys; ++j) {
    const int64_t k = kv_offset(cache, block_table[j / bs], g, j % bs);
    double dot = 0;
    for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * kv_at(cache, cache.k, k + d);
    s[j] = dot * scale;
    m = std::max(m, s[j]);
  }
  double sum = 0;
  for (int32_t j = 0; j < n_keys; ++j) sum += s[j] = std::exp(s[j] - m);
  std::vector<double> acc(hd, 0.0);
  for (int32_t j = 0; j < n_keys; ++j) {
    const int64_t v = kv_offset(cache, block_table[j / bs], g, j % bs);
    for (int d = 0; d < hd; ++d) acc[d] += s[j] / sum * kv_at(cache, cache.v, v + d);
  }
  for (int d = 0; d < hd; ++d) out[d] = static_cast<float>(acc[d]);
}

void attention(const float* q, const PagedKV& cache, std::span<const AttnSeq> seqs, int n_heads, float scale,
               float* out) {
  int hd = cache.head_dim, group = n_heads / cache.n_kv_heads;
  for (const AttnSeq& sq : seqs) {
    for (int32_t i = 0; i < sq.q_len; ++i) {
      int64_t r = sq.q_begin + i;
      int32_t n_keys = sq.ctx_len - sq.q_len + i + 1;
      for (int h = 0; h < n_heads; ++h) {
        attention_query(cache, sq.block_table, n_keys, h / group, scale, q + (r * n_heads + h) * hd,
                        out + (r * n_heads + h) * hd);
      }
    }
  }
}

}  // namespace lp::kernels::ref
