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
// Built with -ffp-contract=off (kernels/CMakeLists.txt): GCC fused store()'s `out + dot * row_scale` into an
// FMA in some instantiations (the GEMM tile) and not others (the GEMV), so an accumulating matmul differed by
// 1 ulp between T < kGemmMinTokens and T >= it.
// GCC 12 flags its own _mm512_undefined_*() inside the intrinsics headers (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/buffer.h"
#include "kernels/dispatch.h"
#include "kernels/simd_avx512.h"

namespace lp::kernels::avx512 {
namespace {

using detail::MatmulArgs;

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

// kQ4 per call: X[t][g] = sum over the blocks b of group g of sx[t][b] * xsum[t][b] (f32, blocks in order),
// so that the zero points come off once per output: y = sum_b sx_b s_g dot_b(q, xq) - sum_g s_g z_g X[t][g].
// (Subtracting z * lane sums in integers per block costs a vpmulld per block and output; this costs
// ng / 16 FMAs per output. The f32 cancellation it allows is far below the int8 activation error.)
struct Q4Sums {
  const float* X = nullptr;  // (T, ng)
  int64_t ng = 0;
  int blocks_per_group = 1;
};

Q4Sums q4_sums(const MatView& W, const QuantActs& q, int64_t T) {
  thread_local Buffer<float> buf;
  Q4Sums r;
  r.ng = W.row_stride / W.group;
  r.blocks_per_group = W.group / q.block;
  if (buf.size() < static_cast<size_t>(T * r.ng)) buf.resize(static_cast<size_t>(T * r.ng));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t g = 0; g < r.ng; ++g) {
      float acc = 0.f;
      for (int64_t b = g * r.blocks_per_group; b < std::min<int64_t>((g + 1) * r.blocks_per_group, q.n_blocks); ++b) {
        const int32_t* l = q.lane_sum + (t * q.n_blocks + b) * 16;
        int32_t xs = 0;
        for (int i = 0; i < 16; ++i) xs += l[i];
        acc = std::fma(q.scale[t * q.n_blocks + b], static_cast<float>(xs), acc);
      }
      buf[t * r.ng + g] = acc;
    }
  }
  r.X = buf.data();
  return r;
}

// The starting value of output (t, n)'s f32 accumulator: 0, or for kQ4 minus the zero points' part,
// -sum_g s_g z_g X[t][g], spread over the 16 lanes (g % 16) so the final horizontal sum takes it off.
template <WeightFormat F>
inline __m512 init_acc(const MatView& W, const Q4Sums& qs, int64_t t, int64_t n) {
  if constexpr (F == WeightFormat::kQ8) {
    return _mm512_setzero_ps();
  } else {
    const float* X = qs.X + t * qs.ng;
    const uint16_t* gs = W.group_scale + n * qs.ng;
    const uint8_t* gz = W.group_zero + n * qs.ng;
    __m512 c = _mm512_setzero_ps();
    for (int64_t g = 0; g < qs.ng; g += 16) {
      const __mmask16 k = tail_mask16(qs.ng - g);
      const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, gs + g));
      const __m512 z = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, gz + g)));
      c = _mm512_fmadd_ps(_mm512_mul_ps(s, z), _mm512_maskz_loadu_ps(k, X + g), c);
    }
    return _mm512_sub_ps(_mm512_setzero_ps(), c);
  }
}

// acc_f += float(block dot) * f, f = sx (kQ8) or sx * s_g (kQ4, s_g the block's group scale): the end of
// block b of one (token, row).
template <WeightFormat F>
inline __m512 finish_block(__m512i acc_i, __m512 acc_f, const QuantActs& q, int64_t t, int64_t b, float f) {
  if constexpr (F == WeightFormat::kQ8) {  // zero point 128 on every weight: off in integers, exactly
    const __m512i lanes = _mm512_loadu_si512(q.lane_sum + (t * q.n_blocks + b) * 16);
    acc_i = _mm512_sub_epi32(acc_i, _mm512_slli_epi32(lanes, 7));
  }
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc_i), _mm512_set1_ps(f), acc_f);
}

