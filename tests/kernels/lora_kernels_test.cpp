// The fused multi-adapter LoRA kernels (SGMV/BGMV) vs the scalar loop of lora.h, on every ISA the CPU has,
// over adapter popularity patterns, batch sizes, mixed ranks and odd shapes; plus batch invariance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kernels/dispatch.h"
#include "kernels/kernels_test_util.h"
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

// Sets A[slot][j][i] to (the nearest stored value to) v, keeping af exact.
void set_a(Bank& k, int slot, int j, int64_t i, float v) {
  size_t idx = (static_cast<size_t>(slot) * k.max_rank + j) * k.in + i, es = dtype_size(k.dtype);
  from_f32(k.dtype, &v, k.a.data() + idx * es, 1);
  to_f32(k.dtype, k.a.data() + idx * es, &k.af[idx], 1);
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

// A wrong result the check must catch: the reference drops the last rank row of slot 0, or the kernel runs
// with one element of slot 0's A changed.
enum class Fault { kNone, kDropRankRow, kWrongA };

// Applies the bank to T tokens with slots from `pat` on one ISA and checks every element against the
// reference; returns the number of elements outside tolerance (reported through gtest only without a fault).
//
// The reference gets x exactly as the kernel uses it: where the ISA wants_bf16_x, the kernel rounds x to
// bf16 (to nearest even) before the shrink, so the reference is given the same rounded x and that rounding
// is no error of the kernel's. What is left is f32 arithmetic, bounded per element with
//   M = Σ_j |Bt[s][j][n]| · Σ_k |A[s][j][k] x[k]|    (x as rounded) :
//   shrink  v[j] = Σ_k A x: one f32 chain per lane (at most in/8 products) plus the lane reduction (<= 4
//           levels): the matmul bound (in/8 + 8)·u·Σ_k|A x|, carried through B: (in/8 + 8)·u·M;
//   expand  acc = fma(v[j], Bt[j][n], acc) over j < rank: rank·u·M;
//   y += acc, and the reference's own rounding to f32: 2u·|y| (the bound allows 4u·|y|, as matmul's does).
int64_t check_vs_reference(ComputePool& pool, const detail::IsaKernels& kt, const Bank& bank, int T,
                           const char* pat, std::mt19937_64& rng, Fault fault = Fault::kNone) {
  const int64_t in = bank.in, out = bank.out;
  auto slots = pattern(pat, T, bank.max_loras, rng);
  std::vector<float> x(T * in);
  for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<float> y0(T * out);
  for (auto& v : y0) v = std::uniform_real_distribution<float>(-1, 1)(rng);

  std::vector<float> xr = x;  // x as the kernel uses it
  if (kt.wants_bf16_x(bank.dtype))
    for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
  std::vector<int32_t> ref_ranks = bank.ranks;
  if (fault == Fault::kDropRankRow) --ref_ranks[0];
  LoraWeights ref_w = bank.view();
  ref_w.ranks = ref_ranks.data();
  std::vector<float> want = y0, got = y0;
  ref::lora_apply(xr.data(), T, in, slots.data(), ref_w, want.data(), out);

  Bank wrong;
  const Bank* run = &bank;
  if (fault == Fault::kWrongA) {
    wrong = bank;
    set_a(wrong, 0, 0, in / 2, bank.af[in / 2] + 0.25f / std::sqrt(static_cast<float>(in)));
    run = &wrong;
  }
  LoraPlan plan;
  lora_plan_build(slots, plan);
  LoraScratch scratch;
  detail::lora_apply_with(kt, pool, plan, x.data(), in, run->view(), got.data(), out, scratch);

  int64_t bad = 0;
  std::vector<double> tol(got.size(), 0.0);
  std::vector<double> va(bank.max_rank);
  for (int t = 0; t < T; ++t) {
    const int s = slots[t];
    if (s < 0 || bank.ranks[s] == 0) {  // base model only: not one bit of y may change
      if (!test::same_bits(&got[t * out], &y0[t * out], out)) {
        if (fault == Fault::kNone) ADD_FAILURE() << "token " << t << " (slot " << s << ") changed";
        ++bad;
      }
      continue;
    }
    const int r = bank.ranks[s];
    for (int j = 0; j < r; ++j) {
      va[j] = 0;
      for (int64_t i = 0; i < in; ++i)
        va[j] += std::fabs(static_cast<double>(bank.af[(s * bank.max_rank + j) * in + i]) * xr[t * in + i]);
    }
    for (int64_t n = 0; n < out; ++n) {
      double m = 0;
      for (int j = 0; j < r; ++j) m += std::fabs(bank.bf[(s * bank.max_rank + j) * out + n]) * va[j];
      const size_t i = t * out + n;
      tol[i] = (static_cast<double>(in) / 8 + 8 + r + 2) * test::kF32Eps * m +
               4 * test::kF32Eps * std::fabs(want[i]);
    }
  }
  return bad + test::count_outside(got.data(), want.data(), tol, got.size(), fault == Fault::kNone);
}

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
        for (int T : {1, 3, 16, 33}) {
          for (const char* pat : {"distinct", "identical", "uniform", "zipf", "segments"}) {
            SCOPED_TRACE(testing::Message() << kt.name << " " << dtype_name(dt) << " " << pat << " T=" << T
                                            << " in=" << c.in << " out=" << c.out);
            EXPECT_EQ(check_vs_reference(pool, kt, bank, T, pat, rng), 0);
          }
        }
      }
    }
  }
}

