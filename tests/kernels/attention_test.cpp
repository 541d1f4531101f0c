// Paged causal GQA attention on every ISA and every KV dtype (F32, BF16, F16) vs the reference (scattered
// block tables, GQA ratios 1/3/4, head_dim not a multiple of the vector width, chunked prefill over earlier
// context), and its batch invariance: a sequence's rows are bit-identical alone or packed with others, and a
// decode step equals the last row of a prefill over the same cache. Cache slots past a sequence's context
// hold NaN, so reading them (or a block past ceil(ctx_len / block_size)) would show; the K and V arrays end
// at a guard page, so a load past the last element faults.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels_test_util.h"
#include "kernels/reference.h"

namespace lp::kernels::test {
namespace {

constexpr DType kKvDtypes[] = {DType::kF32, DType::kBF16, DType::kF16};

// A cache of n_blocks physical blocks of `dtype`, all NaN; sequences are written into scattered blocks.
struct TestCache {
  GuardedBytes k, v;
  PagedKV view;
  std::vector<int32_t> free_blocks;  // shuffled physical ids not yet used

  TestCache(int n_blocks, int block_size, int n_kv, int hd, std::mt19937& rng, DType dtype = DType::kF32)
      : k(static_cast<size_t>(n_blocks) * n_kv * block_size * hd * dtype_size(dtype)), v(k.size()) {
    view = PagedKV{k.data(), v.data(), block_size, n_kv, hd, dtype};
    const float nan = NAN;
    for (size_t i = 0; i < k.size() / dtype_size(dtype); ++i) set(view.k, i, nan), set(view.v, i, nan);
    free_blocks.resize(n_blocks);
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  }

