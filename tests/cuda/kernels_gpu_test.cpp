// The CUDA kernels (cuda/kernels.h) against the CPU scalar references (kernels/reference.h and the LoRA
// reference of kernels/lora_internal.h) over awkward shapes: batches of 1, 3, 7 and 33 tokens, ranks 8, 16
// and 64 mixed in one batch with base-only tokens and stacked adapters, head sizes 64, 128 and 256, GQA,
// paged KV with contexts that end mid-block, prefill chunks and decode tokens in one attention launch, and
// F32 / BF16 / F16 weights and caches. Outputs are poisoned (NaN) before each run and memory nobody may read
// (past a sequence's context, LoRA rank padding, row padding) holds NaN, so an unwritten element or a stray
// read fails. Without a usable device every test is skipped, saying why.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/step_types.h"
#include "kernels/lora_internal.h"
#include "kernels/reference.h"

namespace lp::cuda {
namespace {

#define SKIP_WITHOUT_DEVICE()                                                        \
  do {                                                                               \
    std::string why;                                                                 \
    if (!lp::cuda::probe_device(0, nullptr, &why)) GTEST_SKIP() << "no CUDA device: " << why; \
  } while (0)

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
const DType kDtypes[] = {DType::kF32, DType::kBF16, DType::kF16};

// Device memory for one test: cudaMalloc'd, freed on scope exit.
class DevBuf {
 public:
  explicit DevBuf(size_t bytes) : bytes_(bytes) { check_cuda(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), "cudaMalloc"); }
  template <class T>
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size() * sizeof(T)) {
    upload(host.data());
  }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  template <class T = void>
  T* as() const { return static_cast<T*>(p_); }
  void upload(const void* src) {
    if (bytes_ > 0) check_cuda(cudaMemcpy(p_, src, bytes_, cudaMemcpyHostToDevice), "upload");
  }
  // All bytes 0xFF: NaN in F32, BF16 and F16 alike.
  void poison() { check_cuda(cudaMemset(p_, 0xFF, bytes_), "poison"); }
  template <class T>
  std::vector<T> download() const {
    check_cuda(cudaDeviceSynchronize(), "kernels");
    std::vector<T> out(bytes_ / sizeof(T));
    if (bytes_ > 0) check_cuda(cudaMemcpy(out.data(), p_, bytes_, cudaMemcpyDeviceToHost), "download");
    return out;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Random values in [lo, hi] kept away from 0 (zeros hide unwritten outputs and wrong indexing).
std::vector<float> random_vec(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    x = d(rng);
    if (std::fabs(x) < 1e-3f) x = 0.5f * hi;
  }
  return v;
}

std::vector<uint8_t> to_bytes(const std::vector<float>& f, DType d) {
  std::vector<uint8_t> b(f.size() * dtype_size(d));
  from_f32(d, f.data(), b.data(), f.size());
  return b;
}
std::vector<float> to_floats(const std::vector<uint8_t>& b, DType d) {
  std::vector<float> f(b.size() / dtype_size(d));
  to_f32(d, b.data(), f.data(), f.size());
  return f;
}
std::vector<float> round_to(const std::vector<float>& f, DType d) { return to_floats(to_bytes(f, d), d); }

// ||got - want|| / ||want||; infinite when `got` holds a NaN (an unwritten or poisoned element).
double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// The tolerance of a result computed in f32 (vs the reference's double) and then stored in `out`: f32 sums
// of a few hundred terms stay near 1e-6 relative; a BF16 output is rounded to 8 significant bits (relative
// error up to 2^-9 per element) and F16 to 11 bits (2^-12), which dominate then.
double tol_for(DType out) { return out == DType::kF32 ? 1e-5 : out == DType::kBF16 ? 1e-2 : 2e-3; }

void sync() { check_cuda(cudaDeviceSynchronize(), "kernels"); }

// ---------------------------------------------------------------- element-wise kernels

TEST(CudaKernels, EmbedCopiesRowsExactly) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(1);
  const int64_t vocab = 50;
  for (DType dt : kDtypes)
    for (int64_t D : {64, 200})
      for (int64_t T : {1, 3, 7, 33}) {
        const auto table = to_bytes(random_vec(rng, vocab * D), dt);
        std::vector<int32_t> ids(T);
        for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
        std::vector<float> want(T * D);
        kernels::ref::embed(kernels::MatView{table.data(), dt, vocab, D, D}, ids.data(), T, want.data());
        DevBuf d_table(table), d_ids(ids), d_out(T * D * sizeof(float));
        d_out.poison();
        embed(d_table.as(), dt, D, d_ids.as<int32_t>(), T, d_out.as<float>(), nullptr);
        const auto got = d_out.download<float>();
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float)))
            << dtype_name(dt) << " D " << D << " T " << T;
      }
}