// kQ4: f of every block of row n for tokens [0, TT), f[t * n_blocks + b] = sx * s_g (see finish_block): the
// same products the GEMM tile forms one at a time, here 16 at a time.
template <int TT>
inline void block_factors(const MatView& W, const QuantActs& q, const Q4Sums& qs, int64_t n, float* f) {
  for (int t = 0; t < TT; ++t) {
    const float* sx = q.scale + t * q.n_blocks;
    float* ft = f + t * q.n_blocks;
    if (qs.blocks_per_group == 1) {
      const uint16_t* gs = W.group_scale + n * qs.ng;
      for (int64_t b = 0; b < q.n_blocks; b += 16) {
        const __mmask16 k = tail_mask16(q.n_blocks - b);
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, gs + b));
        _mm512_mask_storeu_ps(ft + b, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, sx + b), s));
      }
    } else {
      const uint16_t* gs = W.group_scale + n * qs.ng;
      for (int64_t b = 0; b < q.n_blocks; ++b) ft[b] = sx[b] * _cvtsh_ss(gs[b / qs.blocks_per_group]);
    }
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

// Bytes of one 64-column chunk of a packed row.
template <WeightFormat F>
constexpr int64_t kChunkBytes = F == WeightFormat::kQ8 ? 64 : 32;

