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

// Four independent 16-wide accumulators per step (4 x 16 outputs): the FMA chains over j overlap instead of
// waiting on each other's latency. Each output still sums its j terms in order, so results are batch invariant.
template <DType D>
void expand(const ExpandArgs& a, int64_t n0, int64_t n1) {
  for (int64_t t = 0; t < a.T; ++t) {
    const float* v = a.v + t * a.ldv;
    float* y = a.y + t * a.ldy;
    int64_t n = n0;
    for (; n + 64 <= n1; n += 64) {
      __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      for (int j = 0; j < a.rank; ++j) {
        const __m512 vj = _mm512_set1_ps(v[j]);
        const int64_t base = j * a.out + n;
        acc0 = _mm512_fmadd_ps(vj, load16<D>(a.bt, base, 0xffff), acc0);
        acc1 = _mm512_fmadd_ps(vj, load16<D>(a.bt, base + 16, 0xffff), acc1);
        acc2 = _mm512_fmadd_ps(vj, load16<D>(a.bt, base + 32, 0xffff), acc2);
        acc3 = _mm512_fmadd_ps(vj, load16<D>(a.bt, base + 48, 0xffff), acc3);
      }
      if (a.accumulate) {
        acc0 = _mm512_add_ps(_mm512_loadu_ps(y + n), acc0);
        acc1 = _mm512_add_ps(_mm512_loadu_ps(y + n + 16), acc1);
        acc2 = _mm512_add_ps(_mm512_loadu_ps(y + n + 32), acc2);
        acc3 = _mm512_add_ps(_mm512_loadu_ps(y + n + 48), acc3);
      }
      _mm512_storeu_ps(y + n, acc0);
      _mm512_storeu_ps(y + n + 16, acc1);
      _mm512_storeu_ps(y + n + 32, acc2);
      _mm512_storeu_ps(y + n + 48, acc3);
    }
    for (; n < n1; n += 16) {
      const __mmask16 m = avx512::tail_mask16(n1 - n);
      __m512 acc = _mm512_setzero_ps();
      for (int j = 0; j < a.rank; ++j) acc = _mm512_fmadd_ps(_mm512_set1_ps(v[j]), load16<D>(a.bt, j * a.out + n, m), acc);
      if (a.accumulate) acc = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + n), acc);
      _mm512_mask_storeu_ps(y + n, m, acc);
    }
  }
}
}  // namespace

void lora_expand_avx512(const ExpandArgs& a, int64_t n0, int64_t n1) {
  switch (a.dtype) {
    case DType::kF32: return expand<DType::kF32>(a, n0, n1);
    case DType::kBF16: return expand<DType::kBF16>(a, n0, n1);
    case DType::kF16: return expand<DType::kF16>(a, n0, n1);
  }
}

}  // namespace lp::kernels::detail