TEST(CudaKernels, RmsNormMatchesReference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(2);
  for (DType wt : kDtypes)
    for (DType yt : kDtypes)
      for (int64_t D : {64, 1000})
        for (int64_t T : {1, 3, 7, 33}) {
          const auto x = random_vec(rng, T * D, -3.f, 3.f);
          const auto w = to_bytes(random_vec(rng, D, 0.5f, 1.5f), wt);
          std::vector<float> all(T * D);
          kernels::ref::rmsnorm(x.data(), T, D, w.data(), wt, 1e-5f, all.data());
          // Every row, then a gathered subset in another order (the final norm of the rows that sample).
          for (bool gather : {false, true}) {
            std::vector<int32_t> rows;
            for (int32_t r = 0; r < T; ++r)
              if (!gather || r % 2 == 0) rows.push_back(r);
            if (gather) std::reverse(rows.begin(), rows.end());
            const int64_t R = static_cast<int64_t>(rows.size());
            std::vector<float> want(R * D);
            for (int64_t r = 0; r < R; ++r) std::copy_n(all.data() + rows[r] * D, D, want.data() + r * D);
            DevBuf d_x(x), d_w(w), d_rows(rows), d_y(R * D * dtype_size(yt));
            d_y.poison();
            rmsnorm(d_x.as<float>(), gather ? d_rows.as<int32_t>() : nullptr, R, D, d_w.as(), wt, 1e-5f, d_y.as(),
                    yt, nullptr);
            const auto got = to_floats(d_y.download<uint8_t>(), yt);
            EXPECT_LE(rel_l2(got, want), tol_for(yt))
                << "w " << dtype_name(wt) << " y " << dtype_name(yt) << " D " << D << " T " << T << " gather " << gather;
          }
        }
}

TEST(CudaKernels, AddBiasAddsExactlyAndKeepsRowPadding) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(3);
  for (int64_t T : {1, 3, 7, 33}) {
    const int64_t N = 77, ldy = 80;
    auto y = random_vec(rng, T * ldy);
    const auto bias = random_vec(rng, N);
    auto want = y;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) want[t * ldy + n] += bias[n];
    DevBuf d_y(y), d_b(bias);
    add_bias(d_y.as<float>(), T, N, ldy, d_b.as<float>(), nullptr);
    const auto got = d_y.download<float>();
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float))) << "T " << T;
  }
}

TEST(CudaKernels, RopeMatchesReference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(4);
  const int max_pos = 500, n_heads = 3;
  for (int hd : {64, 128})
    for (int64_t T : {1, 3, 7, 33}) {
      const int half = hd / 2;
      std::vector<float> cos_tab(max_pos * half), sin_tab(max_pos * half);
      for (int p = 0; p < max_pos; ++p)
        for (int i = 0; i < half; ++i) {
          const double a = p * std::pow(10000.0, -2.0 * i / hd);
          cos_tab[p * half + i] = static_cast<float>(std::cos(a));
          sin_tab[p * half + i] = static_cast<float>(std::sin(a));
        }
      std::vector<int32_t> pos(T);
      for (auto& p : pos) p = static_cast<int32_t>(rng() % max_pos);
      const auto x = random_vec(rng, T * n_heads * hd, -2.f, 2.f);
      auto want = x;
      kernels::ref::rope(want.data(), T, n_heads, hd, pos.data(), cos_tab.data(), sin_tab.data());
      DevBuf d_x(x), d_pos(pos), d_cos(cos_tab), d_sin(sin_tab);
      rope(d_x.as<float>(), T, n_heads, hd, d_pos.as<int32_t>(), d_cos.as<float>(), d_sin.as<float>(), nullptr);
      EXPECT_LE(rel_l2(d_x.download<float>(), want), 1e-6) << "head_dim " << hd << " T " << T;
    }
}

