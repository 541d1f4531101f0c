// The public kernels: run-time ISA choice, argument checks, and the split of work over the compute pool.
// The per-ISA arithmetic lives in matmul_<isa>.cpp / ops_<isa>.cpp; the scalar ISA is the reference itself.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/buffer.h"
#include "core/check.h"
#include "core/log.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"

namespace lp::kernels {
namespace detail {
namespace {

// Scalar ISA: the reference, on row / token ranges.
void scalar_matmul_rows(const MatmulArgs& a, int64_t n0, int64_t n1) {
  MatView w = a.W;
  w.data =
      static_cast<const char*>(a.W.data) + n0 * a.W.row_stride * static_cast<int64_t>(dtype_size(w.dtype));
  w.rows = n1 - n0;
  ref::matmul(a.x, a.T, a.ldx, w, a.bias ? a.bias + n0 : nullptr, a.y + n0, a.ldy, a.accumulate);
}
void scalar_matmul_rows_q(const MatmulArgs& a, int64_t n0, int64_t n1) {
  ref::matmul_quant(*a.qa, a.T, a.W, n0, n1, a.bias, a.y, a.ldy, a.accumulate);
}
void scalar_rmsnorm_rows(const float* x, int64_t t0, int64_t t1, int64_t D, const void* w, DType w_dtype,
                         float eps, float* y) {
  ref::rmsnorm(x + t0 * D, t1 - t0, D, w, w_dtype, eps, y + t0 * D);
}
void scalar_attention_query(const PagedKV& c, const AttnQuery& q, float*) {
  ref::attention_query(c, q.block_table, q.n_keys, q.kv_head, q.scale, q.q, q.out);
}
void scalar_round_to(DType t, const float* src, void* dst, int64_t n) {
  from_f32(t, src, dst, static_cast<size_t>(n));
}
float scalar_read_sum(const float* p, size_t n, int) {
  float s[8] = {};
  for (size_t i = 0; i < n; ++i) s[i & 7] += p[i];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
bool wants_nothing(DType) {
  return false;
}

Isa best_isa() {
  Isa best = Isa::kScalar;
  for (Isa i : supported_isas()) best = i;
  return best;
}

Isa choose_isa() {
  Isa best = best_isa();
  const char* env = std::getenv("LORAPLEX_ISA");
  if (!env || !*env) return best;
  std::string_view v(env);
  Isa want = v == "scalar"       ? Isa::kScalar
             : v == "avx2"       ? Isa::kAvx2
             : v == "avx512"     ? Isa::kAvx512
             : v == "avx512bf16" ? Isa::kAvx512Bf16
                                 : best;
  if (want == best && v != kernels_for(best).name) {
    log_warn("LORAPLEX_ISA={} is not one of scalar|avx2|avx512|avx512bf16; using {}", v,
             kernels_for(best).name);
  } else if (!isa_supported(want)) {
    log_warn("LORAPLEX_ISA={} is not supported by this CPU; using {}", v, kernels_for(best).name);
    want = best;
  }
  return want;
}

}  // namespace

const IsaKernels& scalar_kernels() {
  static const IsaKernels k{
      .isa = Isa::kScalar,
      .name = "scalar",
      .row_grain = 4,
      .wants_bf16_x = wants_nothing,
      .convert_x_bf16 = nullptr,
      .matmul_rows = scalar_matmul_rows,
      .matmul_rows_q = scalar_matmul_rows_q,
      .quantize_acts = ref::quantize_acts,
      .rmsnorm_rows = scalar_rmsnorm_rows,
      .rope = ref::rope,
      .silu_mul = ref::silu_mul,
      .softmax = ref::softmax,
      .argmax = ref::argmax,
      .attention_query = scalar_attention_query,
      .round_to = scalar_round_to,
      .read_sum = scalar_read_sum,
  };
  return k;
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return avx2;
    case Isa::kAvx512:
      return avx512;
    case Isa::kAvx512Bf16:
      return avx512 && __builtin_cpu_supports("avx512bf16");
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16})
    if (isa_supported(i)) out.push_back(i);
  return out;
}

const IsaKernels& kernels_for(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return scalar_kernels();
    case Isa::kAvx2:
      return avx2_kernels();
    case Isa::kAvx512:
      return avx512_kernels();
    case Isa::kAvx512Bf16:
      return avx512bf16_kernels();
  }
  return scalar_kernels();
}

const IsaKernels& active() {
  static const IsaKernels& k = kernels_for(choose_isa());
  return k;
}

