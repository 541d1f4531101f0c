// AVX-512 VNNI matmul over quantized weights (kQ8, kQ4) and int8 activations (QuantActs).
//
// Every output element (t, n) is built the same way whichever path computes it: per activation block b,
// an i32 accumulator takes vpdpbusd of each 64-column chunk (u8 weights x s8 activations) in order, loses
// z * lane_sum (the zero point, exact in integers), is converted to f32 and added to a 16-lane f32
// accumulator by one FMA with sx[t][b] (times the group scale for kQ4); at the end one canonical horizontal
// sum (times the row scale for kQ8). So results are bit-identical whatever T and whichever tile ran.
//
// GEMV (few tokens) streams the packed rows once in address order, unpacking kQ4 nibbles in registers.
// GEMM unpacks a panel of kQ4 rows into u8 once (the same bytes the GEMV unpacks), then multiplies 4-row
// x 3-token tiles out of cache: each tile step is 7 loads for 12 vpdpbusd.
// No FP contraction in this file: with -mfma GCC fuses store()'s `out + dot * row_scale` into an FMA in some
// instantiations (the GEMM tile) and not in others (the GEMV), so an accumulating matmul (o_proj, down_proj
// into the residual) differed by 1 ulp between T < kGemmMinTokens and T >= it.
#pragma GCC optimize("fp-contract=off")
// GCC 12 flags its own _mm512_undefined_*() inside the intrinsics headers (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "core/buffer.h"
#include "kernels/dispatch.h"
#include "kernels/simd_avx512.h"

namespace lp::kernels::avx512 {
namespace {

using detail::MatmulArgs;

constexpr int64_t kStreamAhead = 8192;  // as the dense GEMV (matmul_avx512.cpp)

inline void stream_prefetch(const char* p, const char* end, const char* next) {
  const char* q = p + kStreamAhead;
  if (q < end) {
    _mm_prefetch(q, _MM_HINT_NTA);
  } else if (next != nullptr) {
    _mm_prefetch(next + (q - end), _MM_HINT_NTA);
  }
}

// Chunk c (64 columns) of a packed row as 64 u8 in column order.
template <WeightFormat F>
inline __m512i load_chunk(const uint8_t* row, int64_t c) {
  if constexpr (F == WeightFormat::kQ8) {
    return _mm512_loadu_si512(row + c * 64);
  } else {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c * 32));
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
    return _mm512_and_si512(both, _mm512_set1_epi8(0x0F));
  }
}

// Per-row constants of a quantized W.
template <WeightFormat F>
struct RowQuant {
  const float* row_scale = nullptr;     // kQ8
  const uint16_t* gscale = nullptr;     // kQ4: this row's groups
  const uint8_t* gzero = nullptr;
  int blocks_per_group = 1;
  RowQuant() = default;
  RowQuant(const MatView& W, int64_t n, int block) {
    if constexpr (F == WeightFormat::kQ4) {
      const int64_t ng = W.row_stride / W.group;
      gscale = W.group_scale + n * ng;
      gzero = W.group_zero + n * ng;
      blocks_per_group = W.group / block;
    }
  }
};

// acc_f += float(acc_i - z * lane_sum) * (sx * s): the end of block b for one (token, row).
template <WeightFormat F>
inline __m512 finish_block(__m512i acc_i, __m512 acc_f, const QuantActs& q, int64_t t, int64_t b,
                           const RowQuant<F>& rq) {
  const __m512i lanes = _mm512_loadu_si512(q.lane_sum + (t * q.n_blocks + b) * 16);
  const float sx = q.scale[t * q.n_blocks + b];
  if constexpr (F == WeightFormat::kQ8) {
    acc_i = _mm512_sub_epi32(acc_i, _mm512_slli_epi32(lanes, 7));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc_i), _mm512_set1_ps(sx), acc_f);
  } else {
    const int64_t g = b / rq.blocks_per_group;
    acc_i = _mm512_sub_epi32(acc_i, _mm512_mullo_epi32(lanes, _mm512_set1_epi32(rq.gzero[g])));
    const float s = _cvtsh_ss(rq.gscale[g]);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc_i), _mm512_set1_ps(sx * s), acc_f);
  }
}

// y[t][n] (+)= the element's sum (x the kQ8 row scale) + bias.
template <WeightFormat F>
inline void store(const MatmulArgs& a, int64_t t, int64_t n, float dot) {
  if constexpr (F == WeightFormat::kQ8) dot *= a.W.row_scale[n];
  if (a.bias) dot += a.bias[n];
  float& out = a.y[t * a.ldy + n];
  out = a.accumulate ? out + dot : dot;
}