TEST(CudaKernels, SiluMulMatchesReference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(5);
  for (DType ot : kDtypes)
    for (int64_t n : {1, 3, 7, 33 * 171}) {
      const auto gate = random_vec(rng, n, -8.f, 8.f), up = random_vec(rng, n, -2.f, 2.f);
      std::vector<float> want(n);
      kernels::ref::silu_mul(gate.data(), up.data(), want.data(), n);
      DevBuf d_g(gate), d_u(up), d_o(n * dtype_size(ot));
      d_o.poison();
      silu_mul(d_g.as<float>(), d_u.as<float>(), d_o.as(), ot, n, nullptr);
      EXPECT_LE(rel_l2(to_floats(d_o.download<uint8_t>(), ot), want), tol_for(ot))
          << dtype_name(ot) << " n " << n;
    }
}

TEST(CudaKernels, KvWriteMatchesReferenceBitForBit) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(6);
  const int n_blocks = 9, bs = 16, n_kv = 2;
  for (DType dt : kDtypes)
    for (int hd : {64, 128})
      for (int64_t T : {1, 3, 7, 33}) {
        const size_t elems = static_cast<size_t>(n_blocks) * n_kv * bs * hd;
        // The whole cache starts with the same random contents on both sides: only the written slots change.
        const auto init_k = to_bytes(random_vec(rng, elems), dt), init_v = to_bytes(random_vec(rng, elems), dt);
        std::vector<int32_t> all(n_blocks * bs);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        const std::vector<int32_t> slot(all.begin(), all.begin() + T);
        const auto k_new = random_vec(rng, T * n_kv * hd), v_new = random_vec(rng, T * n_kv * hd);
        auto want_k = init_k, want_v = init_v;
        kernels::ref::kv_write(kernels::PagedKV{want_k.data(), want_v.data(), bs, n_kv, hd, dt}, k_new.data(),
                               v_new.data(), slot.data(), T);
        DevBuf d_k(init_k), d_v(init_v), d_kn(k_new), d_vn(v_new), d_slot(slot);
        kv_write(PagedKvDev{d_k.as(), d_v.as(), dt, bs, n_kv, hd}, d_kn.as<float>(), d_vn.as<float>(),
                 d_slot.as<int32_t>(), T, nullptr);
        EXPECT_EQ(d_k.download<uint8_t>(), want_k) << dtype_name(dt) << " hd " << hd << " T " << T;
        EXPECT_EQ(d_v.download<uint8_t>(), want_v) << dtype_name(dt) << " hd " << hd << " T " << T;
      }
}

TEST(CudaKernels, ZeroSizedCallsLaunchNothing) {
  SKIP_WITHOUT_DEVICE();
  embed(nullptr, DType::kBF16, 64, nullptr, 0, nullptr, nullptr);
  rmsnorm(nullptr, nullptr, 0, 64, nullptr, DType::kBF16, 1e-5f, nullptr, DType::kBF16, nullptr);
  add_bias(nullptr, 0, 64, 64, nullptr, nullptr);
  rope(nullptr, 0, 4, 64, nullptr, nullptr, nullptr, nullptr);
  silu_mul(nullptr, nullptr, nullptr, DType::kF32, 0, nullptr);
  kv_write(PagedKvDev{nullptr, nullptr, DType::kBF16, 16, 2, 64}, nullptr, nullptr, nullptr, 0, nullptr);
  attention(PagedKvDev{nullptr, nullptr, DType::kBF16, 16, 2, 64}, nullptr, {}, nullptr, nullptr, 8, 0.125f,
            nullptr, DType::kF32, nullptr);
  const LoraTargetDev t{};
  lora_shrink(LoraPlanDev{}, nullptr, DType::kBF16, 64, 64, std::span(&t, 1), DType::kBF16, 16, nullptr, nullptr);
  lora_expand(LoraPlanDev{}, std::span(&t, 1), DType::kBF16, 16, nullptr, nullptr);
  sync();
  check_launch("zero-sized calls");
}

// ---------------------------------------------------------------- attention

struct SeqShape {
  int q_len, ctx_len;
};

