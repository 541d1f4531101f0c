// AVX-512 matmul: y[t][n] (+)= x[t] . W[n] (+ bias[n]) over a range of rows of W.
//
// Every output element is one 16-lane f32 accumulator that walks K in fixed chunks (32 bf16 pairs with
// vdpbf16ps, or 16 f32 with FMA), the K tail through masked zero loads, then one canonical horizontal sum
// (simd_avx512.h). Tiles of different shapes (4 tokens x 4 rows for GEMM, one row at a time for GEMV,
// smaller ones for remainders) only change which accumulators live side by side, never the arithmetic of
// one, so the result is bit-identical whatever T and whichever tile computed it.
//
// Cost: GEMV streams W once, in address order (bandwidth-bound); GEMM keeps a 4-row W tile in L1 while
// the tokens of a block (x in L2) stream past it: 8 loads per 16 vdpbf16ps, compute-bound.
// GCC 12 flags its own _mm512_undefined_*() inside the intrinsics headers (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "kernels/dispatch.h"
#include "kernels/simd_avx512.h"

namespace lp::kernels::avx512 {
namespace {

using detail::MatmulArgs;

// BF16 weights with x pre-rounded to bf16 (args.xb, zero-padded to a multiple of 32): vdpbf16ps.
struct Bf16Dot {
  template <int TT, int RN>
  static void tile(const MatmulArgs& a, int64_t t0, int64_t n0, float* res, bool prefetch) {
    const int64_t K = a.W.cols, ldw = a.W.row_stride;
    const uint16_t* w = static_cast<const uint16_t*>(a.W.data) + n0 * ldw;
    const uint16_t* x = a.xb + t0 * a.ldxb;
    __m512 acc[TT * RN];
    for (int j = 0; j < TT * RN; ++j) acc[j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      __m512bh wv[RN];
      if (prefetch) {  // the same chunk of the next RN rows (GEMM: the W tile after this one)
        for (int r = 0; r < RN; ++r)
          _mm_prefetch(reinterpret_cast<const char*>(w + (r + RN) * ldw + k), _MM_HINT_T0);
      }
      for (int r = 0; r < RN; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w + r * ldw + k);
      for (int t = 0; t < TT; ++t) {
        __m512bh xv = (__m512bh)_mm512_loadu_si512(x + t * a.ldxb + k);
        for (int r = 0; r < RN; ++r) acc[t * RN + r] = _mm512_dpbf16_ps(acc[t * RN + r], xv, wv[r]);
      }
    }
    if (k < K) {
      __mmask32 m = tail_mask32(K - k);
      __m512bh wv[RN];
      for (int r = 0; r < RN; ++r) wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, w + r * ldw + k);
      for (int t = 0; t < TT; ++t) {
        __m512bh xv = (__m512bh)_mm512_loadu_si512(x + t * a.ldxb + k);  // zero-padded past K
        for (int r = 0; r < RN; ++r) acc[t * RN + r] = _mm512_dpbf16_ps(acc[t * RN + r], xv, wv[r]);
      }
    }
    reduce_accumulators<TT * RN>(acc, res);
  }

  // Row n for tokens [0, TT): acc[t] gets the same sequence of vdpbf16ps as tile() gives that element.
  // W is read in address order, prefetching kStreamAhead bytes ahead (up to pf_end).
  template <int TT>
  static void row(const MatmulArgs& a, int64_t n, __m512* acc, const char* pf_end) {
    const int64_t K = a.W.cols;
    const uint16_t* w = static_cast<const uint16_t*>(a.W.data) + n * a.W.row_stride;
    const uint16_t* x = a.xb;
    for (int t = 0; t < TT; ++t) acc[t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      stream_prefetch(w + k, pf_end, a.pf_next);
      __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k);
      for (int t = 0; t < TT; ++t)
        acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)_mm512_loadu_si512(x + t * a.ldxb + k), wv);
    }
    if (k < K) {
      stream_prefetch(w + k, pf_end, a.pf_next);
      __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail_mask32(K - k), w + k);
      for (int t = 0; t < TT; ++t)
        acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)_mm512_loadu_si512(x + t * a.ldxb + k), wv);
    }
  }
};