namespace {

// Rows W takes in one matmul_multi dispatch: each matrix starts on a multiple of `grain`.
int64_t padded_rows(const MatView& W, int64_t grain) {
  return (W.rows + grain - 1) / grain * grain;
}

// Rows of several matrices concatenated, each starting on a multiple of `grain` (the layout of one
// matmul_multi dispatch). Row r's address, for prefetching; null past the end.
template <class GetW>
const char* concat_row_address(size_t n_mats, GetW get, int64_t grain, int64_t r) {
  int64_t base = 0;
  for (size_t i = 0; i < n_mats; ++i) {
    const MatView& W = get(i);
    const int64_t padded = padded_rows(W, grain);
    if (r < base + padded) {
      const int64_t row = std::min(r - base, W.rows);  // in the padding: the next matrix's start is close
      return static_cast<const char*>(W.data) + row * row_bytes(W);
    }
    base += padded;
  }
  return nullptr;
}

template <class GetW>
int64_t concat_rows(size_t n_mats, GetW get, int64_t grain) {
  int64_t total = 0;
  for (size_t i = 0; i < n_mats; ++i) total += padded_rows(get(i), grain);
  return total;
}

}  // namespace

void matmul_multi_with(const IsaKernels& k, ComputePool& pool, const float* x, int64_t T, int64_t ldx,
                       std::span<const MatmulOut> outs, std::span<const MatView> next) {
  if (T == 0 || outs.empty()) return;
  const int64_t K = outs[0].W.cols;
  bool bf16x = false;
  for (const MatmulOut& o : outs) {
    const MatView& W = o.W;
    LP_CHECK(T >= 0 && W.rows >= 0 && W.cols == K, "matmul: bad shape T={} W=({}, {}) K={}", T, W.rows,
             W.cols, K);
    LP_CHECK(W.row_stride >= W.cols && ldx >= W.cols && o.ldy >= W.rows, "matmul: strides too small");
    bf16x |= W.format == WeightFormat::kDense && k.wants_bf16_x(W.dtype);
  }
  const int64_t grain = k.row_grain;
  auto out_w = [&](size_t i) -> const MatView& { return outs[i].W; };
  auto next_w = [&](size_t i) -> const MatView& { return next[i]; };
  const int64_t total_rows = concat_rows(outs.size(), out_w, grain);
  if (total_rows == 0) return;
  // x rounded to bf16 once per call for all outputs (per token, so still batch invariant).
  thread_local Buffer<uint16_t> xb;  // (T, ldxb), the calling thread's; workers only read it
  int64_t ldxb = 0;
  if (bf16x) {
    ldxb = (std::max<int64_t>(K, 1) + 31) / 32 * 32;
    size_t need = static_cast<size_t>(T * ldxb);
    if (xb.size() < need) xb.resize(need);
    // Over the pool for long prompts (the rounding is per element: any split gives the same bits).
    uint16_t* dst = xb.data();
    pool.parallel_for(T, 64, [&](int64_t b, int64_t e) {
      k.convert_x_bf16(x + b * ldx, e - b, ldx, K, dst + b * ldxb, ldxb);
    });
  }
  const uint16_t* xbp = bf16x ? xb.data() : nullptr;
  // Quantized outputs: x quantized once per activation block size (64 or 128) they use.
  thread_local QuantActsBuffer qbuf[2];  // the calling thread's, by block size 64, 128
  QuantActs qacts[2];
  bool have_q[2] = {false, false};
  for (const MatmulOut& o : outs) {
    if (o.W.format == WeightFormat::kDense) continue;
    const int bs = act_block(o.W), i = bs == 128;
    if (have_q[i]) continue;
    have_q[i] = true;
    qacts[i] = qbuf[i].prepare(T, K, bs);
    const QuantActs qa = qacts[i];
    pool.parallel_for(T, 16, [&](int64_t b, int64_t e) { k.quantize_acts(x, b, e, ldx, K, qa); });
  }
  // One dispatch over the concatenated (grain-aligned) rows of every output; a chunk may span two matrices.
  // Few tokens (the GEMV path): each chunk restarts a weight stream, so fewer, longer chunks (2 per thread:
  // still some balance when a thread is slow). Batch-1 decode step, smol at ctx 256, per-step A/B against
  // 4 per thread: 0.981-0.985 x (1 per thread: 0.976-0.978 x, but a descheduled worker would hold half).
  const bool gemv = T < kGemmMinTokens;
  const int chunks_per_thread = gemv ? 2 : 4;
  const int64_t chunks = pool.num_chunks(total_rows, grain, chunks_per_thread);
  // Where a chunk's stream goes on: threads tend to take chunks round-robin (the caller claims chunk 0 at
  // once, a spinning worker chunk 1, and so on), so after chunk c a thread likely takes chunk c + threads
  // here, or chunk c % threads of the next call.
  const int64_t nt = pool.size();
  const int64_t next_rows = gemv && !next.empty() ? concat_rows(next.size(), next_w, grain) : 0;
  const int64_t next_chunks = next_rows > 0 ? pool.num_chunks(next_rows, grain, chunks_per_thread) : 0;
  auto successor = [&](int64_t c) -> const char* {
    if (!gemv) return nullptr;
    if (c + nt < chunks) {
      return concat_row_address(outs.size(), out_w, grain,
                                ComputePool::chunk_bounds(total_rows, grain, chunks, c + nt).first);
    }
    if (next_chunks == 0) return nullptr;
    const int64_t nc = c % nt < next_chunks ? c % nt : 0;
    return concat_row_address(next.size(), next_w, grain,
                              ComputePool::chunk_bounds(next_rows, grain, next_chunks, nc).first);
  };
  pool.run_chunks(chunks, [&](int64_t c, int64_t nc) {
    const auto [b, e] = ComputePool::chunk_bounds(total_rows, grain, nc, c);
    const char* after = successor(c);
    int64_t base = 0;
    for (size_t i = 0; i < outs.size() && base < e; ++i) {
      const MatmulOut& o = outs[i];
      const int64_t padded = padded_rows(o.W, grain);
      const int64_t lo = std::max(b, base), hi = std::min({e, base + padded, base + o.W.rows});
      if (lo < hi) {
        // The stream runs on into the next matrix of this chunk, or else into the chunk's successor.
        const bool more_here = i + 1 < outs.size() && base + padded < e;
        MatmulArgs a{x,
                     k.wants_bf16_x(o.W.dtype) ? xbp : nullptr,
                     T,
                     ldx,
                     ldxb,
                     o.W,
                     o.bias,
                     o.y,
                     o.ldy,
                     o.accumulate,
                     more_here ? static_cast<const char*>(outs[i + 1].W.data) : after};
        if (o.W.format != WeightFormat::kDense) {
          a.xb = nullptr;
          a.qa = &qacts[act_block(o.W) == 128];
          k.matmul_rows_q(a, lo - base, hi - base);
        } else {
          k.matmul_rows(a, lo - base, hi - base);
        }
      }
      base += padded;
    }
  });
}