  // Fills ctx_len random tokens for a new sequence; returns its block table (exactly ceil(ctx/bs) entries).
  std::vector<int32_t> add_sequence(int32_t ctx_len, std::mt19937& rng) {
    int bs = view.block_size, row = view.n_kv_heads * view.head_dim;
    std::vector<int32_t> table((ctx_len + bs - 1) / bs);
    for (auto& b : table) {
      b = free_blocks.back();
      free_blocks.pop_back();
    }
    std::vector<float> kn = random_floats(rng, static_cast<size_t>(ctx_len) * row);
    std::vector<float> vn = random_floats(rng, kn.size());
    std::vector<int32_t> slot(ctx_len);
    for (int32_t j = 0; j < ctx_len; ++j) slot[j] = table[j / bs] * bs + j % bs;
    kv_write(view, kn.data(), vn.data(), slot.data(), ctx_len);
    return table;
  }
  // Element i of the K (or V) array, as float; and its assignment (rounded to the cache dtype).
  float at(const void* base, int64_t i) const {
    float f;
    to_f32(view.dtype, static_cast<const uint8_t*>(base) + i * dtype_size(view.dtype), &f, 1);
    return f;
  }
  void set(void* base, int64_t i, float f) {
    from_f32(view.dtype, &f, static_cast<uint8_t*>(base) + i * dtype_size(view.dtype), 1);
  }
  int64_t row(const AttnSeq& sq, int32_t j, int g) const {  // element offset of position j's row, kv head g
    const int bs = view.block_size;
    return ((static_cast<int64_t>(sq.block_table[j / bs]) * view.n_kv_heads + g) * bs + j % bs) *
           view.head_dim;
  }
};

// Per-element bound: score errors (dot over head_dim, relative (hd/8 + 6) eps of sum |q k| * scale) move
// each weight by at most twice the worst one, plus exp (4 eps) and sum/accumulation over n keys.
std::vector<double> attention_tolerance(const TestCache& c, const AttnSeq& sq, int32_t qi, int g, float scale,
                                        const float* q) {
  const int hd = c.view.head_dim;
  const int32_t n = sq.ctx_len - sq.q_len + qi + 1;
  std::vector<double> s(n), a(n);
  double smax = -INFINITY, abs_score = 0;
  for (int32_t j = 0; j < n; ++j) {
    const int64_t k = c.row(sq, j, g);
    double dot = 0, absd = 0;
    for (int d = 0; d < hd; ++d) {
      const double kd = c.at(c.view.k, k + d);
      dot += q[d] * kd, absd += std::fabs(q[d] * kd);
    }
    s[j] = dot * scale;
    smax = std::max(smax, s[j]);
    abs_score = std::max(abs_score, absd * scale);
  }
  double sum = 0;
  for (int32_t j = 0; j < n; ++j) sum += a[j] = std::exp(s[j] - smax);
  double rel = kF32Eps * (4 * (hd / 8.0 + 6) * abs_score + 2 * abs_score + n + 16);
  std::vector<double> tol(hd, 0.0);
  for (int32_t j = 0; j < n; ++j) {
    const int64_t v = c.row(sq, j, g);
    for (int d = 0; d < hd; ++d) tol[d] += a[j] / sum * std::fabs(c.at(c.view.v, v + d)) * rel;
  }
  return tol;
}

struct Shape {
  int n_heads, n_kv, hd, bs;
};

// Checks attention of a packed batch against the reference, element by element; returns the count outside.
int64_t check_vs_reference(ComputePool& pool, const detail::IsaKernels& k, const Shape& sh,
                           const std::vector<std::pair<int32_t, int32_t>>& lens, std::mt19937& rng,
                           DType kv_dtype, bool perturb = false) {
  TestCache c(64, sh.bs, sh.n_kv, sh.hd, rng, kv_dtype);
  std::vector<std::vector<int32_t>> tables;
  std::vector<AttnSeq> seqs;
  int32_t rows = 0;
  for (auto [q_len, ctx] : lens) {
    tables.push_back(c.add_sequence(ctx, rng));
    seqs.push_back(AttnSeq{rows, q_len, ctx, nullptr});
    rows += q_len;
  }
  for (size_t i = 0; i < seqs.size(); ++i) seqs[i].block_table = tables[i].data();
  const float scale = 1.f / std::sqrt(static_cast<float>(sh.hd));
  std::vector<float> q = random_floats(rng, static_cast<size_t>(rows) * sh.n_heads * sh.hd, -2.f, 2.f);
  std::vector<float> want(q.size()), got(q.size());
  ref::attention(q.data(), c.view, seqs, sh.n_heads, scale, want.data());
  const int64_t first_v = int64_t{tables[0][0]} * sh.n_kv * sh.bs * sh.hd;
  const float saved = c.at(c.view.v, first_v);
  if (perturb) c.set(c.view.v, first_v, saved + 0.5f);
  detail::attention_with(k, pool, q.data(), c.view, seqs, sh.n_heads, scale, got.data());
  if (perturb) c.set(c.view.v, first_v, saved);
  std::vector<double> tol(q.size());
  for (const AttnSeq& sq : seqs)
    for (int32_t i = 0; i < sq.q_len; ++i)
      for (int h = 0; h < sh.n_heads; ++h) {
        size_t off = (static_cast<size_t>(sq.q_begin + i) * sh.n_heads + h) * sh.hd;
        std::vector<double> t = attention_tolerance(c, sq, i, h / (sh.n_heads / sh.n_kv), scale, &q[off]);
        std::copy(t.begin(), t.end(), tol.begin() + off);
      }
  return count_outside(got.data(), want.data(), tol, got.size(), !perturb);
}

TEST(Attention, MatchesReferenceWithScatteredBlocksAndGqaEveryIsa) {
  ComputePool pool(2);
  std::mt19937 rng(1);
  const std::vector<std::pair<int32_t, int32_t>> lens = {{1, 1}, {37, 37}, {5, 40}, {1, 83}, {16, 16}};
  for (const detail::IsaKernels* k : cpu_isas())
    for (DType kd : kKvDtypes)
      for (Shape sh : {Shape{4, 4, 64, 16}, Shape{9, 3, 64, 16}, Shape{8, 2, 40, 5}, Shape{3, 1, 7, 4},
                       Shape{4, 2, 128, 16}, Shape{2, 1, 24, 3}}) {
        SCOPED_TRACE(testing::Message() << k->name << " kv " << dtype_name(kd) << " heads=" << sh.n_heads
                                        << "/" << sh.n_kv << " hd=" << sh.hd << " bs=" << sh.bs);
        EXPECT_EQ(check_vs_reference(pool, *k, sh, lens, rng, kd), 0);
      }
}

TEST(Attention, ToleranceCheckRejectsAWrongValue) {
  ComputePool pool(2);
  std::mt19937 rng(2);
  for (const detail::IsaKernels* k : cpu_isas())
    for (DType kd : kKvDtypes) {
      SCOPED_TRACE(testing::Message() << k->name << " kv " << dtype_name(kd));
      EXPECT_GT(check_vs_reference(pool, *k, Shape{4, 2, 64, 16}, {{3, 3}}, rng, kd, /*perturb=*/true), 0);
    }
}

std::vector<std::pair<const detail::IsaKernels*, DType>> isa_kv_pairs() {
  std::vector<std::pair<const detail::IsaKernels*, DType>> out;
  for (const detail::IsaKernels* k : cpu_isas())
    for (DType kd : kKvDtypes) out.emplace_back(k, kd);
  return out;
}

TEST(Attention, SequenceAloneEqualsPackedAndDecodeEqualsPrefillRow) {
  ComputePool pool(2);
  std::mt19937 rng(3);
  const Shape sh{9, 3, 64, 16};
  const int row = sh.n_heads * sh.hd;
  for (auto [k, kd] : isa_kv_pairs()) {
    SCOPED_TRACE(testing::Message() << k->name << " kv " << dtype_name(kd));
    TestCache c(64, sh.bs, sh.n_kv, sh.hd, rng, kd);
    const int32_t L = 45;
    std::vector<int32_t> ta = c.add_sequence(L, rng), tb = c.add_sequence(30, rng),
                         tc = c.add_sequence(70, rng);
    std::vector<float> qa = random_floats(rng, static_cast<size_t>(L) * row);
    // Alone: the whole sequence as one prefill.
    AttnSeq alone{0, L, L, ta.data()};
    std::vector<float> out_alone(qa.size());
    detail::attention_with(k[0], pool, qa.data(), c.view, {&alone, 1}, sh.n_heads, 0.125f, out_alone.data());
    // Packed between a chunked prefill and a decode of other sequences.
    std::vector<float> qb = random_floats(rng, 10 * row), qc = random_floats(rng, row);
    std::vector<float> qp(qb);
    qp.insert(qp.end(), qa.begin(), qa.end());
    qp.insert(qp.end(), qc.begin(), qc.end());
    std::vector<AttnSeq> packed = {{0, 10, 30, tb.data()}, {10, L, L, ta.data()}, {10 + L, 1, 70, tc.data()}};
    std::vector<float> out_packed(qp.size());
    detail::attention_with(k[0], pool, qp.data(), c.view, packed, sh.n_heads, 0.125f, out_packed.data());
    EXPECT_TRUE(same_bits(out_alone.data(), out_packed.data() + 10 * row, qa.size())) << "alone vs packed";
    // Decode step of the last token over the same cache, and a chunk of the last 7 tokens.
    for (int32_t q_len : {1, 7}) {
      AttnSeq tail{0, q_len, L, ta.data()};
      std::vector<float> out_tail(static_cast<size_t>(q_len) * row);
      detail::attention_with(k[0], pool, qa.data() + static_cast<size_t>(L - q_len) * row, c.view, {&tail, 1},
                             sh.n_heads, 0.125f, out_tail.data());
      EXPECT_TRUE(same_bits(out_tail.data(), out_alone.data() + static_cast<size_t>(L - q_len) * row,
                            out_tail.size()))
          << "last " << q_len << " rows vs prefill";
    }
    // With one thread instead of two.
    ComputePool one(1);
    std::vector<float> out_one(qa.size());
    detail::attention_with(k[0], one, qa.data(), c.view, {&alone, 1}, sh.n_heads, 0.125f, out_one.data());
    EXPECT_TRUE(same_bits(out_alone.data(), out_one.data(), qa.size())) << "one thread vs two";
  }
}

// A decode step of many sequences (enough that threads claim a KV head's query heads together) matches the
// reference and gives each sequence exactly what it gets decoded alone.
TEST(Attention, DecodeOfManySequencesMatchesReferenceAndEachAlone) {
  std::mt19937 rng(5);
  ComputePool pool(2);
  for (auto [k, kd] : isa_kv_pairs()) {
    for (Shape sh : {Shape{9, 3, 64, 16}, Shape{8, 2, 40, 5}}) {
      SCOPED_TRACE(testing::Message() << k->name << " kv " << dtype_name(kd) << " heads=" << sh.n_heads);
      std::vector<std::pair<int32_t, int32_t>> lens;
      for (int32_t ctx : {37, 5, 50, 16, 41, 1, 33, 20, 12}) lens.push_back({1, ctx});  // 47 blocks of 5
      EXPECT_EQ(check_vs_reference(pool, *k, sh, lens, rng, kd), 0);
      TestCache c(128, sh.bs, sh.n_kv, sh.hd, rng, kd);
      std::vector<std::vector<int32_t>> tables;
      std::vector<AttnSeq> seqs;
      for (size_t i = 0; i < lens.size(); ++i) {
        tables.push_back(c.add_sequence(lens[i].second, rng));
        seqs.push_back(AttnSeq{static_cast<int32_t>(i), 1, lens[i].second, nullptr});
      }
      for (size_t i = 0; i < seqs.size(); ++i) seqs[i].block_table = tables[i].data();
      const size_t row = static_cast<size_t>(sh.n_heads) * sh.hd;
      std::vector<float> q = random_floats(rng, seqs.size() * row), all(q.size());
      detail::attention_with(*k, pool, q.data(), c.view, seqs, sh.n_heads, 0.125f, all.data());
      for (size_t i = 0; i < seqs.size(); ++i) {
        AttnSeq alone = seqs[i];
        alone.q_begin = 0;
        std::vector<float> one(row);
        detail::attention_with(*k, pool, q.data() + i * row, c.view, {&alone, 1}, sh.n_heads, 0.125f,
                               one.data());
        EXPECT_TRUE(same_bits(one.data(), all.data() + i * row, row)) << "sequence " << i;
      }
    }
  }
}

TEST(Attention, KvWriteMatchesReferenceAndRoundsToTheCacheDtype) {
  std::mt19937 rng(4);
  const int bs = 5, n_kv = 3, hd = 13, n_blocks = 6;  // rows of 13: the vector body and a tail
  const std::vector<int32_t> slot = {17, 3, 29, 0, 11};
  std::vector<float> kn = random_floats(rng, slot.size() * n_kv * hd, -3.f, 3.f),
                     vn = random_floats(rng, kn.size());
  // Token 0's keys: the awkward values, each rounded by every ISA exactly as by core/dtype.h.
  uint32_t nan_payload = 0x7f812345u, neg_nan = 0xffc00001u;
  float nan1, nan2;
  std::memcpy(&nan1, &nan_payload, 4);
  std::memcpy(&nan2, &neg_nan, 4);
  const float special[] = {1.f + 1.f / 256,  // halfway between two bf16 values: to even (1.0)
                           1.f + 3.f / 256,  // halfway, rounds up
                           70000.f,          // past f16's range: inf
                           65519.f,          // f16: just below the rounding-to-inf threshold
                           -0.f,
                           1e-40f,  // f32 subnormal
                           3e-6f,
                           -6e-8f,  // f16 subnormals
                           nan1,
                           nan2,
                           INFINITY,
                           -INFINITY,
                           3.3895314e38f /* bf16 rounds to inf */};
  std::copy(std::begin(special), std::end(special), kn.begin());
  for (const detail::IsaKernels* k : cpu_isas())
    for (DType kd : kKvDtypes) {
      SCOPED_TRACE(testing::Message() << k->name << " kv " << dtype_name(kd));
      const size_t bytes = static_cast<size_t>(n_blocks) * n_kv * bs * hd * dtype_size(kd);
      std::vector<uint8_t> k1(bytes), v1(bytes), k2(bytes), v2(bytes);
      detail::kv_write_with(*k, PagedKV{k1.data(), v1.data(), bs, n_kv, hd, kd}, kn.data(), vn.data(),
                            slot.data(), 5);
      ref::kv_write(PagedKV{k2.data(), v2.data(), bs, n_kv, hd, kd}, kn.data(), vn.data(), slot.data(), 5);
      EXPECT_EQ(k1, k2);
      EXPECT_EQ(v1, v2);
      // Token 0, kv head g, dim d sits at slot 17 = block 3, offset 2; finite values are rounded once.
      const double unit = kd == DType::kF32 ? kF32Eps : kd == DType::kBF16 ? kBf16Eps : 1.0 / (1 << 11);
      for (int g = 0; g < n_kv; ++g)
        for (int d = 0; d < hd; ++d) {
          const size_t e = ((3 * n_kv + g) * bs + 2) * hd + d;
          float got;
          to_f32(kd, k1.data() + e * dtype_size(kd), &got, 1);
          const float want = kn[g * hd + d];
          if (std::isnan(want)) {
            EXPECT_TRUE(std::isnan(got));
          } else if (std::fabs(want) >= 1e-4f && std::isfinite(got)) {
            EXPECT_LE(std::fabs(got - want), unit * std::fabs(want)) << "g " << g << " d " << d;
          }
        }
      float first;
      to_f32(kd, k1.data() + ((3 * n_kv) * bs + 2) * hd * dtype_size(kd), &first, 1);
      EXPECT_EQ(first, kd == DType::kF16 ? 1.f + 1.f / 256 : kd == DType::kBF16 ? 1.f : special[0]);
    }
}

}  // namespace
}  // namespace lp::kernels::test