// Weights widened to f32 (exactly), FMA with f32 x: 16 elements of K per step.
template <DType D>
struct F32Fma {
  static __m512 load_w(const void* base, int64_t i) {
    if constexpr (D == DType::kF32) return _mm512_loadu_ps(static_cast<const float*>(base) + i);
    if constexpr (D == DType::kF16) return load_f16x16(static_cast<const uint16_t*>(base) + i);
    if constexpr (D == DType::kBF16) return load_bf16x16(static_cast<const uint16_t*>(base) + i);
  }
  static __m512 load_w(const void* base, int64_t i, __mmask16 m) {
    if constexpr (D == DType::kF32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
    if constexpr (D == DType::kF16) return load_f16x16(static_cast<const uint16_t*>(base) + i, m);
    if constexpr (D == DType::kBF16) return load_bf16x16(static_cast<const uint16_t*>(base) + i, m);
  }

  template <int TT, int RN>
  static void tile(const MatmulArgs& a, int64_t t0, int64_t n0, float* res, bool prefetch) {
    const int64_t K = a.W.cols, ldw = a.W.row_stride;
    constexpr int64_t kSize = D == DType::kF32 ? 4 : 2;
    const void* w = static_cast<const char*>(a.W.data) + n0 * ldw * kSize;
    const float* x = a.x + t0 * a.ldx;
    __m512 acc[TT * RN];
    for (int j = 0; j < TT * RN; ++j) acc[j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 wv[RN];
      if (prefetch) {
        for (int r = 0; r < RN; ++r)
          _mm_prefetch(static_cast<const char*>(w) + ((r + RN) * ldw + k) * kSize, _MM_HINT_T0);
      }
      for (int r = 0; r < RN; ++r) wv[r] = load_w(w, r * ldw + k);
      for (int t = 0; t < TT; ++t) {
        __m512 xv = _mm512_loadu_ps(x + t * a.ldx + k);
        for (int r = 0; r < RN; ++r) acc[t * RN + r] = _mm512_fmadd_ps(xv, wv[r], acc[t * RN + r]);
      }
    }
    if (k < K) {
      __mmask16 m = tail_mask16(K - k);
      __m512 wv[RN];
      for (int r = 0; r < RN; ++r) wv[r] = load_w(w, r * ldw + k, m);
      for (int t = 0; t < TT; ++t) {
        __m512 xv = _mm512_maskz_loadu_ps(m, x + t * a.ldx + k);
        for (int r = 0; r < RN; ++r) acc[t * RN + r] = _mm512_fmadd_ps(xv, wv[r], acc[t * RN + r]);
      }
    }
    reduce_accumulators<TT * RN>(acc, res);
  }

  template <int TT>
  static void row(const MatmulArgs& a, int64_t n, __m512* acc, const char* pf_end) {
    const int64_t K = a.W.cols;
    constexpr int64_t kSize = D == DType::kF32 ? 4 : 2;
    const char* w = static_cast<const char*>(a.W.data) + n * a.W.row_stride * kSize;
    const float* x = a.x;
    for (int t = 0; t < TT; ++t) acc[t] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      stream_prefetch(w + k * kSize, pf_end, a.pf_next);
      __m512 wv = load_w(w, k);
      for (int t = 0; t < TT; ++t) acc[t] = _mm512_fmadd_ps(_mm512_loadu_ps(x + t * a.ldx + k), wv, acc[t]);
    }
    if (k < K) {
      stream_prefetch(w + k * kSize, pf_end, a.pf_next);
      __mmask16 m = tail_mask16(K - k);
      __m512 wv = load_w(w, k, m);
      for (int t = 0; t < TT; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + t * a.ldx + k), wv, acc[t]);
    }
  }
};

// y = y + (dot + bias) (or y = dot + bias) for rn outputs of token t from row n0; the one epilogue of
// every tile and of the GEMV.
inline void store_row(const MatmulArgs& a, int64_t t, int64_t n0, const float* res, int rn) {
  float* yr = a.y + t * a.ldy + n0;
  for (int r = 0; r < rn; ++r) {
    float v = res[r];
    if (a.bias) v += a.bias[n0 + r];
    yr[r] = a.accumulate ? yr[r] + v : v;
  }
}

template <class P, int TT, int RN>
inline void do_tile(const MatmulArgs& a, int64_t t0, int64_t n0, bool prefetch) {
  float res[16];
  P::template tile<TT, RN>(a, t0, n0, res, prefetch);
  for (int t = 0; t < TT; ++t) store_row(a, t0 + t, n0, res + t * RN, RN);
}

// Tokens [t0, t1) x RN rows at n0, in 4-token tiles plus one remainder tile.
template <class P, int RN>
inline void token_tiles(const MatmulArgs& a, int64_t t0, int64_t t1, int64_t n0) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) do_tile<P, 4, RN>(a, t, n0, t == t0);
  switch (t1 - t) {
    case 3:
      do_tile<P, 3, RN>(a, t, n0, t == t0);
      break;
    case 2:
      do_tile<P, 2, RN>(a, t, n0, t == t0);
      break;
    case 1:
      do_tile<P, 1, RN>(a, t, n0, t == t0);
      break;
    default:
      break;
  }
}