// GEMV: rows [n0, n1) for TT tokens, each row's packed bytes streamed once in address order. CPB: chunks per
// activation block (2 for blocks of 128, 1 for 64), so the block loop is unrolled.
template <WeightFormat F, int TT, int CPB>
void gemv_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const QuantActs& q = *a.qa;
  const int64_t rb = row_bytes(a.W), nchunks = a.W.row_stride / 64;
  const Q4Sums qs = F == WeightFormat::kQ4 ? q4_sums(a.W, q, TT) : Q4Sums{};
  const char* base = static_cast<const char*>(a.W.data);
  const char* pf_end = base + n1 * rb;
  stream_prime(base + n0 * rb, pf_end);
  thread_local Buffer<float> factors;  // (TT, n_blocks) of the current row
  if (factors.size() < static_cast<size_t>(TT * q.n_blocks)) factors.resize(static_cast<size_t>(TT * q.n_blocks));
  float* fac = factors.data();
  for (int64_t nb = n0; nb < n1; nb += 16) {
    const int rn = static_cast<int>(std::min<int64_t>(16, n1 - nb));
    __m512 acc[TT][16];
    for (int r = 0; r < rn; ++r) {
      const int64_t n = nb + r;
      const uint8_t* w = reinterpret_cast<const uint8_t*>(base + n * rb);
      if constexpr (F == WeightFormat::kQ4) block_factors<TT>(a.W, q, qs, n, fac);
      __m512 accf[TT];
      for (int t = 0; t < TT; ++t) accf[t] = init_acc<F>(a.W, qs, t, n);
      // Block b's factor for token t.
      auto factor = [&](int t, int64_t b) {
        return F == WeightFormat::kQ4 ? fac[t * q.n_blocks + b] : q.scale[t * q.n_blocks + b];
      };
      int64_t b = 0;
      if constexpr (F == WeightFormat::kQ4) {
        // 64 packed bytes (two chunks) per load: one shift, two masks and two lane shuffles unpack both.
        // CPB 2: block b is chunks c, c + 1; CPB 1: blocks b and b + 1 are.
        for (; b * CPB + 2 <= nchunks; b += CPB == 2 ? 1 : 2) {
          const int64_t c = b * CPB;
          stream_prefetch(reinterpret_cast<const char*>(w) + c * 32, pf_end, a.pf_next);
          const __m512i v = _mm512_loadu_si512(w + c * 32);
          const __m512i m = _mm512_set1_epi8(0x0F);
          const __m512i lo = _mm512_and_si512(v, m), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
          const __m512i w0 = _mm512_shuffle_i64x2(lo, hi, 0x44), w1 = _mm512_shuffle_i64x2(lo, hi, 0xEE);
          __m512i acci[2][TT];
          for (int t = 0; t < TT; ++t) {
            const int8_t* x = q.xq + t * q.ld + c * 64;
            acci[0][t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, _mm512_loadu_si512(x));
            if constexpr (CPB == 2) {
              acci[0][t] = _mm512_dpbusd_epi32(acci[0][t], w1, _mm512_loadu_si512(x + 64));
            } else {
              acci[1][t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w1, _mm512_loadu_si512(x + 64));
            }
          }
          for (int t = 0; t < TT; ++t) accf[t] = finish_block<F>(acci[0][t], accf[t], q, t, b, factor(t, b));
          if constexpr (CPB == 1) {
            for (int t = 0; t < TT; ++t)
              accf[t] = finish_block<F>(acci[1][t], accf[t], q, t, b + 1, factor(t, b + 1));
          }
        }
      }
      for (; b < q.n_blocks; ++b) {
        __m512i acci[TT];
        for (int t = 0; t < TT; ++t) acci[t] = _mm512_setzero_si512();
        const int64_t c0 = b * CPB;
        for (int j = 0; j < CPB; ++j) {
          if (CPB > 1 && c0 + j >= nchunks) break;  // a last block of 64 columns
          const char* wc = reinterpret_cast<const char*>(w) + (c0 + j) * kChunkBytes<F>;
          stream_prefetch(wc, pf_end, a.pf_next);
          const __m512i wv = load_chunk<F>(w, c0 + j);
          for (int t = 0; t < TT; ++t)
            acci[t] = _mm512_dpbusd_epi32(acci[t], wv, _mm512_loadu_si512(q.xq + t * q.ld + (c0 + j) * 64));
        }
        for (int t = 0; t < TT; ++t) accf[t] = finish_block<F>(acci[t], accf[t], q, t, b, factor(t, b));
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

// GEMM tile: TT tokens from t0 x RN rows from n0, weights as u8 rows at w (row stride ldw bytes) and, for
// kQ4, the rows' group scales as f32 at sc (row stride ng).
template <WeightFormat F, int TT, int RN>
void tile(const MatmulArgs& a, const Q4Sums& qs, int64_t t0, int64_t n0, const uint8_t* w, int64_t ldw,
          const float* sc) {
  const QuantActs& q = *a.qa;
  const int64_t nchunks = a.W.row_stride / 64, cpb = q.block / 64;
  __m512 accf[TT * RN];
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RN; ++r) accf[t * RN + r] = init_acc<F>(a.W, qs, t0 + t, n0 + r);
  for (int64_t b = 0, g = 0, left = qs.blocks_per_group; b < q.n_blocks; ++b) {
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
    for (int r = 0; r < RN; ++r) {
      for (int t = 0; t < TT; ++t) {
        const float sx = q.scale[(t0 + t) * q.n_blocks + b];
        const float f = F == WeightFormat::kQ4 ? sx * sc[r * qs.ng + g] : sx;
        accf[t * RN + r] = finish_block<F>(acci[t * RN + r], accf[t * RN + r], q, t0 + t, b, f);
      }
    }
    if (--left == 0) ++g, left = qs.blocks_per_group;
  }
  float res[TT * RN];
  reduce_accumulators<TT * RN>(accf, res);
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < RN; ++r) store<F>(a, t0 + t, n0 + r, res[t * RN + r]);
}

// Tokens [t0, t1) x RN rows, in 3-token tiles plus one remainder tile.
template <WeightFormat F, int RN>
void token_tiles(const MatmulArgs& a, const Q4Sums& qs, int64_t t0, int64_t t1, int64_t n0, const uint8_t* w,
                 int64_t ldw, const float* sc) {
  int64_t t = t0;
  for (; t + 3 <= t1; t += 3) tile<F, 3, RN>(a, qs, t, n0, w, ldw, sc);
  if (t1 - t == 2) tile<F, 2, RN>(a, qs, t, n0, w, ldw, sc);
  if (t1 - t == 1) tile<F, 1, RN>(a, qs, t, n0, w, ldw, sc);
}

template <WeightFormat F>
void gemm_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  const QuantActs& q = *a.qa;
  const int64_t Kp = a.W.row_stride, rb = row_bytes(a.W), T = a.T;
  const Q4Sums qs = F == WeightFormat::kQ4 ? q4_sums(a.W, q, T) : Q4Sums{};
  // Row panel: its u8 rows (kQ4 unpacked into scratch, with f32 group scales) stay in L2 while a block of
  // tokens passes.
  const int64_t panel = std::clamp<int64_t>((256 << 10) / Kp / 4 * 4, 4, 64);
  const int64_t tb = std::clamp<int64_t>((256 << 10) / q.ld / 3 * 3, 3, 1 << 20);
  thread_local Buffer<uint8_t> scratch;  // this thread's unpacked kQ4 panel
  thread_local Buffer<float> scales;     // and its (panel, ng) group scales
  if constexpr (F == WeightFormat::kQ4) {
    if (scratch.size() < static_cast<size_t>(panel * Kp)) scratch.resize(static_cast<size_t>(panel * Kp));
    if (scales.size() < static_cast<size_t>(panel * qs.ng)) scales.resize(static_cast<size_t>(panel * qs.ng));
  }
  const uint8_t* data = static_cast<const uint8_t*>(a.W.data);
  for (int64_t nb = n0; nb < n1; nb += panel) {
    const int64_t ne = std::min(n1, nb + panel);
    const uint8_t* w = data + nb * rb;
    int64_t ldw = rb;
    if constexpr (F == WeightFormat::kQ4) {
      for (int64_t n = nb; n < ne; ++n) {
        for (int64_t c = 0; c < Kp / 64; ++c)
          _mm512_storeu_si512(scratch.data() + (n - nb) * Kp + c * 64, load_chunk<F>(data + n * rb, c));
        for (int64_t g = 0; g < qs.ng; ++g)
          scales[(n - nb) * qs.ng + g] = _cvtsh_ss(a.W.group_scale[n * qs.ng + g]);
      }
      w = scratch.data();
      ldw = Kp;
    }
    for (int64_t t0 = 0; t0 < T; t0 += tb) {
      const int64_t t1 = std::min(T, t0 + tb);
      int64_t n = nb;
      const float* sc = scales.data();
      for (; n + 4 <= ne; n += 4)
        token_tiles<F, 4>(a, qs, t0, t1, n, w + (n - nb) * ldw, ldw, sc ? sc + (n - nb) * qs.ng : nullptr);
      for (; n < ne; ++n)
        token_tiles<F, 1>(a, qs, t0, t1, n, w + (n - nb) * ldw, ldw, sc ? sc + (n - nb) * qs.ng : nullptr);
    }
  }
}

template <WeightFormat F, int CPB>
void rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  switch (a.T) {
    case 1:
      return gemv_rows<F, 1, CPB>(a, n0, n1);
    case 2:
      return gemv_rows<F, 2, CPB>(a, n0, n1);
    case 3:
      return gemv_rows<F, 3, CPB>(a, n0, n1);
    default:
      return gemm_rows<F>(a, n0, n1);
  }
}

}  // namespace

void matmul_rows_vnni(const MatmulArgs& a, int64_t n0, int64_t n1) {
  if (a.T <= 0 || n0 >= n1) return;
  if (a.W.format == WeightFormat::kQ8) return rows<WeightFormat::kQ8, 2>(a, n0, n1);
  if (a.qa->block == 128) return rows<WeightFormat::kQ4, 2>(a, n0, n1);
  rows<WeightFormat::kQ4, 1>(a, n0, n1);
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
