// AVX-512 versions of the small kernels (rmsnorm, rope, silu*mul, softmax, one attention query, the
// bandwidth probe) and the two AVX-512 kernel tables. Element-wise kernels run their tail through the same
// vector code under a mask, so an element's result never depends on where it sits in the array; reductions
// use the canonical order of simd_avx512.h. Cost: all of these are memory- or exp-bound and small next to
// matmul; attention is ~2 FMA per (key, 16 dims) twice plus one exp per key.
// GCC 12 flags its own _mm512_undefined_*() inside the intrinsics headers (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "kernels/dispatch.h"
#include "kernels/simd_avx512.h"

namespace lp::kernels::avx512 {
namespace {

inline __m512 load_vec(const void* w, DType t, int64_t i, __mmask16 m) {
  switch (t) {
    case DType::kF16:
      return load_f16x16(static_cast<const uint16_t*>(w) + i, m);
    case DType::kBF16:
      return load_bf16x16(static_cast<const uint16_t*>(w) + i, m);
    default:
      return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + i);
  }
}

void rmsnorm_rows(const float* x, int64_t t0, int64_t t1, int64_t D, const void* w, DType w_dtype, float eps,
                  float* y) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * D;
    float* yr = y + t * D;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < D; i += 16) {
      __m512 v = _mm512_maskz_loadu_ps(tail_mask16(D - i), xr + i);
      acc = _mm512_fmadd_ps(v, v, acc);
    }
    __m512 r = _mm512_set1_ps(1.f / std::sqrt(reduce16(acc) / static_cast<float>(D) + eps));
    for (int64_t i = 0; i < D; i += 16) {
      __mmask16 m = tail_mask16(D - i);
      __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), r);
      _mm512_mask_storeu_ps(yr + i, m, _mm512_mul_ps(v, load_vec(w, w_dtype, i, m)));
    }
  }
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab) {
  const int half = head_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos_tab + static_cast<int64_t>(pos[t]) * half;
    const float* s = sin_tab + static_cast<int64_t>(pos[t]) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (int i = 0; i < half; i += 16) {
        __mmask16 m = tail_mask16(half - i);
        __m512 a = _mm512_maskz_loadu_ps(m, v + i), b = _mm512_maskz_loadu_ps(m, v + half + i);
        __m512 cv = _mm512_maskz_loadu_ps(m, c + i), sv = _mm512_maskz_loadu_ps(m, s + i);
        _mm512_mask_storeu_ps(v + i, m, _mm512_fmsub_ps(a, cv, _mm512_mul_ps(b, sv)));
        _mm512_mask_storeu_ps(v + half + i, m, _mm512_fmadd_ps(b, cv, _mm512_mul_ps(a, sv)));
      }
    }
  }
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask16(n - i);
    __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
    __m512 e = exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
  }
}

// x[i] = exp(x[i] - max), returns the sum (canonical order: 16 lanes over chunks, then reduce16).
float exp_shifted(float* x, int64_t n) {
  __m512 mv = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask16(n - i);
    mv = _mm512_mask_max_ps(mv, m, mv, _mm512_maskz_loadu_ps(m, x + i));
  }
  __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));  // max is exact in any order
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask16(n - i);
    __m512 e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx));
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
    _mm512_mask_storeu_ps(x + i, m, e);
  }
  return reduce16(sum);
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m512 inv = _mm512_set1_ps(1.f / exp_shifted(x, n));
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask16(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

// 16 lanes, each keeping its first strictly largest value and index (a NaN never compares greater), then
// detail::argmax_finish: the scalar loop's answer.
int64_t argmax(const float* x, int64_t n) {
  __m512 best = _mm512_set1_ps(-INFINITY);
  __m512i bidx = _mm512_set1_epi32(-1);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 gt = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
    best = _mm512_mask_mov_ps(best, gt, v);
    bidx = _mm512_mask_mov_epi32(bidx, gt, idx);
    idx = _mm512_add_epi32(idx, step);
  }
  alignas(64) float lane_val[16];
  alignas(64) int32_t lane_idx[16];
  _mm512_store_ps(lane_val, best);
  _mm512_store_si512(lane_idx, bidx);
  return detail::argmax_finish(x, n, i, lane_val, lane_idx, 16);
}