// A paged cache holding `shapes`' contexts and their queries. Blocks are handed out in a shuffled order, so
// sequences interleave in the cache; every cache position that no sequence owns (unused blocks, the tail of
// each last block) holds NaN, so reading it would poison the row.
struct AttnFixture {
  int n_heads, n_kv, hd, bs = 16;
  DType cache_dt;
  std::vector<uint8_t> kb, vb;
  std::vector<int32_t> tables;
  std::vector<AttnSeqDev> seqs;
  std::vector<float> q;  // (rows, n_heads, hd)
  int32_t rows = 0;
  float scale;

  AttnFixture(int heads, int kv, int head_dim, DType dt, const std::vector<SeqShape>& shapes, std::mt19937& rng)
      : n_heads(heads), n_kv(kv), hd(head_dim), cache_dt(dt), scale(1.f / std::sqrt(static_cast<float>(head_dim))) {
    int n_blocks = 3;  // spare blocks nobody owns
    for (const SeqShape& s : shapes) n_blocks += (s.ctx_len + bs - 1) / bs;
    std::vector<int32_t> phys(n_blocks);
    std::iota(phys.begin(), phys.end(), 0);
    std::shuffle(phys.begin(), phys.end(), rng);
    const size_t elems = static_cast<size_t>(n_blocks) * n_kv * bs * hd;
    std::vector<float> kf(elems, kNaN), vf(elems, kNaN);
    std::uniform_real_distribution<float> uk(-1.f, 1.f), uv(-2.f, 2.f);
    for (const SeqShape& s : shapes) {
      AttnSeqDev d;
      d.q_begin = rows;
      d.q_len = s.q_len;
      d.ctx_len = s.ctx_len;
      d.table_begin = static_cast<int32_t>(tables.size());
      const int nb = (s.ctx_len + bs - 1) / bs;
      for (int b = 0; b < nb; ++b) tables.push_back(phys[tables.size()]);
      for (int p = 0; p < s.ctx_len; ++p)
        for (int g = 0; g < n_kv; ++g)
          for (int i = 0; i < hd; ++i) {
            const size_t off =
                ((static_cast<size_t>(tables[d.table_begin + p / bs]) * n_kv + g) * bs + p % bs) * hd + i;
            kf[off] = uk(rng);
            vf[off] = uv(rng);
          }
      seqs.push_back(d);
      rows += s.q_len;
    }
    kb = to_bytes(kf, cache_dt);
    vb = to_bytes(vf, cache_dt);
    // Queries up to +-3: scores then span several units, so the softmax is far from uniform.
    q = random_vec(rng, static_cast<size_t>(rows) * n_heads * hd, -3.f, 3.f);
  }

  std::vector<float> reference() const {
    std::vector<kernels::AttnSeq> ref_seqs;
    for (const AttnSeqDev& d : seqs) ref_seqs.push_back({d.q_begin, d.q_len, d.ctx_len, tables.data() + d.table_begin});
    std::vector<float> want(q.size());
    kernels::ref::attention(q.data(),
                            kernels::PagedKV{const_cast<uint8_t*>(kb.data()), const_cast<uint8_t*>(vb.data()), bs,
                                             n_kv, hd, cache_dt},
                            ref_seqs, n_heads, scale, want.data());
    return want;
  }

  // One launch over `run` (sequences reading this cache, q_begin into `qs`); the output's bytes in out_dt.
  std::vector<uint8_t> gpu(const std::vector<AttnSeqDev>& run, const std::vector<float>& qs, DType out_dt) const {
    DevBuf d_k(kb), d_v(vb), d_q(qs), d_seqs(run), d_tables(tables), d_out(qs.size() * dtype_size(out_dt));
    d_out.poison();
    attention(PagedKvDev{d_k.as(), d_v.as(), cache_dt, bs, n_kv, hd}, d_q.as<float>(), run, d_seqs.as<AttnSeqDev>(),
              d_tables.as<int32_t>(), n_heads, scale, d_out.as(), out_dt, nullptr);
    return d_out.download<uint8_t>();
  }
  size_t row_elems() const { return static_cast<size_t>(n_heads) * hd; }
};

