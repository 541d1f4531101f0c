// AVX2 building blocks shared by the *_avx2.cpp files (include only from files compiled with the AVX2 flags).
// Same discipline as simd_avx512.h with 8 lanes: one canonical summation order for an accumulator, lanes
// (i, i+4), then (i, i+2), then (i, i+1), whether it is reduced alone or in an 8-accumulator tree.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace lp::kernels::avx2 {

// Lane i is all-ones when i < n (n clamped to [0, 8]).
inline __m256i tail_mask8(int64_t n) {
  alignas(32) static const int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  n = n < 0 ? 0 : (n > 8 ? 8 : n);
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - n));
}
inline __m256 maskz_load(const float* p, int64_t n) {
  return _mm256_maskload_ps(p, tail_mask8(n));
}
inline void mask_store(float* p, int64_t n, __m256 v) {
  _mm256_maskstore_ps(p, tail_mask8(n), v);
}

// Canonical sum of the 8 lanes of a.
inline float reduce8(__m256 a) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // (i, i+4)
  __m128 d = _mm_add_ps(h, _mm_movehl_ps(h, h));                                  // (i, i+2)
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));                        // (i, i+1)
}

// Lane j of the result = reduce8(a[j]) bit for bit, for 8 accumulators.
inline __m256 reduce8x8(const __m256* a) {
  auto pair4 = [](__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  };
  auto pair2 = [](__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_shuffle_ps(x, y, 0x44), _mm256_shuffle_ps(x, y, 0xEE));
  };
  auto pair1 = [](__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_shuffle_ps(x, y, 0x88), _mm256_shuffle_ps(x, y, 0xDD));
  };
  __m256 b[4];
  for (int i = 0; i < 4; ++i) b[i] = pair4(a[i], a[4 + i]);
  return pair1(pair2(b[0], b[1]), pair2(b[2], b[3]));
}

template <int N>
inline void reduce_accumulators(const __m256* acc, float* res) {
  if constexpr (N == 1) {
    res[0] = reduce8(acc[0]);
  } else {
    __m256 a[8];
    for (int j = 0; j < 8; ++j) a[j] = j < N ? acc[j] : _mm256_setzero_ps();
    mask_store(res, N, reduce8x8(a));
  }
}

// exp(x) within ~2 ulp for results in [FLT_MIN, 1e38]; 0 below, +inf above ~88.
inline __m256 exp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.8f)), lo);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

// Widening loads of 8 weights to f32 (exact). The masked forms copy the tail through a small buffer.
inline __m256 load_bf16x8(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load_bf16x8(const uint16_t* p, int64_t n) {
  uint16_t tmp[8] = {};
  std::memcpy(tmp, p, static_cast<size_t>(n < 8 ? n : 8) * 2);
  return load_bf16x8(tmp);
}
inline __m256 load_f16x8(const uint16_t* p, int64_t n) {
  uint16_t tmp[8] = {};
  std::memcpy(tmp, p, static_cast<size_t>(n < 8 ? n : 8) * 2);
  return load_f16x8(tmp);
}

}  // namespace lp::kernels::avx2