using detail::kGemmMinTokens;
constexpr int64_t kRowPanel = 64;      // rows whose W panel stays in L2 while a token block passes
constexpr int64_t kXBlockBytes = 384 << 10;

// GEMV (few tokens): the rows of W one after another, so each thread reads ONE address-ordered stream.
// (Walking 16 rows side by side by K chunks made 16 streams and reached about half the bandwidth.) Rows
// are grouped by 16 only for the reduction; every element still gets tile()'s arithmetic.
template <class P, int TT>
void gemv_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const int64_t esize = static_cast<int64_t>(dtype_size(a.W.dtype));
  const char* pf_end = static_cast<const char*>(a.W.data) + n1 * a.W.row_stride * esize;
  // Prime the stream: the loop below prefetches kStreamAhead bytes ahead, so the first lines would
  // otherwise arrive one latency at a time (every call starts here; a step makes hundreds of them).
  const char* first = static_cast<const char*>(a.W.data) + n0 * a.W.row_stride * esize;
  stream_prime(first, pf_end);
  for (int64_t nb = n0; nb < n1; nb += 16) {
    const int rn = static_cast<int>(std::min<int64_t>(16, n1 - nb));
    __m512 acc[TT][16];
    __m512 one[TT];
    for (int r = 0; r < rn; ++r) {
      P::template row<TT>(a, nb + r, one, pf_end);
      for (int t = 0; t < TT; ++t) acc[t][r] = one[t];
    }
    for (int t = 0; t < TT; ++t) {
      for (int r = rn; r < 16; ++r) acc[t][r] = _mm512_setzero_ps();
      float res[16];
      reduce_accumulators<16>(acc[t], res);
      store_row(a, t, nb, res, rn);
    }
  }
}

template <class P>
void matmul_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const int64_t T = a.T;
  if (T < kGemmMinTokens) {
    switch (T) {
      case 1:
        return gemv_rows<P, 1>(a, n0, n1);
      case 2:
        return gemv_rows<P, 2>(a, n0, n1);
      case 3:
        return gemv_rows<P, 3>(a, n0, n1);
      default:
        return;
    }
  }
  // Token block: the x rows of one block (bf16 or f32) stay in L2 while a row panel passes over them.
  int64_t x_row_bytes = std::max<int64_t>(a.W.cols, 1) * (a.xb ? 2 : 4);
  int64_t tb = std::clamp<int64_t>(kXBlockBytes / x_row_bytes / 4 * 4, 16, 1 << 20);
  for (int64_t nb = n0; nb < n1; nb += kRowPanel) {
    int64_t ne = std::min(n1, nb + kRowPanel);
    for (int64_t t0 = 0; t0 < T; t0 += tb) {
      int64_t t1 = std::min(T, t0 + tb);
      int64_t n = nb;
      for (; n + 4 <= ne; n += 4) token_tiles<P, 4>(a, t0, t1, n);
      for (; n < ne; ++n) token_tiles<P, 1>(a, t0, t1, n);
    }
  }
}

}  // namespace

void matmul_rows_bf16dot(const MatmulArgs& a, int64_t n0, int64_t n1) {
  if (a.W.dtype == DType::kBF16 && a.xb) return matmul_rows<Bf16Dot>(a, n0, n1);
  matmul_rows_fma(a, n0, n1);
}

void matmul_rows_fma(const MatmulArgs& a, int64_t n0, int64_t n1) {
  visit_dtype(a.W.dtype, [&](auto d) { matmul_rows<F32Fma<d.value>>(a, n0, n1); });
}

void convert_x_bf16(const float* x, int64_t T, int64_t ldx, int64_t K, uint16_t* xb, int64_t ldxb) {
  for (int64_t t = 0; t < T; ++t) {
    const float* src = x + t * ldx;
    uint16_t* dst = xb + t * ldxb;
    for (int64_t k = 0; k < ldxb; k += 32) {
      __m512 lo = _mm512_maskz_loadu_ps(tail_mask16(std::max<int64_t>(K - k, 0)), src + k);
      __m512 hi = _mm512_maskz_loadu_ps(tail_mask16(std::max<int64_t>(K - k - 16, 0)), src + k + 16);
      _mm512_storeu_si512(dst + k, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
}

}  // namespace lp::kernels::avx512