// One attention launch over `shapes` (prefill chunks and decode tokens mixed) against ref::attention.
void check_attention(int n_heads, int n_kv, int hd, DType cache_dt, DType out_dt, const std::vector<SeqShape>& shapes,
                     std::mt19937& rng) {
  const AttnFixture f(n_heads, n_kv, hd, cache_dt, shapes, rng);
  const auto want = f.reference();
  const auto got = to_floats(f.gpu(f.seqs, f.q, out_dt), out_dt);
  // The cache values are the same on both sides (the reference reads the rounded cache too), so only the f32
  // arithmetic and the output's rounding differ from the reference.
  EXPECT_LE(rel_l2(got, want), tol_for(out_dt)) << "heads " << n_heads << "/" << n_kv << " head_dim " << hd
                                                << " cache " << dtype_name(cache_dt) << " out " << dtype_name(out_dt);
  // And row by row (a wrong row drowns in a global norm over many): every (row, head) within 10x.
  for (int32_t r = 0; r < f.rows; ++r)
    for (int h = 0; h < n_heads; ++h) {
      const size_t o = (static_cast<size_t>(r) * n_heads + h) * hd;
      const std::vector<float> g(got.begin() + o, got.begin() + o + hd), w(want.begin() + o, want.begin() + o + hd);
      ASSERT_LE(rel_l2(g, w), 10 * tol_for(out_dt)) << "row " << r << " head " << h << " head_dim " << hd
                                                    << " cache " << dtype_name(cache_dt);
    }
}

// Fresh prefill, a continued prefill chunk, decode tokens at 1, 17 and 300 tokens of context, and others
// that end mid-block: one launch.
const std::vector<SeqShape> kMixedSeqs = {{33, 33}, {7, 50}, {1, 17}, {1, 1}, {1, 300}, {3, 3}, {16, 16}, {5, 37}};

TEST(CudaAttention, MixedPrefillAndDecodeMatchReference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(7);
  for (int hd : {64, 128})
    for (DType cache_dt : kDtypes)
      for (DType out_dt : {DType::kF32, DType::kBF16}) check_attention(8, 2, hd, cache_dt, out_dt, kMixedSeqs, rng);
}

TEST(CudaAttention, GroupSizesAndLargeHeads) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(8);
  check_attention(4, 4, 64, DType::kBF16, DType::kF32, kMixedSeqs, rng);    // no grouping: 8 rows per block
  check_attention(16, 2, 128, DType::kF16, DType::kF32, kMixedSeqs, rng);   // group 8
  check_attention(16, 2, 256, DType::kBF16, DType::kF32, kMixedSeqs, rng);  // > 48 KiB of shared memory
  check_attention(6, 2, 96, DType::kF32, DType::kF16, kMixedSeqs, rng);     // head_dim not a power of two
}

TEST(CudaAttention, DecodeOnlyBatchesOfOneThreeSevenThirtyThree) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(9);
  for (int n : {1, 3, 7, 33, 150}) {  // 150: enough blocks for all heads of a kv head in one block
    std::vector<SeqShape> shapes;
    for (int i = 0; i < n; ++i) shapes.push_back({1, 1 + static_cast<int>(rng() % 200)});
    check_attention(8, 2, 128, DType::kBF16, DType::kBF16, shapes, rng);
  }
}