void matmul_with(const IsaKernels& k, ComputePool& pool, const float* x, int64_t T, int64_t ldx,
                 const MatView& W, const float* bias, float* y, int64_t ldy, bool accumulate,
                 std::span<const MatView> next) {
  MatmulOut o{W, bias, y, ldy, accumulate};
  matmul_multi_with(k, pool, x, T, ldx, std::span<const MatmulOut>(&o, 1), next);
}

void rmsnorm_with(const IsaKernels& k, ComputePool& pool, const float* x, int64_t T, int64_t D, const void* w,
                  DType w_dtype, float eps, float* y) {
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1));
  pool.parallel_for(T, grain, [&](int64_t b, int64_t e) { k.rmsnorm_rows(x, b, e, D, w, w_dtype, eps, y); });
}

void silu_mul_with(const IsaKernels& k, ComputePool& pool, const float* gate, const float* up, float* out,
                   int64_t n) {
  pool.parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) { k.silu_mul(gate + b, up + b, out + b, e - b); });
}

void attention_with(const IsaKernels& k, ComputePool& pool, const float* q, const PagedKV& cache,
                    std::span<const AttnSeq> seqs, int n_heads, float scale, float* out) {
  const int hd = cache.head_dim;
  LP_CHECK(cache.n_kv_heads > 0 && n_heads % cache.n_kv_heads == 0, "attention: {} heads, {} kv heads",
           n_heads, cache.n_kv_heads);
  LP_CHECK(hd > 0 && hd <= kMaxHeadDim && cache.block_size > 0, "attention: head_dim {} block_size {}", hd,
           cache.block_size);
  const int group = n_heads / cache.n_kv_heads;
  // Work items: (sequence, head, block of queries). Each query is computed alone (keys 0..p in order), so
  // who computes it and with which neighbours never changes its result.
  struct Item {
    int32_t seq, head, i0, i1;
  };
  constexpr int32_t kQueryBlock = 16;
  thread_local std::vector<Item> items_buf;  // (caller's) reused between calls
  std::vector<Item>& items = items_buf;      // a reference, so the workers see the caller's list
  items.clear();
  int32_t max_ctx = 0;
  bool all_decode = true;
  for (int32_t s = 0; s < static_cast<int32_t>(seqs.size()); ++s) {
    const AttnSeq& sq = seqs[s];
    LP_CHECK(sq.q_len >= 0 && sq.ctx_len >= sq.q_len, "attention: q_len {} ctx_len {}", sq.q_len, sq.ctx_len);
    max_ctx = std::max(max_ctx, sq.ctx_len);
    all_decode &= sq.q_len <= 1;
    for (int32_t i0 = 0; i0 < sq.q_len; i0 += kQueryBlock)
      for (int h = 0; h < n_heads; ++h) items.push_back({s, h, i0, std::min(sq.q_len, i0 + kQueryBlock)});
  }
  // Decode steps of many sequences: a thread claims the `group` heads that share one KV head of one
  // sequence together, so it reads those K/V rows from memory once and then from its own cache (claimed one
  // by one, the heads of a group land on different cores, each fetching the rows again). Batch-16 decode
  // step at ctx 256: 0.939-0.962 x in per-step A/B runs. Too few groups to balance (batch 1: 3 groups on 2
  // threads) keep one-head items.
  const bool by_group = all_decode && items.size() >= static_cast<size_t>(4 * group * pool.size());
  // Longest contexts first, for balance (causal prefill: later query blocks cost more). Among equals: by
  // group, each sequence's heads in order (a claim of `group` items is then one KV head); else the heads of
  // different KV heads first (0, g, 2g, ..., then 1, g + 1, ...), so threads starting together fetch
  // different K/V from memory while the later heads of a group find theirs in cache (batch-1 decode step at
  // ctx 256: 1-2% faster in per-step A/B runs). The order only decides who computes what first, never a
  // result, so a plain (allocation-free) sort will do.
  std::sort(items.begin(), items.end(), [&](const Item& x, const Item& y) {
    const int64_t cx = seqs[x.seq].ctx_len - seqs[x.seq].q_len + x.i1;
    const int64_t cy = seqs[y.seq].ctx_len - seqs[y.seq].q_len + y.i1;
    if (cx != cy) return cx > cy;
    if (by_group) return std::pair(x.seq, x.head) < std::pair(y.seq, y.head);
    return std::pair(x.head % group, x.head / group) < std::pair(y.head % group, y.head / group);
  });
  const size_t unit = by_group ? static_cast<size_t>(group) : 1;  // items per claim
  std::atomic<size_t> next{0};
  auto work = [&](int, int) {
    thread_local std::vector<float> scores;  // (max_ctx) scratch
    if (scores.size() < static_cast<size_t>(max_ctx) + 16) scores.resize(max_ctx + 16);
    for (size_t u; (u = next.fetch_add(1, std::memory_order_relaxed)) * unit < items.size();) {
      for (size_t i = u * unit; i < std::min(items.size(), (u + 1) * unit); ++i) {
        const Item& it = items[i];
        const AttnSeq& sq = seqs[it.seq];
        for (int32_t qi = it.i0; qi < it.i1; ++qi) {
          int64_t off = (static_cast<int64_t>(sq.q_begin + qi) * n_heads + it.head) * hd;
          // Only the item's first query fetches K/V from memory; the next ones (one more key each) find them
          // in cache.
          AttnQuery aq{q + off,         out + off, sq.block_table, sq.ctx_len - sq.q_len + qi + 1,
                       it.head / group, scale,     qi == it.i0};
          k.attention_query(cache, aq, scores.data());
        }
      }
    }
  };
  if (items.size() <= 1) {
    work(0, 1);
  } else {
    pool.run(work);
  }
}

}  // namespace detail