// The tolerance is tight enough to see one rank row missing (of 64) or one element of A off by a quarter
// of A's range, on every ISA and dtype (with the old bound of 4·2⁻⁸·M on the bf16-x path, neither showed).
TEST(LoraKernels, ToleranceCheckRejectsADroppedRankRowAndAWrongA) {
  std::mt19937_64 rng(43);
  ComputePool pool(2);
  for (auto isa : detail::supported_isas()) {
    const auto& kt = detail::kernels_for(isa);
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      Bank bank = make_bank(4, 64, 100, 577, dt, {64, 1, 33, 64}, rng());
      for (Fault f : {Fault::kDropRankRow, Fault::kWrongA}) {
        SCOPED_TRACE(testing::Message() << kt.name << " " << dtype_name(dt)
                                        << (f == Fault::kDropRankRow ? " dropped rank row" : " wrong A"));
        EXPECT_GT(check_vs_reference(pool, kt, bank, 3, "distinct", rng, f), 0);
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

// Random stacks: each token gets 0-3 distinct slots with scales among 1, 0.5, -1.25, 0 and 3; `segments`
// gives runs of 9 tokens one stack (prefill-like, so SGMV groups appear at every stack position).
struct Stacks {
  std::vector<int32_t> first;
  std::vector<float> scale;
  std::vector<LoraUse> more;
};
Stacks random_stacks(int T, int max_loras, bool segments, std::mt19937_64& rng) {
  const float scales[] = {1.f, 0.5f, -1.25f, 0.f, 3.f};
  Stacks st{std::vector<int32_t>(T, -1), std::vector<float>(T, 1.f), {}};
  std::vector<int32_t> perm(max_loras);
  int depth = 0;
  std::vector<float> ms(3);
  for (int t = 0; t < T; ++t) {
    if (!segments || t % 9 == 0) {
      for (int i = 0; i < max_loras; ++i) perm[i] = i;
      std::shuffle(perm.begin(), perm.end(), rng);
      depth = static_cast<int>(rng() % 4);
      for (float& m : ms) m = scales[rng() % 5];
    }
    if (depth >= 1) {
      st.first[t] = perm[0];
      st.scale[t] = ms[0];
    }
    for (int d = 1; d < depth && d < max_loras; ++d) st.more.push_back({t, perm[d], ms[d]});
  }
  // Listed in any order across tokens: a token's stack order is the order of its own entries (the reference
  // reads them the same way).
  std::shuffle(st.more.begin(), st.more.end(), rng);
  return st;
}

// Stacks of adapters with per-token scales vs the reference: the bound of check_vs_reference summed over a
// token's terms (each term's M times |scale|), plus one rounding of y per term.
TEST(LoraKernels, StacksAndScalesMatchReferenceOnEveryIsa) {
  std::mt19937_64 rng(44);
  ComputePool pool(2);
  const std::vector<Case> cases = {{37, 53, {1, 8, 16, 3}, 16}, {576, 192, {16, 16, 0, 8}, 16}, {100, 577, {64, 1, 33, 64}, 64}};
  for (auto isa : detail::supported_isas()) {
    const auto& kt = detail::kernels_for(isa);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      for (const Case& c : cases) {
        Bank bank = make_bank(4, c.max_rank, c.in, c.out, dt, c.ranks, rng());
        for (int T : {1, 5, 33}) {
          for (bool segments : {false, true}) {
            SCOPED_TRACE(testing::Message() << kt.name << " " << dtype_name(dt) << " T=" << T << " in=" << c.in
                                            << " segments=" << segments);
            Stacks st = random_stacks(T, 4, segments, rng);
            const int64_t in = c.in, out = c.out;
            std::vector<float> x(T * in), y0(T * out);
            for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
            for (auto& v : y0) v = std::uniform_real_distribution<float>(-1, 1)(rng);
            std::vector<float> xr = x;
            if (kt.wants_bf16_x(dt))
              for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
            std::vector<float> want = y0, got = y0;
            ref::lora_apply(xr.data(), T, in, st.first.data(), st.scale.data(), st.more, bank.view(), want.data(), out);
            LoraPlan plan;
            lora_plan_build(st.first, st.scale, st.more, plan);
            LoraScratch scratch;
            detail::lora_apply_with(kt, pool, plan, x.data(), in, bank.view(), got.data(), out, scratch);
            std::vector<double> tol(got.size(), 0.0), va(bank.max_rank);
            for (int t = 0; t < T; ++t) {
              std::vector<std::pair<int32_t, float>> terms = {{st.first[t], st.scale[t]}};
              for (const LoraUse& u : st.more)
                if (u.row == t) terms.emplace_back(u.slot, u.scale);
              int n_terms = 0;
              std::vector<double> bound(out, 0.0);
              for (auto [sl, m] : terms) {
                if (sl < 0 || m == 0.f || bank.ranks[sl] == 0) continue;
                ++n_terms;
                const int r = bank.ranks[sl];
                for (int j = 0; j < r; ++j) {
                  va[j] = 0;
                  for (int64_t i = 0; i < in; ++i)
                    va[j] += std::fabs(static_cast<double>(bank.af[(sl * bank.max_rank + j) * in + i]) * xr[t * in + i]);
                }
                for (int64_t n = 0; n < out; ++n) {
                  double mm = 0;
                  for (int j = 0; j < r; ++j) mm += std::fabs(bank.bf[(sl * bank.max_rank + j) * out + n]) * va[j];
                  bound[n] += std::fabs(m) * mm * (static_cast<double>(in) / 8 + 8 + r + 3);
                }
              }
              if (n_terms == 0) {
                EXPECT_TRUE(test::same_bits(&got[t * out], &y0[t * out], out)) << "token " << t << " changed";
                continue;
              }
              for (int64_t n = 0; n < out; ++n) {
                const size_t i = t * out + n;
                tol[i] = test::kF32Eps * bound[n] +
                         (2.0 + 2 * n_terms) * test::kF32Eps * (std::fabs(y0[i]) + std::fabs(want[i]) + bound[n]);
              }
            }
            EXPECT_EQ(test::count_outside(got.data(), want.data(), tol, got.size(), true), 0);
          }
        }
      }
    }
  }
}

// Exact properties: scale 1 everywhere is the unscaled plan bit for bit; scale 0 leaves y untouched; a
// stack [a (m1), b (m2)] is bit for bit the single-adapter pass of a at m1 followed by that of b at m2, alone,
// in any batch, in an SGMV segment or naive.
TEST(LoraKernels, StacksAreTheirTermsInOrderBitForBit) {
  std::mt19937_64 rng(45);
  ComputePool pool(2);
  for (auto isa : detail::supported_isas()) {
    const auto& kt = detail::kernels_for(isa);
    for (DType dt : {DType::kBF16, DType::kF32}) {
      Bank bank = make_bank(4, 16, 200, 300, dt, {16, 4, 9, 16}, rng());
      const int T = 40;
      std::vector<float> x(T * 200);
      for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
      LoraScratch s;
      auto run = [&](std::span<const int32_t> first, std::span<const float> scale, std::span<const LoraUse> more,
                     std::vector<float>& y, bool merge = true, const float* xs = nullptr) {
        LoraPlan p;
        lora_plan_build(first, scale, more, p, merge);
        detail::lora_apply_with(kt, pool, p, xs ? xs : x.data(), 200, bank.view(), y.data(), 300, s);
      };
      // Scale 1 == unscaled; scale 0 == untouched.
      std::vector<int32_t> slots(T);
      for (int t = 0; t < T; ++t) slots[t] = t < 12 ? 1 : static_cast<int32_t>(rng() % 5) - 1;
      std::vector<float> plain(T * 300, 0.5f), ones = plain, zeros = plain;
      run(slots, {}, {}, plain);
      run(slots, std::vector<float>(T, 1.f), {}, ones);
      run(slots, std::vector<float>(T, 0.f), {}, zeros);
      EXPECT_EQ(0, std::memcmp(plain.data(), ones.data(), plain.size() * 4)) << kt.name;
      EXPECT_TRUE(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.5f; })) << kt.name;
      // Stacks: tokens 0-9 one prefill-like stack [1 x0.5, 3 x1, 0 x-2], the rest random stacks of <= 3.
      Stacks st{std::vector<int32_t>(T, -1), std::vector<float>(T, 1.f), {}};
      std::vector<std::vector<std::pair<int32_t, float>>> stack(T);
      for (int t = 0; t < T; ++t) {
        if (t < 10) {
          stack[t] = {{1, 0.5f}, {3, 1.f}, {0, -2.f}};
        } else {
          std::vector<int32_t> perm = {0, 1, 2, 3};
          std::shuffle(perm.begin(), perm.end(), rng);
          const int depth = static_cast<int>(rng() % 4);
          for (int d = 0; d < depth; ++d) stack[t].emplace_back(perm[d], d == 1 ? 0.75f : 1.f);
        }
        if (!stack[t].empty()) st.first[t] = stack[t][0].first, st.scale[t] = stack[t][0].second;
      }
      for (int d = 1; d < 3; ++d)
        for (int t = T - 1; t >= 0; --t)  // rows descending: the plan must not depend on the listing order across tokens
          if (static_cast<int>(stack[t].size()) > d) st.more.push_back({t, stack[t][d].first, stack[t][d].second});
      std::vector<float> batched(T * 300, 0.5f), naive = batched, by_terms = batched;
      run(st.first, st.scale, st.more, batched);
      run(st.first, st.scale, st.more, naive, /*merge=*/false);
      for (int d = 0; d < 3; ++d) {  // term by term, one single-adapter pass per stack position
        std::vector<int32_t> sl(T, -1);
        std::vector<float> sc(T, 1.f);
        for (int t = 0; t < T; ++t)
          if (static_cast<int>(stack[t].size()) > d) sl[t] = stack[t][d].first, sc[t] = stack[t][d].second;
        run(sl, sc, {}, by_terms);
      }
      EXPECT_EQ(0, std::memcmp(batched.data(), naive.data(), batched.size() * 4)) << kt.name;
      EXPECT_EQ(0, std::memcmp(batched.data(), by_terms.data(), batched.size() * 4)) << kt.name;
      for (int t = 0; t < T; ++t) {  // alone
        std::vector<float> alone(300, 0.5f);
        std::vector<LoraUse> more;
        for (size_t d = 1; d < stack[t].size(); ++d) more.push_back({0, stack[t][d].first, stack[t][d].second});
        run(std::span<const int32_t>(&st.first[t], 1), std::span<const float>(&st.scale[t], 1), more, alone, true,
            &x[t * 200]);
        ASSERT_EQ(0, std::memcmp(alone.data(), &batched[t * 300], 300 * 4)) << kt.name << " token " << t;
      }
    }
  }
}

