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

template <DType D>
void expand(const ExpandArgs& a, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; n += 16) {
    const __mmask16 m = avx512::tail_mask16(n1 - n);
    for (int64_t t = 0; t < a.T; ++t) {
      const float* v = a.v + t * a.ldv;
      __m512 acc = _mm512_setzero_ps();
      for (int j = 0; j < a.rank; ++j) acc = _mm512_fmadd_ps(_mm512_set1_ps(v[j]), load16<D>(a.bt, j * a.out + n, m), acc);
      float* y = a.y + t * a.ldy + n;
      if (a.accumulate) acc = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), acc);
      _mm512_mask_storeu_ps(y, m, acc);
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
