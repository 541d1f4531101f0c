// AVX2 versions of the small kernels and the AVX2 kernel table; mirrors ops_avx512.cpp with 8 lanes
// (element-wise tails through the same vector code under a mask, reductions in the canonical order).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/dispatch.h"
#include "kernels/simd_avx2.h"

namespace lp::kernels::avx2 {
namespace {

inline __m256 load_vec(const void* w, DType t, int64_t i, int64_t n) {
  if (n >= 8) {
    switch (t) {
      case DType::kF16:
        return load_f16x8(static_cast<const uint16_t*>(w) + i);
      case DType::kBF16:
        return load_bf16x8(static_cast<const uint16_t*>(w) + i);
      default:
        return _mm256_loadu_ps(static_cast<const float*>(w) + i);
    }
  }
  switch (t) {
    case DType::kF16:
      return load_f16x8(static_cast<const uint16_t*>(w) + i, n);
    case DType::kBF16:
      return load_bf16x8(static_cast<const uint16_t*>(w) + i, n);
    default:
      return maskz_load(static_cast<const float*>(w) + i, n);
  }
}

void rmsnorm_rows(const float* x, int64_t t0, int64_t t1, int64_t D, const void* w, DType w_dtype, float eps,
                  float* y) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * D;
    float* yr = y + t * D;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < D; i += 8) {
      __m256 v = maskz_load(xr + i, D - i);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    __m256 r = _mm256_set1_ps(1.f / std::sqrt(reduce8(acc) / static_cast<float>(D) + eps));
    for (int64_t i = 0; i < D; i += 8) {
      __m256 v = _mm256_mul_ps(maskz_load(xr + i, D - i), r);
      mask_store(yr + i, D - i, _mm256_mul_ps(v, load_vec(w, w_dtype, i, D - i)));
    }
  }
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab) {
  const int half = head_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos_tab + static_cast<int64_t>(pos[t]) * half;
    const float* s = sin_tab + static_cast<int64_t>(pos[t]) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int i = 0; i < half; i += 8) {
        int64_t m = half - i;
        __m256 a = maskz_load(v + i, m), b = maskz_load(v + half + i, m);
        __m256 cv = maskz_load(c + i, m), sv = maskz_load(s + i, m);
        mask_store(v + i, m, _mm256_fmsub_ps(a, cv, _mm256_mul_ps(b, sv)));
        mask_store(v + half + i, m, _mm256_fmadd_ps(b, cv, _mm256_mul_ps(a, sv)));
      }
    }
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 8) {
    __m256 g = maskz_load(gate + i, n - i), u = maskz_load(up + i, n - i);
    __m256 e = exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    mask_store(out + i, n - i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
  }
}

float exp_shifted(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);  // exact in any order
  __m256 mv = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    __m256i m = tail_mask8(n - i);
    __m256 e = _mm256_and_ps(exp(_mm256_sub_ps(maskz_load(x + i, n - i), mv)), _mm256_castsi256_ps(m));
    sum = _mm256_add_ps(sum, e);
    _mm256_maskstore_ps(x + i, m, e);
  }
  return reduce8(sum);
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m256 inv = _mm256_set1_ps(1.f / exp_shifted(x, n));
  for (int64_t i = 0; i < n; i += 8) mask_store(x + i, n - i, _mm256_mul_ps(maskz_load(x + i, n - i), inv));
}

// 8 lanes, each keeping its first strictly largest value and index, then detail::argmax_finish.
int64_t argmax(const float* x, int64_t n) {
  __m256 best = _mm256_set1_ps(-INFINITY);
  __m256i bidx = _mm256_set1_epi32(-1);
  __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 gt = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
    best = _mm256_blendv_ps(best, v, gt);
    bidx = _mm256_blendv_epi8(bidx, idx, _mm256_castps_si256(gt));
    idx = _mm256_add_epi32(idx, step);
  }
  alignas(32) float lane_val[8];
  alignas(32) int32_t lane_idx[8];
  _mm256_store_ps(lane_val, best);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane_idx), bidx);
  return detail::argmax_finish(x, n, i, lane_val, lane_idx, 8);
}

// 8 cache elements (fewer when n < 8; the rest 0) from element i of a K or V array of dtype KD, as floats.
template <DType KD>
inline __m256 load_kv8(const void* base, int64_t i, int64_t n) {
  if constexpr (KD == DType::kF32) {
    return maskz_load(static_cast<const float*>(base) + i, n);
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(base) + i;
    if (n >= 8) return KD == DType::kBF16 ? load_bf16x8(p) : load_f16x8(p);
    return KD == DType::kBF16 ? load_bf16x8(p, n) : load_f16x8(p, n);
  }
}

template <DType KD>
inline __m256 dot_acc(const float* q, const void* k, int64_t k0, int hd) {
  __m256 acc = _mm256_setzero_ps();
  for (int d = 0; d < hd; d += 8)
    acc = _mm256_fmadd_ps(maskz_load(q + d, hd - d), load_kv8<KD>(k, k0 + d, hd - d), acc);
  return acc;
}

