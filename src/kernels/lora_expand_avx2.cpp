#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/lora_expand.h"
#include "kernels/simd_avx2.h"

namespace lp::kernels::detail {

namespace {
template <DType D>
inline __m256 load8(const void* base, int64_t i, int64_t n) {
  if constexpr (D == DType::kF32) {
    if (n >= 8) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
    float tmp[8] = {};
    std::memcpy(tmp, static_cast<const float*>(base) + i, static_cast<size_t>(n) * 4);
    return _mm256_loadu_ps(tmp);
  }
  if constexpr (D == DType::kBF16) {
    const auto* p = static_cast<const uint16_t*>(base) + i;
    return n >= 8 ? avx2::load_bf16x8(p) : avx2::load_bf16x8(p, n);
  }
  if constexpr (D == DType::kF16) {
    const auto* p = static_cast<const uint16_t*>(base) + i;
    return n >= 8 ? avx2::load_f16x8(p) : avx2::load_f16x8(p, n);
  }
}

// Four independent 8-wide accumulators per step (4 x 8 outputs), token by token (the AVX-512 version also
// shares each Bᵀ load between tokens); the same FMAs in the same order.
template <DType D>
void expand(const ExpandArgs& a, int64_t n0, int64_t n1) {
  for (int64_t t = 0; t < a.T; ++t) {
    const float* v = a.v + t * a.ldv;
    float* y = a.y_row(t);
    const float sc = a.scale_of(t);
    const __m256 s = _mm256_set1_ps(sc);
    int64_t n = n0;
    for (; n + 32 <= n1; n += 32) {
      __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      for (int j = 0; j < a.rank; ++j) {
        const __m256 vj = _mm256_set1_ps(v[j]);
        const int64_t base = j * a.out + n;
        acc0 = _mm256_fmadd_ps(vj, load8<D>(a.bt, base, 8), acc0);
        acc1 = _mm256_fmadd_ps(vj, load8<D>(a.bt, base + 8, 8), acc1);
        acc2 = _mm256_fmadd_ps(vj, load8<D>(a.bt, base + 16, 8), acc2);
        acc3 = _mm256_fmadd_ps(vj, load8<D>(a.bt, base + 24, 8), acc3);
      }
      acc0 = _mm256_fmadd_ps(s, acc0, _mm256_loadu_ps(y + n));
      acc1 = _mm256_fmadd_ps(s, acc1, _mm256_loadu_ps(y + n + 8));
      acc2 = _mm256_fmadd_ps(s, acc2, _mm256_loadu_ps(y + n + 16));
      acc3 = _mm256_fmadd_ps(s, acc3, _mm256_loadu_ps(y + n + 24));
      _mm256_storeu_ps(y + n, acc0);
      _mm256_storeu_ps(y + n + 8, acc1);
      _mm256_storeu_ps(y + n + 16, acc2);
      _mm256_storeu_ps(y + n + 24, acc3);
    }
    for (; n < n1; n += 8) {
      const int64_t w = std::min<int64_t>(8, n1 - n);
      __m256 acc = _mm256_setzero_ps();
      for (int j = 0; j < a.rank; ++j) acc = _mm256_fmadd_ps(_mm256_set1_ps(v[j]), load8<D>(a.bt, j * a.out + n, w), acc);
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, acc);
      for (int64_t i = 0; i < w; ++i) y[n + i] = std::fma(sc, tmp[i], y[n + i]);
    }
  }
}
}  // namespace

void lora_expand_avx2(const ExpandArgs& a, int64_t n0, int64_t n1) {
  visit_dtype(a.dtype, [&](auto d) { expand<d.value>(a, n0, n1); });
}

}  // namespace lp::kernels::detail