// GEMV: rows [n0, n1) for TT tokens, each row's packed bytes streamed once in address order.
template <WeightFormat F, int TT>
void gemv_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const QuantActs& q = *a.qa;
  const int64_t rb = row_bytes(a.W), nchunks = a.W.row_stride / 64, cpb = q.block / 64;
  const char* base = static_cast<const char*>(a.W.data);
  const char* pf_end = base + n1 * rb;
  for (const char* p = base + n0 * rb; p < std::min(pf_end, base + n0 * rb + kStreamAhead); p += 64)
    _mm_prefetch(p, _MM_HINT_NTA);
  for (int64_t nb = n0; nb < n1; nb += 16) {
    const int rn = static_cast<int>(std::min<int64_t>(16, n1 - nb));
    __m512 acc[TT][16];
    for (int r = 0; r < rn; ++r) {
      const int64_t n = nb + r;
      const uint8_t* w = reinterpret_cast<const uint8_t*>(base + n * rb);
      const RowQuant<F> rq(a.W, n, q.block);
      __m512 accf[TT];
      for (int t = 0; t < TT; ++t) accf[t] = _mm512_setzero_ps();
      for (int64_t b = 0; b < q.n_blocks; ++b) {
        __m512i acci[TT];
        for (int t = 0; t < TT; ++t) acci[t] = _mm512_setzero_si512();
        const int64_t c1 = std::min(nchunks, (b + 1) * cpb);
        for (int64_t c = b * cpb; c < c1; ++c) {
          stream_prefetch(reinterpret_cast<const char*>(w) + c * (rb / nchunks), pf_end, a.pf_next);
          const __m512i wv = load_chunk<F>(w, c);
          for (int t = 0; t < TT; ++t)
            acci[t] = _mm512_dpbusd_epi32(acci[t], wv, _mm512_loadu_si512(q.xq + t * q.ld + c * 64));
        }
        for (int t = 0; t < TT; ++t) accf[t] = finish_block<F>(acci[t], accf[t], q, t, b, rq);
      }
      for (int t = 0; t < TT; ++t) acc[t][r] = accf[t];
    }
    for (int t = 0; t < TT; ++t) {
      for (int r = rn; r < 16; ++r) acc[t][r] = _mm512_setzero_ps();
      float res[16];
      reduce_accumulators<16>(acc[t], res);
      for (int r = 0; r < rn; ++r) store<F>(a, t, nb + r, res[r]);
    }
  }
}

// GEMM tile: TT tokens from t0 x RN rows from n0, weights as u8 rows at w (row stride ldw bytes).
template <WeightFormat F, int TT, int RN>
void tile(const MatmulArgs& a, int64_t t0, int64_t n0, const uint8_t* w, int64_t ldw) {
  const QuantActs& q = *a.qa;
  const int64_t nchunks = a.W.row_stride / 64, cpb = q.block / 64;
  RowQuant<F> rq[RN];
  for (int r = 0; r < RN; ++r) rq[r] = RowQuant<F>(a.W, n0 + r, q.block);
  __m512 accf[TT * RN];
  for (int j = 0; j < TT * RN; ++j) accf[j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < q.n_blocks; ++b) {
    __m512i acci[TT * RN];
    for (int j = 0; j < TT * RN; ++j) acci[j] = _mm512_setzero_si512();
    const int64_t c1 = std::min(nchunks, (b + 1) * cpb);
    for (int64_t c = b * cpb; c < c1; ++c) {
      __m512i wv[RN];
      for (int r = 0; r < RN; ++r) wv[r] = _mm512_loadu_si512(w + r * ldw + c * 64);
      for (int t = 0; t < TT; ++t) {
        const __m512i xv = _mm512_loadu_si512(q.xq + (t0 + t) * q.ld + c * 64);
        for (int r = 0; r < RN; ++r) acci[t * RN + r] = _mm512_dpbusd_epi32(acci[t * RN + r], wv[r], xv);
      }
    }
    for (int t = 0; t < TT; ++t)
      for (int r = 0; r < RN; ++r)
        accf[t * RN + r] = finish_block<F>(acci[t * RN + r], accf[t * RN + r], q, t0 + t, b, rq[r]);
  }
  float res[TT * RN];
  reduce_accumulators<TT * RN>(accf, res);
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RN; ++r) store<F>(a, t0 + t, n0 + r, res[t * RN + r]);
}

// Tokens [t0, t1) x RN rows, in 3-token tiles plus one remainder tile.
template <WeightFormat F, int RN>
void token_tiles(const MatmulArgs& a, int64_t t0, int64_t t1, int64_t n0, const uint8_t* w, int64_t ldw) {
  int64_t t = t0;
  for (; t + 3 <= t1; t += 3) tile<F, 3, RN>(a, t, n0, w, ldw);
  if (t1 - t == 2) tile<F, 2, RN>(a, t, n0, w, ldw);
  if (t1 - t == 1) tile<F, 1, RN>(a, t, n0, w, ldw);
}