template <DType KD>
void attention_query_kd(const PagedKV& c, const detail::AttnQuery& aq, float* s) {
  const int hd = c.head_dim;
  const int64_t n = aq.n_keys;
  detail::KeyWalker keys(c, aq);
  const __m256 scale = _mm256_set1_ps(aq.scale);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 acc[8];
    for (int i = 0; i < 8; ++i, keys.next()) acc[i] = dot_acc<KD>(aq.q, c.k, keys.offset(), hd);
    _mm256_storeu_ps(s + j, _mm256_mul_ps(reduce8x8(acc), scale));
  }
  for (; j < n; ++j, keys.next()) s[j] = reduce8(dot_acc<KD>(aq.q, c.k, keys.offset(), hd)) * aq.scale;
  const float inv = 1.f / exp_shifted(s, n);
  const int nc = (hd + 7) / 8;
  __m256 acc[detail::kMaxHeadDim / 8];
  for (int i = 0; i < nc; ++i) acc[i] = _mm256_setzero_ps();
  keys = detail::KeyWalker(c, aq);
  for (j = 0; j < n; ++j, keys.next()) {
    const int64_t v = keys.offset();
    __m256 e = _mm256_set1_ps(s[j]);
    for (int i = 0; i < nc; ++i)
      acc[i] = _mm256_fmadd_ps(e, load_kv8<KD>(c.v, v + i * 8, hd - i * 8), acc[i]);
  }
  for (int i = 0; i < nc; ++i)
    mask_store(aq.out + i * 8, hd - i * 8, _mm256_mul_ps(acc[i], _mm256_set1_ps(inv)));
}

void attention_query(const PagedKV& c, const detail::AttnQuery& aq, float* s) {
  visit_dtype(c.dtype, [&](auto d) { attention_query_kd<d.value>(c, aq, s); });
}

// 8 floats at a time rounded to bf16 or f16 exactly as core/dtype.h does (see ops_avx512.cpp); the tail
// through the scalar conversions.
void round_to(DType t, const float* src, void* dst, int64_t n) {
  if (t == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst);
  const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    const __m256i u = _mm256_castps_si256(x);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    __m256i r;
    if (t == DType::kBF16) {
      r = _mm256_add_epi32(_mm256_add_epi32(u, half), _mm256_and_si256(_mm256_srli_epi32(u, 16), one));
      r = _mm256_srli_epi32(r, 16);
      const __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
      r = _mm256_blendv_epi8(r, qnan, nan);
    } else {
      r = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m256i qnan = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)), _mm256_set1_epi32(0x7e00));
      r = _mm256_blendv_epi8(r, qnan, nan);
    }
    // 8 x 32-bit -> 8 x 16-bit (values fit in 16 bits: packus does not saturate them)
    const __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm_packus_epi32(lo, hi));
  }
  from_f32(t, src + i, d + i, static_cast<size_t>(n - i));
}

float read_sum(const float* p, size_t n, int pattern) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {  // 256 bytes: 4 lines
    const char* c = reinterpret_cast<const char*>(p + i);
    if (pattern == 0 && (i & 127) == 0) {
      _mm_prefetch(c + 4096, _MM_HINT_T0);
      _mm_prefetch(c + 4096 + 64, _MM_HINT_T0);
    } else if (pattern == 1) {
      for (int l = 0; l < 4; ++l) {
        if (pattern == 1) {
          _mm_prefetch(c + 8192 + 64 * l, _MM_HINT_T1);
        } else {
          _mm_prefetch(c + 8192 + 64 * l, _MM_HINT_NTA);
        }
      }
    }
    for (int u = 0; u < 8; ++u) a[u] = _mm256_add_ps(a[u], _mm256_loadu_ps(p + i + 8 * u));
  }
  for (int u = 1; u < 8; ++u) a[0] = _mm256_add_ps(a[0], a[u]);
  float s = reduce8(a[0]);
  for (; i < n; ++i) s += p[i];
  return s;
}

bool wants_nothing(DType) {
  return false;
}

}  // namespace
}  // namespace lp::kernels::avx2

namespace lp::kernels::detail {

const IsaKernels& avx2_kernels() {
  static const IsaKernels k{
      .isa = Isa::kAvx2,
      .name = "avx2",
      .row_grain = 8,
      .wants_bf16_x = avx2::wants_nothing,
      .convert_x_bf16 = nullptr,
      .matmul_rows = avx2::matmul_rows_fma,
      .matmul_rows_q = scalar_kernels().matmul_rows_q,  // no integer dot products below AVX-512 VNNI
      .quantize_acts = scalar_kernels().quantize_acts,
      .rmsnorm_rows = avx2::rmsnorm_rows,
      .rope = avx2::rope,
      .silu_mul = avx2::silu_mul,
      .softmax = avx2::softmax,
      .argmax = avx2::argmax,
      .attention_query = avx2::attention_query,
      .round_to = avx2::round_to,
      .read_sum = avx2::read_sum,
  };
  return k;
}

}  // namespace lp::kernels::detail
