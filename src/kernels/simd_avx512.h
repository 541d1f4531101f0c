// AVX-512 building blocks shared by the *_avx512.cpp files (include only from files compiled with the
// AVX-512 flags). The reductions here fix ONE summation order for a 16-lane accumulator, so that a lone
// accumulator and a 16-accumulator tile give bit-identical sums: lanes (i, i+8), then (i, i+4), (i, i+2),
// (i, i+1). That order is what makes the kernels batch invariant.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lp::kernels::avx512 {

inline __mmask16 tail_mask16(int64_t n) {
  return n >= 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1);
}
inline __mmask32 tail_mask32(int64_t n) {
  return n >= 32 ? 0xffffffffu : static_cast<__mmask32>((1u << n) - 1);
}

// Canonical sum of the 16 lanes of a.
inline float reduce16(__m512 a) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));  // (i, i+8)
  __m128 c = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));               // (i, i+4)
  __m128 d = _mm_add_ps(c, _mm_movehl_ps(c, c));                                               // (i, i+2)
  __m128 e = _mm_add_ss(d, _mm_movehdup_ps(d));                                                // (i, i+1)
  return _mm_cvtss_f32(e);
}

// Lane j of the result = reduce16(a[j]) bit for bit, for 16 accumulators (transpose-add tree).
inline __m512 reduce16x16(const __m512* a) {
  auto pair8 = [](__m512 x, __m512 y) {  // [x(i)+x(i+8) | y(i)+y(i+8)], 8 lanes each
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
  };
  auto pair4 = [](__m512 x, __m512 y) {  // quads: x.q0+x.q1, x.q2+x.q3, y.q0+y.q1, y.q2+y.q3
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
  };
  auto pair2 = [](__m512 x, __m512 y) {  // per quad: x0+x2, x1+x3, y0+y2, y1+y3
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x44), _mm512_shuffle_ps(x, y, 0xEE));
  };
  auto pair1 = [](__m512 x, __m512 y) {  // per quad: x0+x1, x2+x3, y0+y1, y2+y3
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
  };
  __m512 b[8];
  for (int i = 0; i < 4; ++i) {
    b[2 * i] = pair8(a[i], a[4 + i]);
    b[2 * i + 1] = pair8(a[8 + i], a[12 + i]);
  }
  __m512 c[4];
  for (int i = 0; i < 4; ++i) c[i] = pair4(b[2 * i], b[2 * i + 1]);
  return pair1(pair2(c[0], c[1]), pair2(c[2], c[3]));
}

// res[j] = reduce16(acc[j]) for j < N.
template <int N>
inline void reduce_accumulators(const __m512* acc, float* res) {
  if constexpr (N == 1) {
    res[0] = reduce16(acc[0]);
  } else {
    __m512 a[16];
    for (int j = 0; j < 16; ++j) a[j] = j < N ? acc[j] : _mm512_setzero_ps();
    _mm512_mask_storeu_ps(res, tail_mask16(N), reduce16x16(a));
  }
}

// exp(x) within ~2 ulp for normal results (Cody-Waite range reduction, Cephes expf polynomial, scalef).
// Large positive x gives +inf, very negative x (or -inf) gives 0.
inline __m512 exp(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.8f)), _mm512_set1_ps(-104.f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(y, n);
}

// Widening loads of 16 weights to f32 (exact for every dtype).
inline __m512 load_bf16x16(const uint16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 load_bf16x16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
inline __m512 load_f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load_f16x16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

// Weight streams (the GEMVs) prefetch kStreamAhead bytes ahead, each line once, into L2 (T1): the NTA hint
// that once streamed best left the stream at well under half the read probe on a later host, T1 did not
// (docs/architecture.md, "Numbers"). Past `end` (the caller's rows) the stream goes on at `next` if known
// (MatmulArgs::pf_next).
inline constexpr int64_t kStreamAhead = 8192;
inline void stream_prefetch(const void* p, const char* end, const char* next) {
  const char* q = static_cast<const char*>(p) + kStreamAhead;
  if (q < end) {
    _mm_prefetch(q, _MM_HINT_T1);
  } else if (next != nullptr) {
    _mm_prefetch(next + (q - end), _MM_HINT_T1);
  }
}
// The first kStreamAhead bytes of a stream from `first` (up to `end`), so they do not arrive one latency at
// a time.
inline void stream_prime(const char* first, const char* end) {
  for (const char* q = first; q < end && q < first + kStreamAhead; q += 64) _mm_prefetch(q, _MM_HINT_T1);
}

}  // namespace lp::kernels::avx512