template <WeightFormat F>
void gemm_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const QuantActs& q = *a.qa;
  const int64_t Kp = a.W.row_stride, rb = row_bytes(a.W), T = a.T;
  // Row panel: its u8 rows (kQ4 unpacked into scratch) stay in L2 while a block of tokens passes.
  const int64_t panel = std::clamp<int64_t>((256 << 10) / Kp / 4 * 4, 4, 64);
  const int64_t tb = std::clamp<int64_t>((256 << 10) / q.ld / 3 * 3, 3, 1 << 20);
  thread_local Buffer<uint8_t> scratch;  // this thread's unpacked kQ4 panel
  if constexpr (F == WeightFormat::kQ4) {
    if (scratch.size() < static_cast<size_t>(panel * Kp)) scratch.resize(static_cast<size_t>(panel * Kp));
  }
  const uint8_t* data = static_cast<const uint8_t*>(a.W.data);
  for (int64_t nb = n0; nb < n1; nb += panel) {
    const int64_t ne = std::min(n1, nb + panel);
    const uint8_t* w = data + nb * rb;
    int64_t ldw = rb;
    if constexpr (F == WeightFormat::kQ4) {
      for (int64_t n = nb; n < ne; ++n)
        for (int64_t c = 0; c < Kp / 64; ++c)
          _mm512_storeu_si512(scratch.data() + (n - nb) * Kp + c * 64, load_chunk<F>(data + n * rb, c));
      w = scratch.data();
      ldw = Kp;
    }
    for (int64_t t0 = 0; t0 < T; t0 += tb) {
      const int64_t t1 = std::min(T, t0 + tb);
      int64_t n = nb;
      for (; n + 4 <= ne; n += 4) token_tiles<F, 4>(a, t0, t1, n, w + (n - nb) * ldw, ldw);
      for (; n < ne; ++n) token_tiles<F, 1>(a, t0, t1, n, w + (n - nb) * ldw, ldw);
    }
  }
}

template <WeightFormat F>
void rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  switch (a.T) {
    case 1:
      return gemv_rows<F, 1>(a, n0, n1);
    case 2:
      return gemv_rows<F, 2>(a, n0, n1);
    case 3:
      return gemv_rows<F, 3>(a, n0, n1);
    default:
      return gemm_rows<F>(a, n0, n1);
  }
}

}  // namespace

void matmul_rows_vnni(const MatmulArgs& a, int64_t n0, int64_t n1) {
  if (a.T <= 0 || n0 >= n1) return;
  if (a.W.format == WeightFormat::kQ8) return rows<WeightFormat::kQ8>(a, n0, n1);
  rows<WeightFormat::kQ4>(a, n0, n1);
}

void quantize_acts(const float* x, int64_t t0, int64_t t1, int64_t ldx, int64_t K, const QuantActs& q) {
  const __m512 sign = _mm512_set1_ps(-0.f);
  const __m512i lim = _mm512_set1_epi32(127);
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * ldx;
    int8_t* xq = q.xq + t * q.ld;
    for (int64_t b = 0; b < q.n_blocks; ++b) {
      const int64_t k0 = b * q.block, k1 = std::min<int64_t>(k0 + q.block, q.ld);
      __m512 mx = _mm512_setzero_ps();
      for (int64_t k = k0; k < k1; k += 16) {
        const __m512 v = _mm512_maskz_loadu_ps(tail_mask16(std::max<int64_t>(K - k, 0)), xr + k);
        mx = _mm512_max_ps(mx, _mm512_andnot_ps(sign, v));
      }
      const float amax = _mm512_reduce_max_ps(mx);
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      q.scale[t * q.n_blocks + b] = amax / 127.f;
      const __m512 vinv = _mm512_set1_ps(inv);
      __m512i lanes = _mm512_setzero_si512();
      for (int64_t k = k0; k < k1; k += 64) {
        __m128i part[4];
        for (int j = 0; j < 4; ++j) {
          const int64_t kk = k + 16 * j;
          const __m512 v = _mm512_maskz_loadu_ps(tail_mask16(std::max<int64_t>(K - kk, 0)), xr + kk);
          __m512i iv = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));  // round half to even (MXCSR default)
          iv = _mm512_max_epi32(_mm512_min_epi32(iv, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
          part[j] = _mm512_cvtepi32_epi8(iv);
        }
        const __m512i chunk = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_set_m128i(part[1], part[0])), _mm256_set_m128i(part[3], part[2]), 1);
        _mm512_storeu_si512(xq + k, chunk);
        lanes = _mm512_dpbusd_epi32(lanes, ones, chunk);
      }
      _mm512_storeu_si512(q.lane_sum + (t * q.n_blocks + b) * 16, lanes);
    }
  }
}

}  // namespace lp::kernels::avx512