// Software prefetch of K (or V) rows about kAheadBytes ahead (at least kMinKeysAhead positions): a
// sequence's rows are contiguous only within one KV block, so the hardware prefetcher loses the stream at
// every block boundary. 8 KB rather than a fixed 16 rows (2 KB of BF16 rows at head_dim 64): batch-1
// decode step 0.972-0.975 x when the box streams ~85 GB/s (neutral at ~50), batch-16 step 0.958-0.961 x,
// in per-step A/B runs.
constexpr int64_t kAheadBytes = 8192;
constexpr int64_t kMinKeysAhead = 16;
class RowPrefetcher {
 public:
  RowPrefetcher(const PagedKV& c, const detail::AttnQuery& aq, const void* base)
      : walk_(c, aq),
        base_(static_cast<const char*>(base)),
        esize_(static_cast<int64_t>(dtype_size(c.dtype))),
        row_bytes_(c.head_dim * esize_),
        n_(aq.prefetch ? aq.n_keys : 0) {
    const int64_t ahead = std::max<int64_t>(kMinKeysAhead, kAheadBytes / row_bytes_);
    for (int64_t i = 0; i < ahead; ++i) step();
  }
  void step() {
    if (next_ >= n_) return;
    const char* row = base_ + walk_.offset() * esize_;
    for (int64_t b = 0; b < row_bytes_; b += 64) _mm_prefetch(row + b, _MM_HINT_T0);
    walk_.next();
    ++next_;
  }

 private:
  detail::KeyWalker walk_;
  const char* base_;
  int64_t esize_, row_bytes_, n_, next_ = 0;
};

// 16 cache elements from element i of a K or V array of dtype KD, as floats (masked lanes are 0).
template <DType KD>
inline __m512 load_kv16(const void* base, int64_t i, __mmask16 m) {
  if constexpr (KD == DType::kBF16) {
    return load_bf16x16(static_cast<const uint16_t*>(base) + i, m);
  } else if constexpr (KD == DType::kF16) {
    return load_f16x16(static_cast<const uint16_t*>(base) + i, m);
  } else {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
  }
}

// One query of one head over a cache of dtype KD. NC > 0: head_dim is at most 16 * NC, so q's chunks and
// the accumulators stay in registers (with a run-time count GCC kept them on the stack: a store per key per
// chunk); NC = 0: any head_dim. Every path does the same FMAs in the same order (q . k chunk by chunk into
// one 16-lane accumulator; V rows summed key by key), so the results are identical.
template <int NC, DType KD>
void attention_query_nc(const PagedKV& c, const detail::AttnQuery& aq, float* s) {
  constexpr int kCap = NC > 0 ? NC : detail::kMaxHeadDim / 16;
  const int hd = c.head_dim;
  const int nc = NC > 0 ? NC : (hd + 15) / 16;
  const int64_t n = aq.n_keys;
  __mmask16 mask[kCap];
  __m512 q[kCap];
#pragma GCC unroll 8
  for (int i = 0; i < nc; ++i) {
    mask[i] = tail_mask16(hd - i * 16);
    q[i] = _mm512_maskz_loadu_ps(mask[i], aq.q + i * 16);
  }
  auto dot = [&](int64_t k) {  // q . K row at element k, over head_dim, into one 16-lane accumulator
    __m512 acc = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < nc; ++i) acc = _mm512_fmadd_ps(q[i], load_kv16<KD>(c.k, k + i * 16, mask[i]), acc);
    return acc;
  };
  // Scores, 16 keys per transpose-add tree (bit-identical to one reduce16 per key).
  detail::KeyWalker keys(c, aq);
  RowPrefetcher kpf(c, aq, c.k);
  const __m512 scale = _mm512_set1_ps(aq.scale);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i, keys.next()) {
      kpf.step();
      acc[i] = dot(keys.offset());
    }
    _mm512_storeu_ps(s + j, _mm512_mul_ps(reduce16x16(acc), scale));
  }
  for (; j < n; ++j, keys.next()) s[j] = reduce16(dot(keys.offset())) * aq.scale;
  // Probabilities (unnormalized), then out = (sum_j e_j V_j) / sum_j e_j, keys in ascending order.
  RowPrefetcher vpf(c, aq, c.v);
  const float inv = 1.f / exp_shifted(s, n);
  __m512 acc[kCap];
