// The small kernels (rmsnorm, rope, silu*mul, softmax, argmax, embed, add_inplace) on every ISA vs the
// reference, with tolerances from f32 epsilon and the magnitudes involved, plus their batch invariance (a
// token's or an element's result does not depend on its neighbours), and the ISA dispatch itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels_test_util.h"
#include "kernels/reference.h"

namespace lp::kernels::test {
namespace {

constexpr DType kDTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// rmsnorm: sum of squares over ceil(D/8)+3 levels (relative), sqrt/div/2 muls: a few eps more.
std::vector<double> rmsnorm_tolerance(const std::vector<float>& want, int64_t D) {
  std::vector<double> tol(want.size());
  for (size_t i = 0; i < want.size(); ++i) tol[i] = std::fabs(want[i]) * kF32Eps * (D / 16.0 + 16);
  return tol;
}

TEST(RmsNorm, MatchesReferenceEveryWeightDtypeEveryIsa) {
  ComputePool pool(2);
  std::mt19937 rng(1);
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (DType dt : kDTypes) {
      for (int64_t D : {1, 7, 33, 576, 577}) {
        SCOPED_TRACE(testing::Message() << k->name << " " << dtype_name(dt) << " D=" << D);
        const int64_t T = 5;
        TestMatrix w(dt, 1, D, D, rng);
        std::vector<float> x = random_floats(rng, T * D, -3.f, 3.f), want(x.size()), got(x.size());
        ref::rmsnorm(x.data(), T, D, w.view.data, dt, 1e-5f, want.data());
        detail::rmsnorm_with(*k, pool, x.data(), T, D, w.view.data, dt, 1e-5f, got.data());
        EXPECT_EQ(count_outside(got.data(), want.data(), rmsnorm_tolerance(want, D), got.size()), 0);
        // In place (y aliases x) gives the same bits; each token alone gives the same bits.
        std::vector<float> inplace = x;
        detail::rmsnorm_with(*k, pool, inplace.data(), T, D, w.view.data, dt, 1e-5f, inplace.data());
        EXPECT_TRUE(same_bits(inplace.data(), got.data(), got.size()));
        for (int64_t t = 0; t < T; ++t) {
          std::vector<float> one(D);
          detail::rmsnorm_with(*k, pool, x.data() + t * D, 1, D, w.view.data, dt, 1e-5f, one.data());
          EXPECT_TRUE(same_bits(one.data(), got.data() + t * D, D)) << "token " << t;
        }
      }
    }
  }
}

TEST(RmsNorm, ToleranceCheckRejectsAWrongEps) {
  ComputePool pool(1);
  std::mt19937 rng(2);
  const int64_t D = 64;
  std::vector<float> x = random_floats(rng, D, -0.01f, 0.01f), w(D, 1.f), want(D), got(D);
  ref::rmsnorm(x.data(), 1, D, w.data(), DType::kF32, 1e-6f, want.data());
  for (const detail::IsaKernels* k : cpu_isas()) {
    detail::rmsnorm_with(*k, pool, x.data(), 1, D, w.data(), DType::kF32, 2e-6f, got.data());
    EXPECT_GT(count_outside(got.data(), want.data(), rmsnorm_tolerance(want, D), D, false), 0) << k->name;
  }
}

TEST(Rope, MatchesReferenceWithPositionsOutOfOrder) {
  std::mt19937 rng(3);
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (int hd : {2, 14, 64, 80}) {
      SCOPED_TRACE(testing::Message() << k->name << " head_dim=" << hd);
      const int half = hd / 2, n_heads = 3, max_pos = 50;
      std::vector<float> cos_tab(max_pos * half), sin_tab(max_pos * half);
      for (int p = 0; p < max_pos; ++p)
        for (int i = 0; i < half; ++i) {
          double a = p * std::pow(10000.0, -2.0 * i / hd);
          cos_tab[p * half + i] = static_cast<float>(std::cos(a));
          sin_tab[p * half + i] = static_cast<float>(std::sin(a));
        }
      std::vector<int32_t> pos = {7, 0, 49, 3, 3, 21};
      const int64_t T = static_cast<int64_t>(pos.size());
      std::vector<float> x = random_floats(rng, T * n_heads * hd, -4.f, 4.f), want = x, got = x;
      ref::rope(want.data(), T, n_heads, hd, pos.data(), cos_tab.data(), sin_tab.data());
      k->rope(got.data(), T, n_heads, hd, pos.data(), cos_tab.data(), sin_tab.data());
      std::vector<double> tol(x.size());
      for (int64_t t = 0; t < T; ++t)
        for (int h = 0; h < n_heads; ++h)
          for (int i = 0; i < half; ++i) {
            int64_t o = (t * n_heads + h) * hd;
            double c = cos_tab[pos[t] * half + i], s = sin_tab[pos[t] * half + i];
            double m = std::fabs(x[o + i] * c) + std::fabs(x[o + i + half] * s) + std::fabs(x[o + i] * s) +
                       std::fabs(x[o + i + half] * c);
            tol[o + i] = tol[o + i + half] = 2 * kF32Eps * m;
          }
      EXPECT_EQ(count_outside(got.data(), want.data(), tol, got.size()), 0);
      // One token alone gives the same bits as inside the batch.
      std::vector<float> one(x.begin() + 2 * n_heads * hd, x.begin() + 3 * n_heads * hd);
      k->rope(one.data(), 1, n_heads, hd, &pos[2], cos_tab.data(), sin_tab.data());
      EXPECT_TRUE(same_bits(one.data(), got.data() + 2 * n_heads * hd, one.size()));
    }
  }
}

