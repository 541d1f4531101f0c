// AVX-512 LoRA expand (see lora_expand.h).
// GCC 12 flags its own _mm512_undefined_*() inside the intrinsics headers (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/lora_expand.h"
#include "kernels/simd_avx512.h"

namespace lp::kernels::detail {

namespace {
template <DType D>
inline __m512 load16(const void* base, int64_t i, __mmask16 m) {
  if constexpr (D == DType::kF32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
  if constexpr (D == DType::kBF16) return avx512::load_bf16x16(static_cast<const uint16_t*>(base) + i, m);
  if constexpr (D == DType::kF16) return avx512::load_f16x16(static_cast<const uint16_t*>(base) + i, m);
}

// A block of TT tokens x 64 outputs: each 64-wide row chunk of Bᵀ is loaded (and widened) once for the TT
// tokens, and the 4 x TT accumulators are independent FMA chains. Each output still sums its j terms in
// order from zero, so the result does not depend on how tokens are blocked (batch invariant).
template <DType D, int TT>
inline void block64(const ExpandArgs& a, int64_t t0, int64_t n) {
  // The accumulators must stay in registers: without complete unrolling GCC -O2 keeps acc[][] on the stack
  // and stores all of it on every j (measured: the expand ran ~1.5x slower).
  __m512 acc[TT][4];
#pragma GCC unroll 16
  for (int t = 0; t < TT; ++t)
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) acc[t][c] = _mm512_setzero_ps();
  const float* v = a.v + t0 * a.ldv;
  for (int j = 0; j < a.rank; ++j) {
    const int64_t base = j * a.out + n;
    __m512 b[4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) b[c] = load16<D>(a.bt, base + 16 * c, 0xffff);
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) {
      const __m512 vj = _mm512_set1_ps(v[t * a.ldv + j]);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) acc[t][c] = _mm512_fmadd_ps(vj, b[c], acc[t][c]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < TT; ++t) {
    float* y = a.y_row(t0 + t) + n;
    const __m512 s = _mm512_set1_ps(a.scale_of(t0 + t));
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(y + 16 * c, _mm512_fmadd_ps(s, acc[t][c], _mm512_loadu_ps(y + 16 * c)));
  }
}

// TT tokens x up to 16 outputs (masked), for the column tail.
template <DType D, int TT>
inline void block16(const ExpandArgs& a, int64_t t0, int64_t n, int64_t n1) {
  const __mmask16 m = avx512::tail_mask16(n1 - n);
  __m512 acc[TT];
#pragma GCC unroll 4
  for (int t = 0; t < TT; ++t) acc[t] = _mm512_setzero_ps();
  const float* v = a.v + t0 * a.ldv;
  for (int j = 0; j < a.rank; ++j) {
    const __m512 b = load16<D>(a.bt, j * a.out + n, m);
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(v[t * a.ldv + j]), b, acc[t]);
  }
#pragma GCC unroll 4
  for (int t = 0; t < TT; ++t) {
    float* y = a.y_row(t0 + t) + n;
    const __m512 s = _mm512_set1_ps(a.scale_of(t0 + t));
    _mm512_mask_storeu_ps(y, m, _mm512_fmadd_ps(s, acc[t], _mm512_maskz_loadu_ps(m, y)));
  }
}

template <DType D, int TT>
void expand_tokens(const ExpandArgs& a, int64_t t0, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 64 <= n1; n += 64) block64<D, TT>(a, t0, n);
  for (; n < n1; n += 16) block16<D, TT>(a, t0, n, n1);
}

template <DType D>
void expand(const ExpandArgs& a, int64_t n0, int64_t n1) {
  int64_t t = 0;
  for (; t + 4 <= a.T; t += 4) expand_tokens<D, 4>(a, t, n0, n1);
  switch (a.T - t) {
    case 3: return expand_tokens<D, 3>(a, t, n0, n1);
    case 2: return expand_tokens<D, 2>(a, t, n0, n1);
    case 1: return expand_tokens<D, 1>(a, t, n0, n1);
    default: return;
  }
}
}  // namespace

void lora_expand_avx512(const ExpandArgs& a, int64_t n0, int64_t n1) {
  visit_dtype(a.dtype, [&](auto d) { expand<d.value>(a, n0, n1); });
}

}  // namespace lp::kernels::detail