const char* isa_name() {
  return detail::active().name;
}

bool fast_quantized_matmul() {
  return detail::active().matmul_rows_q != detail::scalar_kernels().matmul_rows_q;
}

void matmul_multi(ComputePool& pool, const float* x, int64_t T, int64_t ldx, std::span<const MatmulOut> outs,
                  std::span<const MatView> next) {
  detail::matmul_multi_with(detail::active(), pool, x, T, ldx, outs, next);
}

void matmul(ComputePool& pool, const float* x, int64_t T, int64_t ldx, const MatView& W, const float* bias,
            float* y, int64_t ldy, bool accumulate, std::span<const MatView> next) {
  detail::matmul_with(detail::active(), pool, x, T, ldx, W, bias, y, ldy, accumulate, next);
}

void rmsnorm(ComputePool& pool, const float* x, int64_t T, int64_t D, const void* w, DType w_dtype, float eps,
             float* y) {
  detail::rmsnorm_with(detail::active(), pool, x, T, D, w, w_dtype, eps, y);
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab) {
  LP_CHECK(head_dim % 2 == 0, "rope: odd head_dim {}", head_dim);
  detail::active().rope(x, T, n_heads, head_dim, pos, cos_tab, sin_tab);
}

void silu_mul(ComputePool& pool, const float* gate, const float* up, float* out, int64_t n) {
  detail::silu_mul_with(detail::active(), pool, gate, up, out, n);
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];  // exact per element; the compiler vectorizes it
}

