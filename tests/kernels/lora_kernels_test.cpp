// The fused multi-adapter LoRA kernels (SGMV/BGMV) vs the scalar loop of lora.h, on every ISA the CPU has,
// over adapter popularity patterns, batch sizes, mixed ranks and odd shapes; plus batch invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/dispatch.h"
#include "kernels/lora_internal.h"

namespace lp::kernels {
namespace {

struct Bank {
  int max_loras, max_rank;
  int64_t in, out;
  DType dtype;
  std::vector<int32_t> ranks;
  std::vector<uint8_t> a, b;  // raw bytes in dtype
  std::vector<float> af, bf;  // exact f32 values of the stored weights
  LoraWeights view() const {
    return LoraWeights{a.data(), b.data(), dtype, max_loras, max_rank, in, out, ranks.data()};
  }
};

Bank make_bank(int max_loras, int max_rank, int64_t in, int64_t out, DType dt, std::vector<int32_t> ranks,
               uint64_t seed) {
  Bank k{max_loras, max_rank, in, out, dt, std::move(ranks), {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  k.af.assign(static_cast<size_t>(max_loras) * max_rank * in, 0.f);
  k.bf.assign(static_cast<size_t>(max_loras) * max_rank * out, 0.f);  // transposed: (slot, rank, out)
  for (int s = 0; s < max_loras; ++s) {
    for (int j = 0; j < k.ranks[s]; ++j)
      for (int64_t i = 0; i < in; ++i) k.af[(s * max_rank + j) * in + i] = u(rng) / std::sqrt(float(in));
    for (int64_t n = 0; n < out; ++n)
      for (int j = 0; j < k.ranks[s]; ++j) k.bf[(s * max_rank + j) * out + n] = u(rng);
  }
  size_t es = dtype_size(dt);
  k.a.resize(k.af.size() * es);
  k.b.resize(k.bf.size() * es);
  from_f32(dt, k.af.data(), k.a.data(), k.af.size());
  from_f32(dt, k.bf.data(), k.b.data(), k.bf.size());
  to_f32(dt, k.a.data(), k.af.data(), k.af.size());  // exact stored values
  to_f32(dt, k.b.data(), k.bf.data(), k.bf.size());
  return k;
}

// Σ_j |B[s][n][j]| · Σ_k |A[s][j][k] x[t][k]|: the magnitude the rounding error scales with.
double magnitude(const Bank& k, const float* x, int s, int64_t n) {
  double m = 0;
  for (int j = 0; j < k.ranks[s]; ++j) {
    double va = 0;
    for (int64_t i = 0; i < k.in; ++i) va += std::fabs(k.af[(s * k.max_rank + j) * k.in + i] * x[i]);
    m += std::fabs(k.bf[(s * k.max_rank + j) * k.out + n]) * va;
  }
  return m;
}

std::vector<int32_t> pattern(const std::string& name, int T, int max_loras, std::mt19937_64& rng) {
  std::vector<int32_t> s(T);
  for (int t = 0; t < T; ++t) {
    if (name == "distinct")
      s[t] = t % max_loras;
    else if (name == "identical")
      s[t] = max_loras - 1;
    else if (name == "uniform")
      s[t] = static_cast<int32_t>(rng() % (max_loras + 1)) - 1;  // -1 included
    else if (name == "zipf") {
      double u = std::uniform_real_distribution<double>(0, 1)(rng);
      s[t] = std::min(max_loras - 1, static_cast<int>(std::floor(std::pow(max_loras + 1.0, u))) - 1);
    } else if (name == "segments")
      s[t] = (t / 9) % 2 ? -1 : (t / 9) % max_loras;  // prefill-like runs
  }
  return s;
}

struct Case {
  int64_t in, out;
  std::vector<int32_t> ranks;
  int max_rank;
};

TEST(LoraKernels, MatchReferenceOnEveryIsa) {
  std::mt19937_64 rng(42);
  const std::vector<Case> cases = {{37, 53, {1, 8, 16, 3}, 16},
                                   {576, 192, {16, 16, 0, 8}, 16},
                                   {100, 577, {64, 1, 33, 64}, 64},
                                   {1, 5, {1, 1, 1, 1}, 1}};
  ComputePool pool(2);
  for (auto isa : detail::supported_isas()) {
    const auto& kt = detail::kernels_for(isa);
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (const Case& c : cases) {
        Bank bank = make_bank(4, c.max_rank, c.in, c.out, dt, c.ranks, rng());
        double eps = kt.wants_bf16_x(dt) ? std::ldexp(1.0, -8) : std::ldexp(1.0, -20);
        for (int T : {1, 3, 16, 33}) {
          for (const char* pat : {"distinct", "identical", "uniform", "zipf", "segments"}) {
            auto slots = pattern(pat, T, 4, rng);
            std::vector<float> x(T * c.in);
            for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
            std::vector<float> y0(T * c.out);
            for (auto& v : y0) v = std::uniform_real_distribution<float>(-1, 1)(rng);
            std::vector<float> want = y0, got = y0;
            ref::lora_apply(x.data(), T, c.in, slots.data(), bank.view(), want.data(), c.out);
            LoraPlan plan;
            lora_plan_build(slots, plan);
            LoraScratch scratch;
            detail::lora_apply_with(kt, pool, plan, x.data(), c.in, bank.view(), got.data(), c.out, scratch);
            for (int t = 0; t < T; ++t) {
              for (int64_t n = 0; n < c.out; ++n) {
                size_t i = t * c.out + n;
                if (slots[t] < 0 || c.ranks[slots[t]] == 0) {
                  ASSERT_EQ(std::memcmp(&got[i], &y0[i], 4), 0) << "untouched token changed";
                  continue;
                }
                double tol = 4 * eps * magnitude(bank, &x[t * c.in], slots[t], n) + 1e-6 * std::fabs(y0[i]);
                ASSERT_NEAR(got[i], want[i], tol) << kt.name << " " << dtype_name(dt) << " " << pat
                                                  << " T=" << T << " in=" << c.in << " t=" << t << " n=" << n;
              }
            }
          }
        }
      }
    }
  }
}

// A token's LoRA output is bit-identical alone, in a merged BGMV group, in an SGMV segment, and naive.
TEST(LoraKernels, BatchInvariant) {
  std::mt19937_64 rng(7);
  ComputePool pool(2);
  for (auto isa : detail::supported_isas()) {
    const auto& kt = detail::kernels_for(isa);
    for (DType dt : {DType::kBF16, DType::kF32}) {
      Bank bank = make_bank(3, 16, 200, 90, dt, {16, 4, 9}, rng());
      const int T = 40;
      std::vector<int32_t> slots(T);
      for (int t = 0; t < T; ++t) slots[t] = t < 12 ? 1 : t == 12 ? -1 : static_cast<int32_t>(rng() % 4) - 1;
      std::vector<float> x(T * 200);
      for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
      std::vector<float> batched(T * 90, 0.5f), naive(T * 90, 0.5f);
      LoraPlan plan, per_token;
      lora_plan_build(slots, plan);
      lora_plan_build(slots, per_token, /*merge=*/false);
      ASSERT_TRUE(plan.groups[0].contiguous && plan.groups[0].count == 12);  // the SGMV segment
      LoraScratch s;
      detail::lora_apply_with(kt, pool, plan, x.data(), 200, bank.view(), batched.data(), 90, s);
      detail::lora_apply_with(kt, pool, per_token, x.data(), 200, bank.view(), naive.data(), 90, s);
      ASSERT_EQ(std::memcmp(batched.data(), naive.data(), batched.size() * 4), 0) << kt.name;
      for (int t = 0; t < T; ++t) {
        std::vector<float> alone(90, 0.5f);
        LoraPlan p1;
        lora_plan_build(std::span<const int32_t>(&slots[t], 1), p1);
        detail::lora_apply_with(kt, pool, p1, &x[t * 200], 200, bank.view(), alone.data(), 90, s);
        ASSERT_EQ(std::memcmp(alone.data(), &batched[t * 90], 90 * 4), 0) << kt.name << " token " << t;
      }
    }
  }
}

// Several targets sharing x in one call (q/k/v) == one call per target, bit for bit, with ranks differing
// per target (some slots adapt only some targets).
TEST(LoraKernels, MultiTargetEqualsOneCallPerTarget) {
  std::mt19937_64 rng(11);
  ComputePool pool(2);
  for (auto isa : detail::supported_isas()) {
    const auto& kt = detail::kernels_for(isa);
    Bank q = make_bank(3, 16, 96, 96, DType::kBF16, {16, 8, 0}, rng());
    Bank kk = make_bank(3, 16, 96, 32, DType::kBF16, {16, 0, 4}, rng());
    Bank v = make_bank(3, 16, 96, 32, DType::kBF16, {0, 8, 4}, rng());
    const int T = 21;
    std::vector<int32_t> slots(T);
    for (int t = 0; t < T; ++t) slots[t] = t < 9 ? 0 : static_cast<int32_t>(rng() % 4) - 1;
    std::vector<float> x(T * 96);
    for (auto& e : x) e = std::uniform_real_distribution<float>(-1, 1)(rng);
    LoraPlan plan;
    lora_plan_build(slots, plan);
    std::vector<float> yq(T * 96, 0.25f), yk(T * 32, 0.5f), yv(T * 32, -1.f);
    auto yq2 = yq, yk2 = yk, yv2 = yv;
    LoraScratch s;
    auto wq = q.view(), wk = kk.view(), wv = v.view();
    LoraTarget targets[] = {{&wq, yq.data(), 96}, {&wk, yk.data(), 32}, {&wv, yv.data(), 32}};
    detail::lora_apply_with(kt, pool, plan, x.data(), 96, targets, s);
    detail::lora_apply_with(kt, pool, plan, x.data(), 96, wq, yq2.data(), 96, s);
    detail::lora_apply_with(kt, pool, plan, x.data(), 96, wk, yk2.data(), 32, s);
    detail::lora_apply_with(kt, pool, plan, x.data(), 96, wv, yv2.data(), 32, s);
    EXPECT_EQ(0, std::memcmp(yq.data(), yq2.data(), yq.size() * 4)) << kt.name;
    EXPECT_EQ(0, std::memcmp(yk.data(), yk2.data(), yk.size() * 4)) << kt.name;
    EXPECT_EQ(0, std::memcmp(yv.data(), yv2.data(), yv.size() * 4)) << kt.name;
    EXPECT_NE(yq, std::vector<float>(T * 96, 0.25f));
  }
}

TEST(LoraKernels, PlanGroupsEachAdapterOnce) {
  std::vector<int32_t> slots = {2, -1, 0, 2, 2, 0, -1, 1, 1, 1, 1, 1, 1, 1, 1, 2};
  LoraPlan p;
  lora_plan_build(slots, p);
  // Run of eight 1s is an SGMV segment; the loose tokens group by slot: 0 -> {2,5}, 2 -> {0,3,4,15}.
  ASSERT_EQ(p.groups.size(), 3u);
  EXPECT_EQ(p.groups[0].slot, 1);
  EXPECT_TRUE(p.groups[0].contiguous);
  EXPECT_EQ(p.groups[0].count, 8);
  EXPECT_EQ(p.groups[1].slot, 0);
  EXPECT_EQ(p.groups[1].count, 2);
  EXPECT_EQ(p.groups[2].slot, 2);
  EXPECT_EQ(p.groups[2].count, 4);
  EXPECT_FALSE(p.groups[2].contiguous);
  std::vector<int32_t> rows(p.rows.begin() + p.groups[2].first, p.rows.begin() + p.groups[2].first + 4);
  EXPECT_EQ(rows, (std::vector<int32_t>{0, 3, 4, 15}));
  LoraPlan none;
  lora_plan_build(std::vector<int32_t>{-1, -1}, none);
  EXPECT_TRUE(none.empty());
}

}  // namespace
}  // namespace lp::kernels