// Each row's arithmetic is independent of the batch: the rows per block, the other rows of its tile and the
// key tiles past its own position leave its bits alone (masked keys add p = 0 exactly and rescale by exp(0)).
// So a sequence alone gives the bits it gets in the mixed batch, and a decode step the bits of the same row
// in a prefill chunk.
TEST(CudaAttention, RowsAreBitwiseBatchInvariant) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(12);
  // With 150 more decode sequences the mixed launch has enough blocks to give each all 4 heads of its kv head
  // (on a GPU with up to ~180 multiprocessors), while the small launches below take one head per block.
  std::vector<SeqShape> shapes = kMixedSeqs;
  for (int i = 0; i < 150; ++i) shapes.push_back({1, 1 + static_cast<int>(rng() % 100)});
  for (DType out_dt : {DType::kF32, DType::kBF16}) {
    const AttnFixture f(8, 2, 128, DType::kBF16, shapes, rng);
    const auto mixed = f.gpu(f.seqs, f.q, out_dt);
    const size_t row_bytes = f.row_elems() * dtype_size(out_dt);
    for (size_t i = 0; i < f.seqs.size(); i += i < kMixedSeqs.size() ? 1 : 37) {
      const AttnSeqDev& s = f.seqs[i];
      // The sequence alone.
      AttnSeqDev one = s;
      one.q_begin = 0;
      const std::vector<float> qs(f.q.begin() + s.q_begin * f.row_elems(),
                                  f.q.begin() + (s.q_begin + s.q_len) * f.row_elems());
      const auto alone = f.gpu({one}, qs, out_dt);
      EXPECT_EQ(0, std::memcmp(alone.data(), mixed.data() + s.q_begin * row_bytes, s.q_len * row_bytes))
          << "sequence at row " << s.q_begin << " alone, out " << dtype_name(out_dt);
      // Its last row as a decode step (q_len 1 at the same context).
      AttnSeqDev dec = s;
      dec.q_begin = 0;
      dec.q_len = 1;
      const std::vector<float> q1(qs.end() - static_cast<std::ptrdiff_t>(f.row_elems()), qs.end());
      const auto decode = f.gpu({dec}, q1, out_dt);
      EXPECT_EQ(0, std::memcmp(decode.data(), mixed.data() + (s.q_begin + s.q_len - 1) * row_bytes, row_bytes))
          << "last row of the sequence at row " << s.q_begin << " as decode, out " << dtype_name(out_dt);
    }
  }
}

// ---------------------------------------------------------------- LoRA

constexpr int kMaxLoras = 4, kMaxRank = 64;
constexpr int64_t kIn = 300, kLdx = 305;  // `in` not a multiple of the 256-column chunks nor of 32
const int64_t kOut[kMaxLoraTargets] = {96, 40, 257};
// Ranks per target and slot: 8, 16 and 64 mixed, and slots that adapt some targets only.
const int32_t kRanks[kMaxLoraTargets][kMaxLoras] = {{8, 16, 64, 0}, {16, 0, 8, 64}, {64, 8, 16, 16}};

// The slot bank of one dtype: per target A (max_loras, max_rank, in) and Bt (max_loras, max_rank, out) with
// NaN in the rows at and above each slot's rank (never to be read), as host bytes and on the device.
struct LoraBank {
  DType dt;
  std::vector<uint8_t> a[kMaxLoraTargets], b[kMaxLoraTargets];
  std::vector<std::unique_ptr<DevBuf>> dev;  // a0, b0, ranks0, a1, ...
  LoraBank(DType d, std::mt19937& rng) : dt(d) {
    for (int t = 0; t < kMaxLoraTargets; ++t) {
      std::vector<float> af(kMaxLoras * kMaxRank * kIn, kNaN), bf(kMaxLoras * kMaxRank * kOut[t], kNaN);
      for (int s = 0; s < kMaxLoras; ++s)
        for (int j = 0; j < kRanks[t][s]; ++j) {
          const auto ra = random_vec(rng, kIn, -0.1f, 0.1f), rb = random_vec(rng, kOut[t], -0.2f, 0.2f);
          std::copy(ra.begin(), ra.end(), af.begin() + (s * kMaxRank + j) * kIn);
          std::copy(rb.begin(), rb.end(), bf.begin() + (s * kMaxRank + j) * kOut[t]);
        }
      a[t] = to_bytes(af, dt);
      b[t] = to_bytes(bf, dt);
      dev.push_back(std::make_unique<DevBuf>(a[t]));
      dev.push_back(std::make_unique<DevBuf>(b[t]));
      dev.push_back(std::make_unique<DevBuf>(std::vector<int32_t>(kRanks[t], kRanks[t] + kMaxLoras)));
    }
  }
  kernels::LoraWeights host_weights(int t) const {
    return {a[t].data(), b[t].data(), dt, kMaxLoras, kMaxRank, kIn, kOut[t], kRanks[t]};
  }
};

struct LoraBatch {
  std::vector<int32_t> slot;
  std::vector<float> scale;
  std::vector<kernels::LoraUse> more;
  std::vector<float> x;   // (T, kLdx), already rounded to the bank's dtype; NaN in the padding columns
  std::vector<float> y0;  // per target (T, ldy) with ldy = out + 3; the padding columns hold a sentinel
};
int64_t ldy_of(int t) { return kOut[t] + 3; }