#pragma GCC unroll 8
  for (int i = 0; i < nc; ++i) acc[i] = _mm512_setzero_ps();
  keys = detail::KeyWalker(c, aq);
  for (j = 0; j < n; ++j, keys.next()) {
    vpf.step();
    const int64_t v = keys.offset();
    const __m512 e = _mm512_set1_ps(s[j]);
#pragma GCC unroll 8
    for (int i = 0; i < nc; ++i) acc[i] = _mm512_fmadd_ps(e, load_kv16<KD>(c.v, v + i * 16, mask[i]), acc[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < nc; ++i)
    _mm512_mask_storeu_ps(aq.out + i * 16, mask[i], _mm512_mul_ps(acc[i], _mm512_set1_ps(inv)));
}

template <DType KD>
void attention_query_kd(const PagedKV& c, const detail::AttnQuery& aq, float* s) {
  switch ((c.head_dim + 15) / 16) {  // the common head sizes
    case 4:
      return attention_query_nc<4, KD>(c, aq, s);  // head_dim 64
    case 8:
      return attention_query_nc<8, KD>(c, aq, s);  // head_dim 128
    default:
      return attention_query_nc<0, KD>(c, aq, s);
  }
}

void attention_query(const PagedKV& c, const detail::AttnQuery& aq, float* s) {
  visit_dtype(c.dtype, [&](auto d) { attention_query_kd<d.value>(c, aq, s); });
}

// n floats, 16 at a time, rounded to bf16 (integer round to nearest even; NaN -> upper half | quiet bit) or
// f16 (vcvtps2ph, round to nearest even, overflow to inf, subnormals kept; NaN -> sign | 0x7e00), as
// core/dtype.h's scalar conversions.
void round_to(DType t, const float* src, void* dst, int64_t n) {
  if (t == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst);
  const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(m, src + i);
    const __m512i u = _mm512_castps_si512(x);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512i r;
    if (t == DType::kBF16) {
      r = _mm512_add_epi32(_mm512_add_epi32(u, half), _mm512_and_si512(_mm512_srli_epi32(u, 16), one));
      r = _mm512_srli_epi32(r, 16);
      r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    } else {
      r = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m512i qnan = _mm512_or_si512(
          _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7e00));
      r = _mm512_mask_mov_epi32(r, nan, qnan);
    }
    _mm256_mask_storeu_epi16(d + i, m, _mm512_cvtepi32_epi16(r));
  }
}

float read_sum(const float* p, size_t n, int pattern) {
  __m512 a[8];
  for (auto& v : a) v = _mm512_setzero_ps();
  size_t i = 0;
  // Sequential reads of each thread's part: 512 bytes per iteration, with (pattern 0) two T0 prefetches
  // 4 KB ahead, or all eight lines 8 KB ahead, T1 (pattern 1, as the GEMV does) or NTA (pattern 2).
  for (; i + 128 <= n; i += 128) {
    const char* c = reinterpret_cast<const char*>(p + i);
    if (pattern == 0) {
      _mm_prefetch(c + 4096, _MM_HINT_T0);
      _mm_prefetch(c + 4096 + 64, _MM_HINT_T0);
    } else {
      for (int l = 0; l < 8; ++l) {
        if (pattern == 1) {
          _mm_prefetch(c + 8192 + 64 * l, _MM_HINT_T1);
        } else {
          _mm_prefetch(c + 8192 + 64 * l, _MM_HINT_NTA);
        }
      }
    }
    for (int u = 0; u < 8; ++u) a[u] = _mm512_add_ps(a[u], _mm512_loadu_ps(p + i + 16 * u));
  }
  for (int u = 1; u < 8; ++u) a[0] = _mm512_add_ps(a[0], a[u]);
  float s = reduce16(a[0]);
  for (; i < n; ++i) s += p[i];
  return s;
}

bool wants_bf16_x(DType t) {
  return t == DType::kBF16;
}
bool wants_nothing(DType) {
  return false;
}

}  // namespace

}  // namespace lp::kernels::avx512

namespace lp::kernels::detail {

const IsaKernels& avx512bf16_kernels() {
  static const IsaKernels k{
      .isa = Isa::kAvx512Bf16,
      .name = "avx512bf16",
      .row_grain = 16,
      .wants_bf16_x = avx512::wants_bf16_x,
      .convert_x_bf16 = avx512::convert_x_bf16,
      .matmul_rows = avx512::matmul_rows_bf16dot,
      .matmul_rows_q = avx512::matmul_rows_vnni,
      .quantize_acts = avx512::quantize_acts,
      .rmsnorm_rows = avx512::rmsnorm_rows,
      .rope = avx512::rope,
      .silu_mul = avx512::silu_mul,
      .softmax = avx512::softmax,
      .argmax = avx512::argmax,
      .attention_query = avx512::attention_query,
      .round_to = avx512::round_to,
      .read_sum = avx512::read_sum,
  };
  return k;
}

// The same kernels where the CPU lacks AVX512_BF16: BF16 weights are widened to f32 and multiplied by FMA.
const IsaKernels& avx512_kernels() {
  static const IsaKernels k = [] {
    IsaKernels t = avx512bf16_kernels();
    t.isa = Isa::kAvx512;
    t.name = "avx512";
    t.wants_bf16_x = avx512::wants_nothing;
    t.convert_x_bf16 = nullptr;
    t.matmul_rows = avx512::matmul_rows_fma;
    if (!__builtin_cpu_supports("avx512vnni")) t.matmul_rows_q = scalar_kernels().matmul_rows_q;
    return t;
  }();
  return k;
}

}  // namespace lp::kernels::detail