TEST(LoraKernels, StackedPlanOrdersTermsByStackPosition) {
  // Token 0: [2, 0]; token 1: [0]; token 2: [1, 2, 0]. Loose groups by slot, entries by level within.
  std::vector<int32_t> first = {2, 0, 1};
  std::vector<LoraUse> more = {{2, 2, 1.f}, {0, 0, 0.5f}, {2, 0, 1.f}};
  LoraPlan p;
  lora_plan_build(first, {}, more, p);
  ASSERT_EQ(p.groups.size(), 3u);
  EXPECT_TRUE(p.stacked());
  // slot 0: (row 1, L0), (row 0, L1), (row 2, L2); slot 1: (row 2, L0); slot 2: (row 0, L0), (row 2, L1)
  std::vector<int32_t> rows0(p.rows.begin() + p.groups[0].first, p.rows.begin() + p.groups[0].first + 3);
  EXPECT_EQ(rows0, (std::vector<int32_t>{1, 0, 2}));
  EXPECT_EQ(p.scale[p.groups[0].first + 1], 0.5f);
  EXPECT_FALSE(p.groups[0].contiguous);
  // order: level 0 of groups 0,1,2; level 1 of groups 0,2; level 2 of group 0
  ASSERT_EQ(p.order.size(), 6u);
  std::vector<int32_t> gs;
  for (const LoraRun& r : p.order) gs.push_back(r.group);
  EXPECT_EQ(gs, (std::vector<int32_t>{0, 1, 2, 0, 2, 0}));
  LoraPlan flat;
  lora_plan_build(std::vector<int32_t>{0, 1}, std::vector<float>{0.f, 2.f}, {}, flat);
  ASSERT_EQ(flat.groups.size(), 1u);  // the scale-0 pair is left out
  EXPECT_FALSE(flat.stacked());
  EXPECT_EQ(flat.rows, (std::vector<int32_t>{1}));
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