// Runs shrink + expand for all three targets in one call each and returns y per target (the v of the shrink
// is checked on the way: written everywhere, 0 exactly at and above each entry's rank).
std::vector<std::vector<float>> run_lora(const LoraBank& bank, const LoraBatch& b) {
  const int64_t T = static_cast<int64_t>(b.slot.size());
  HostLoraPlan hp;
  build_lora_plan(b.slot, b.scale, b.more, hp);
  const int32_t n = static_cast<int32_t>(hp.entry_row.size());
  std::vector<std::vector<float>> ys(kMaxLoraTargets);
  DevBuf d_row(hp.entry_row), d_slot(hp.entry_slot), d_scale(hp.entry_scale), d_tiles(hp.tiles),
      d_trow(hp.token_row), d_tbeg(hp.token_begin), d_tent(hp.token_entry);
  LoraPlanDev pd;
  pd.entry_row = d_row.as<int32_t>();
  pd.entry_slot = d_slot.as<int32_t>();
  pd.entry_scale = d_scale.as<float>();
  pd.tiles = d_tiles.as<LoraTileDev>();
  pd.n_entries = n;
  pd.n_tiles = static_cast<int32_t>(hp.tiles.size());
  pd.token_row = d_trow.as<int32_t>();
  pd.token_begin = d_tbeg.as<int32_t>();
  pd.token_entry = d_tent.as<int32_t>();
  pd.n_tokens = static_cast<int32_t>(hp.token_row.size());
  pd.max_stack = hp.max_stack;

  DevBuf d_x(to_bytes(b.x, bank.dt));
  std::vector<std::unique_ptr<DevBuf>> d_y;
  LoraTargetDev targets[kMaxLoraTargets];
  int64_t y_off = 0;
  for (int t = 0; t < kMaxLoraTargets; ++t) {
    const std::vector<float> y0(b.y0.begin() + y_off, b.y0.begin() + y_off + T * ldy_of(t));
    y_off += T * ldy_of(t);
    d_y.push_back(std::make_unique<DevBuf>(y0));
    targets[t] = {bank.dev[3 * t]->as(), bank.dev[3 * t + 1]->as(), bank.dev[3 * t + 2]->as<int32_t>(), kOut[t],
                  d_y.back()->as<float>(), ldy_of(t)};
  }
  DevBuf d_v(static_cast<size_t>(kMaxLoraTargets) * std::max(n, 1) * kMaxRank * sizeof(float));
  d_v.poison();
  lora_shrink(pd, d_x.as(), bank.dt, kLdx, kIn, targets, bank.dt, kMaxRank, d_v.as<float>(), nullptr);
  const auto v = d_v.download<float>();
  for (int t = 0; t < kMaxLoraTargets; ++t)
    for (int32_t e = 0; e < n; ++e)
      for (int j = 0; j < kMaxRank; ++j) {
        const float x = v[(static_cast<size_t>(t) * n + e) * kMaxRank + j];
        if (j >= kRanks[t][hp.entry_slot[e]]) {
          EXPECT_EQ(x, 0.f) << "v of target " << t << " entry " << e << " rank row " << j;
        } else {
          EXPECT_TRUE(std::isfinite(x)) << "v of target " << t << " entry " << e << " rank row " << j;
        }
      }
  lora_expand(pd, targets, bank.dt, kMaxRank, d_v.as<float>(), nullptr);
  for (int t = 0; t < kMaxLoraTargets; ++t) ys[t] = d_y[t]->download<float>();
  return ys;
}

