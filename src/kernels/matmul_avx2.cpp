// AVX2+FMA matmul: the fallback for CPUs without AVX-512. Same structure and batch-invariance discipline
// as matmul_avx512.cpp with 8-lane accumulators: weights are widened to f32 exactly (bf16 by a shift, f16 by
// F16C), x stays f32, K walks in steps of 8 with a zero-filled tail, and each accumulator is summed in the
// canonical order of simd_avx2.h. Tiles: 4 tokens x 2 rows (GEMM), 1 x 8 (GEMV), smaller for remainders.
#include <immintrin.h>

#include <algorithm>

#include "kernels/dispatch.h"
#include "kernels/simd_avx2.h"

namespace lp::kernels::avx2 {
namespace {

using detail::MatmulArgs;

template <DType D>
struct F32Fma {
  static __m256 load_w(const void* base, int64_t i) {
    if constexpr (D == DType::kF32) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
    if constexpr (D == DType::kF16) return load_f16x8(static_cast<const uint16_t*>(base) + i);
    if constexpr (D == DType::kBF16) return load_bf16x8(static_cast<const uint16_t*>(base) + i);
  }
  static __m256 load_w(const void* base, int64_t i, int64_t n) {
    if constexpr (D == DType::kF32) return maskz_load(static_cast<const float*>(base) + i, n);
    if constexpr (D == DType::kF16) return load_f16x8(static_cast<const uint16_t*>(base) + i, n);
    if constexpr (D == DType::kBF16) return load_bf16x8(static_cast<const uint16_t*>(base) + i, n);
  }

  template <int TT, int RN>
  static void tile(const MatmulArgs& a, int64_t t0, int64_t n0, float* res) {
    const int64_t K = a.W.cols, ldw = a.W.row_stride;
    const void* w = static_cast<const char*>(a.W.data) + n0 * ldw * static_cast<int64_t>(dtype_size(D));
    const float* x = a.x + t0 * a.ldx;
    __m256 acc[TT * RN];
    for (int j = 0; j < TT * RN; ++j) acc[j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 wv[RN];
      for (int r = 0; r < RN; ++r) wv[r] = load_w(w, r * ldw + k);
      for (int t = 0; t < TT; ++t) {
        __m256 xv = _mm256_loadu_ps(x + t * a.ldx + k);
        for (int r = 0; r < RN; ++r) acc[t * RN + r] = _mm256_fmadd_ps(xv, wv[r], acc[t * RN + r]);
      }
    }
    if (k < K) {
      __m256 wv[RN];
      for (int r = 0; r < RN; ++r) wv[r] = load_w(w, r * ldw + k, K - k);
      for (int t = 0; t < TT; ++t) {
        __m256 xv = maskz_load(x + t * a.ldx + k, K - k);
        for (int r = 0; r < RN; ++r) acc[t * RN + r] = _mm256_fmadd_ps(xv, wv[r], acc[t * RN + r]);
      }
    }
    reduce_accumulators<TT * RN>(acc, res);
  }
};

template <int TT, int RN>
inline void store_tile(const MatmulArgs& a, int64_t t0, int64_t n0, const float* res) {
  for (int t = 0; t < TT; ++t) {
    float* yr = a.y + (t0 + t) * a.ldy + n0;
    for (int r = 0; r < RN; ++r) {
      float v = res[t * RN + r];
      if (a.bias) v += a.bias[n0 + r];
      yr[r] = a.accumulate ? yr[r] + v : v;
    }
  }
}

template <class P, int TT, int RN>
inline void do_tile(const MatmulArgs& a, int64_t t0, int64_t n0) {
  float res[8];
  P::template tile<TT, RN>(a, t0, n0, res);
  store_tile<TT, RN>(a, t0, n0, res);
}

template <class P, int RN>
inline void token_tiles(const MatmulArgs& a, int64_t t0, int64_t t1, int64_t n0) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) do_tile<P, 4, RN>(a, t, n0);
  switch (t1 - t) {
    case 3:
      do_tile<P, 3, RN>(a, t, n0);
      break;
    case 2:
      do_tile<P, 2, RN>(a, t, n0);
      break;
    case 1:
      do_tile<P, 1, RN>(a, t, n0);
      break;
    default:
      break;
  }
}

using detail::kGemmMinTokens;
constexpr int64_t kRowPanel = 64;
constexpr int64_t kXBlockBytes = 384 << 10;

template <class P>
void matmul_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const int64_t T = a.T;
  if (T < kGemmMinTokens) {
    int64_t n = n0;
    for (; n + 8 <= n1; n += 8)
      for (int64_t t = 0; t < T; ++t) do_tile<P, 1, 8>(a, t, n);
    for (; n < n1; ++n)
      for (int64_t t = 0; t < T; ++t) do_tile<P, 1, 1>(a, t, n);
    return;
  }
  int64_t tb = std::clamp<int64_t>(kXBlockBytes / (std::max<int64_t>(a.W.cols, 1) * 4) / 4 * 4, 16, 1 << 20);
  for (int64_t nb = n0; nb < n1; nb += kRowPanel) {
    int64_t ne = std::min(n1, nb + kRowPanel);
    for (int64_t t0 = 0; t0 < T; t0 += tb) {
      int64_t t1 = std::min(T, t0 + tb);
      int64_t n = nb;
      for (; n + 2 <= ne; n += 2) token_tiles<P, 2>(a, t0, t1, n);
      for (; n < ne; ++n) token_tiles<P, 1>(a, t0, t1, n);
    }
  }
}

}  // namespace

void matmul_rows_fma(const MatmulArgs& a, int64_t n0, int64_t n1) {
  visit_dtype(a.W.dtype, [&](auto d) { matmul_rows<F32Fma<d.value>>(a, n0, n1); });
}

}  // namespace lp::kernels::avx2