TEST(SiluMul, MatchesReferenceAndIsPositionIndependent) {
  ComputePool pool(2);
  std::mt19937 rng(4);
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (int64_t n : {1, 15, 17, 1000, 40001}) {
      SCOPED_TRACE(testing::Message() << k->name << " n=" << n);
      std::vector<float> g = random_floats(rng, n + 1, -20.f, 20.f), u = random_floats(rng, n + 1, -3.f, 3.f);
      for (float extreme : {-100.f, 100.f, -88.5f, 0.f})
        if (n > 4) g[rng() % n] = extreme;
      std::vector<float> want(n), got(n);
      ref::silu_mul(g.data(), u.data(), want.data(), n);
      detail::silu_mul_with(*k, pool, g.data(), u.data(), got.data(), n);
      // exp within a few ulp, then 1+e, divide, multiply: 16 eps relative; tiny absolute floor for underflow.
      std::vector<double> tol(n);
      for (int64_t i = 0; i < n; ++i) tol[i] = 16 * kF32Eps * std::fabs(want[i]) + 1e-30;
      EXPECT_EQ(count_outside(got.data(), want.data(), tol, n), 0);
      // Shifting the arrays by one element moves every element to another lane: same bits.
      std::vector<float> shifted(n);
      detail::silu_mul_with(*k, pool, g.data() + 1, u.data() + 1, shifted.data(), n - 1);
      EXPECT_TRUE(same_bits(shifted.data(), got.data() + 1, n - 1));
    }
  }
}

TEST(Softmax, MatchesReferenceWithLargeMagnitudes) {
  std::mt19937 rng(5);
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (int64_t n : {1, 2, 17, 1000}) {
      for (float mag : {1.f, 30.f, 1e4f}) {
        SCOPED_TRACE(testing::Message() << k->name << " n=" << n << " magnitude=" << mag);
        std::vector<float> x = random_floats(rng, n, -mag, mag), want = x, got = x;
        if (n > 2) x[1] = x[2] = want[1] = want[2] = got[1] = got[2] = mag;  // ties at the maximum
        ref::softmax(want.data(), n);
        k->softmax(got.data(), n);
        const double m = *std::max_element(x.begin(), x.end());
        // exp argument rounding (|x - m| eps), exp (4 eps), sum of n terms and the final scale.
        std::vector<double> tol(n);
        for (int64_t i = 0; i < n; ++i)
          tol[i] = want[i] * kF32Eps * (16 + n / 4.0 + std::fabs(x[i] - m)) + 1e-37;
        EXPECT_EQ(count_outside(got.data(), want.data(), tol, n), 0);
        double sum = 0;
        for (float v : got) sum += v;
        EXPECT_NEAR(sum, 1.0, kF32Eps * (n + 16));
      }
    }
  }
}

TEST(Softmax, ToleranceCheckRejectsAShiftedInput) {
  std::vector<float> x = {0.f, 1.f, 2.f, 3.f}, want = x, got = x;
  ref::softmax(want.data(), 4);
  got[0] = 1e-3f;  // a small change in one logit
  for (const detail::IsaKernels* k : cpu_isas()) {
    std::vector<float> g = got;
    k->softmax(g.data(), 4);
    std::vector<double> tol(4);
    for (int i = 0; i < 4; ++i) tol[i] = want[i] * kF32Eps * (16 + 1 + 3);
    EXPECT_GT(count_outside(g.data(), want.data(), tol, 4, false), 0) << k->name;
  }
}