void softmax(float* x, int64_t n) {
  detail::active().softmax(x, n);
}

int64_t argmax(const float* x, int64_t n) {
  LP_CHECK(n >= 1, "argmax of {} elements", n);
  return detail::active().argmax(x, n);
}

void embed(const MatView& table, const int32_t* ids, int64_t T, float* out) {
  const size_t esize = dtype_size(table.dtype);
  for (int64_t t = 0; t < T; ++t) {
    LP_CHECK(ids[t] >= 0 && ids[t] < table.rows, "embed: token id {} out of range [0, {})", ids[t],
             table.rows);
    const char* row = static_cast<const char*>(table.data) + ids[t] * table.row_stride * esize;
    to_f32(table.dtype, row, out + t * table.cols, static_cast<size_t>(table.cols));
  }
}

void kv_write(const PagedKV& cache, const float* k_new, const float* v_new, const int32_t* slot, int64_t T) {
  detail::kv_write_with(detail::active(), cache, k_new, v_new, slot, T);
}

void detail::kv_write_with(const IsaKernels& k, const PagedKV& cache, const float* k_new, const float* v_new,
                           const int32_t* slot, int64_t T) {
  const int64_t row = static_cast<int64_t>(cache.head_dim);
  const int64_t esize = static_cast<int64_t>(dtype_size(cache.dtype));
  for (int64_t t = 0; t < T; ++t) {
    LP_CHECK(slot[t] >= 0, "kv_write: negative slot {}", slot[t]);
    int64_t b = slot[t] / cache.block_size, s = slot[t] % cache.block_size;
    for (int g = 0; g < cache.n_kv_heads; ++g) {
      int64_t dst = ((b * cache.n_kv_heads + g) * cache.block_size + s) * row * esize;
      int64_t src = (t * cache.n_kv_heads + g) * row;
      k.round_to(cache.dtype, k_new + src, static_cast<char*>(cache.k) + dst, row);
      k.round_to(cache.dtype, v_new + src, static_cast<char*>(cache.v) + dst, row);
    }
  }
}

void attention(ComputePool& pool, const float* q, const PagedKV& cache, std::span<const AttnSeq> seqs,
               int n_heads, float scale, float* out) {
  detail::attention_with(detail::active(), pool, q, cache, seqs, n_heads, scale, out);
}

double measure_read_bandwidth(ComputePool& pool, size_t bytes, int repeats) {
  const detail::IsaKernels& k = detail::active();
  const size_t n = std::max<size_t>(bytes / sizeof(float), 1024);
  Buffer<float> buf(n);
  // Thread i owns floats [part(i), part(i+1)), 64-byte aligned; it touches them first, then reads them.
  const int nt = pool.size();
  auto part = [&](int i) { return std::min(n, (n * i / nt + 15) / 16 * 16); };
  pool.run(
      [&](int t, int) { std::memset(buf.data() + part(t), 0, (part(t + 1) - part(t)) * sizeof(float)); });
  std::vector<float> sink(nt);
  double best = 0;
  // The best of the read patterns: which one is faster depends on the host and its state, and the bound
  // should be the fastest streaming read the machine offers.
  for (int r = 0; r < std::max(repeats, 1); ++r) {
    for (int pattern : {0, 1, 2}) {
      auto t0 = std::chrono::steady_clock::now();
      pool.run(
          [&](int t, int) { sink[t] += k.read_sum(buf.data() + part(t), part(t + 1) - part(t), pattern); });
      double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, static_cast<double>(n * sizeof(float)) / sec);
    }
  }
  volatile float keep = sink[0];
  (void)keep;
  return best;
}

}  // namespace lp::kernels