LoraBatch make_lora_batch(int64_t T, DType dt, std::mt19937& rng) {
  LoraBatch b;
  for (int64_t t = 0; t < T; ++t) b.slot.push_back(static_cast<int32_t>(rng() % (kMaxLoras + 1)) - 1);
  if (T >= 20)
    for (int64_t t = 4; t < 20; ++t) b.slot[t] = 2;  // a prefill segment: contiguous tiles
  const float scales[] = {1.f, 1.f, 0.5f, -2.f, 0.f};
  for (int64_t t = 0; t < T; ++t) b.scale.push_back(scales[rng() % 5]);
  for (int64_t t = 0; t < T; ++t)
    if (rng() % 3 == 0)  // a second adapter on the stack
      b.more.push_back({static_cast<int32_t>(t), static_cast<int32_t>(rng() % kMaxLoras), 0.75f});
  b.x = round_to(random_vec(rng, T * kLdx), dt);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = kIn; k < kLdx; ++k) b.x[t * kLdx + k] = kNaN;
  for (int t = 0; t < kMaxLoraTargets; ++t) {
    auto y = random_vec(rng, T * ldy_of(t));
    for (int64_t r = 0; r < T; ++r)
      for (int64_t n = kOut[t]; n < ldy_of(t); ++n) y[r * ldy_of(t) + n] = 12345.f;
    b.y0.insert(b.y0.end(), y.begin(), y.end());
  }
  return b;
}

TEST(CudaLora, MixedAdaptersMatchReference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(10);
  for (DType dt : kDtypes) {
    const LoraBank bank(dt, rng);
    for (int64_t T : {1, 3, 7, 33}) {
      const LoraBatch b = make_lora_batch(T, dt, rng);
      const auto got = run_lora(bank, b);
      int64_t y_off = 0;
      for (int t = 0; t < kMaxLoraTargets; ++t) {
        const int64_t ldy = ldy_of(t);
        std::vector<float> want(b.y0.begin() + y_off, b.y0.begin() + y_off + T * ldy);
        const std::vector<float> y0 = want;
        y_off += T * ldy;
        const auto w = bank.host_weights(t);
        kernels::ref::lora_apply(b.x.data(), T, kLdx, b.slot.data(), b.scale.data(), b.more, w, want.data(), ldy);
        // Compared as the LoRA term (y - y0), so the base values do not hide its error. Both sides read the
        // same rounded x, A and B, so only f32 vs double accumulation differs, whatever the dtype.
        std::vector<float> dg, dw;
        for (int64_t r = 0; r < T; ++r)
          for (int64_t c = 0; c < ldy; ++c) {
            const int64_t i = r * ldy + c;
            if (c >= kOut[t]) {
              EXPECT_EQ(got[t][i], 12345.f) << "row padding written, target " << t;
              continue;
            }
            dg.push_back(got[t][i] - y0[i]);
            dw.push_back(want[i] - y0[i]);
          }
        double norm = 0;
        for (float d : dw) norm += d * d;
        if (norm > 0) {
          EXPECT_LE(rel_l2(dg, dw), 1e-5) << dtype_name(dt) << " T " << T << " target " << t;
        } else {
          EXPECT_EQ(dg, dw) << dtype_name(dt) << " T " << T << " target " << t;  // nothing adapted: untouched
        }
      }
    }
  }
}

TEST(CudaLora, MixedBatchEqualsEachTokenAloneBitwise) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937 rng(11);
  for (DType dt : {DType::kBF16, DType::kF32}) {
    const LoraBank bank(dt, rng);
    const int64_t T = 33;
    const LoraBatch b = make_lora_batch(T, dt, rng);
    const auto mixed = run_lora(bank, b);
    for (int64_t r = 0; r < T; ++r) {
      LoraBatch one;
      one.slot = {b.slot[r]};
      one.scale = {b.scale[r]};
      for (const auto& u : b.more)
        if (u.row == r) one.more.push_back({0, u.slot, u.scale});
      one.x.assign(b.x.begin() + r * kLdx, b.x.begin() + (r + 1) * kLdx);
      int64_t off = 0;
      for (int t = 0; t < kMaxLoraTargets; ++t) {
        one.y0.insert(one.y0.end(), b.y0.begin() + off + r * ldy_of(t), b.y0.begin() + off + (r + 1) * ldy_of(t));
        off += T * ldy_of(t);
      }
      const auto alone = run_lora(bank, one);
      for (int t = 0; t < kMaxLoraTargets; ++t)
        EXPECT_EQ(0, std::memcmp(alone[t].data(), mixed[t].data() + r * ldy_of(t), ldy_of(t) * sizeof(float)))
            << dtype_name(dt) << " token " << r << " target " << t;
    }
  }
}

}  // namespace
}  // namespace lp::cuda