// argmax is exact: every ISA gives the reference loop's index (first maximum; NaN never wins; -0 and +0 tie;
// all -inf gives 0) for lengths around the vector widths and the maximum in every position.
TEST(Argmax, EqualsTheScalarLoopEveryIsa) {
  std::mt19937 rng(9);
  const float inf = INFINITY, nan = NAN;
  std::vector<std::vector<float>> cases = {
      {1.f},
      {nan, 5.f, 7.f},                     // x[0] NaN: nothing ever compares greater
      {-inf, -inf, -inf},                  // nothing beats -inf: 0
      {-0.f, 0.f, -0.f},                   // ties: the first
      {-inf, nan, -inf, -3.f, nan, -3.f},  // NaNs skipped, first of the tie
      {1.f, 2.f, nan, 2.f, 2.f, inf, 0.f, inf},
  };
  for (int64_t n : {2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 49152}) {
    std::vector<float> x = random_floats(rng, static_cast<size_t>(n), -5.f, 5.f);
    for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
      std::vector<float> c = x;
      c[pos] = 9.f;
      cases.push_back(c);
      if (pos + 1 < n) {  // a tie later in another lane, and one in the same lane (16 apart)
        c[n - 1] = 9.f;
        if (pos + 16 < n) c[pos + 16] = 9.f;
        cases.push_back(c);
      }
    }
    std::vector<float> all_same(static_cast<size_t>(n), 2.5f);
    cases.push_back(all_same);
  }
  for (const detail::IsaKernels* k : cpu_isas())
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& c = cases[i];
      EXPECT_EQ(k->argmax(c.data(), static_cast<int64_t>(c.size())),
                ref::argmax(c.data(), static_cast<int64_t>(c.size())))
          << k->name << " case " << i << " n=" << c.size();
    }
  EXPECT_EQ(ref::argmax(cases[3].data(), 3), 0);  // the reference itself: -0 and +0 tie
  EXPECT_EQ(ref::argmax(cases[4].data(), 6), 3);
}

TEST(Embed, CopiesRowsExactlyEveryDtype) {
  std::mt19937 rng(6);
  for (DType dt : kDTypes) {
    TestMatrix table(dt, 10, 13, 16, rng);
    std::vector<int32_t> ids = {9, 0, 3, 3};
    std::vector<float> want(4 * 13), got(4 * 13);
    ref::embed(table.view, ids.data(), 4, want.data());
    embed(table.view, ids.data(), 4, got.data());
    EXPECT_TRUE(same_bits(got.data(), want.data(), got.size())) << dtype_name(dt);
  }
}

TEST(AddInplace, IsExact) {
  std::mt19937 rng(7);
  std::vector<float> y = random_floats(rng, 37), x = random_floats(rng, 37), want = y;
  ref::add_inplace(want.data(), x.data(), 37);
  add_inplace(y.data(), x.data(), 37);
  EXPECT_TRUE(same_bits(y.data(), want.data(), 37));
}

TEST(Dispatch, ActiveIsaIsTheBestSupportedUnlessForced) {
  std::vector<detail::Isa> isas = detail::supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), detail::Isa::kScalar);
  const char* forced = std::getenv("LORAPLEX_ISA");
  if (forced == nullptr || *forced == '\0') {
    EXPECT_EQ(std::string(isa_name()), detail::kernels_for(isas.back()).name);
  }
  for (detail::Isa i : isas) EXPECT_EQ(detail::kernels_for(i).isa, i);
}

// The probe's read loop sums every element with either prefetch pattern (the sum keeps the reads alive).
TEST(Bandwidth, ReadSumReadsEveryElementEveryIsaAndPattern) {
  for (size_t n : {size_t{1}, size_t{127}, size_t{128}, size_t{4099}, size_t{100000}}) {
    std::vector<float> x(n, 1.f);
    x[n - 1] = 2.f;  // the tail counts too
    for (const detail::IsaKernels* k : cpu_isas())
      for (int pattern : {0, 1})
        EXPECT_EQ(k->read_sum(x.data(), n, pattern), static_cast<float>(n + 1))
            << k->name << " pattern " << pattern << " n=" << n;
  }
}

TEST(Bandwidth, MeasuresAPositiveRate) {
  ComputePool pool(2);
  double bw = measure_read_bandwidth(pool, size_t{8} << 20, 2);
  EXPECT_GT(bw, 1e8);   // more than 0.1 GB/s
  EXPECT_LT(bw, 1e13);  // less than 10 TB/s
}

}  // namespace
}  // namespace lp::kernels::test
