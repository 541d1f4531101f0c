// matmul on every ISA the CPU supports vs the scalar reference (awkward shapes, every dtype, bias and
// accumulate, padded strides), and its batch invariance: a token's output row is bit-identical whatever T
// is, whichever tile shape computed it, and however many threads split the rows.
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

struct Case {
  int64_t T, K, N;
  bool bias, accumulate;
  int64_t pad = 0;  // extra elements per row of x, y and W (filled with NaN in x and W)
};

// Bound on |y - ref| for one element: rounding x to bf16 (relative 2^-8 per product) where the ISA does,
// f32 accumulation over ceil(K/8)+3 levels (at most 8 lanes per accumulator; the bound allows K/8+8), and
// the final bias/accumulate adds.
double matmul_tolerance(const detail::IsaKernels& k, DType w, int64_t K, double abs_sum, double out_mag) {
  double x_round = k.wants_bf16_x(w) ? kBf16Eps : 0.0;
  double acc = (static_cast<double>(K) / 8 + 8) * kF32Eps;
  return (x_round + acc) * abs_sum + 4 * kF32Eps * out_mag;
}

// Runs one case on one ISA and checks every element against the reference; returns the number outside
// tolerance. `perturb` changes one weight of the optimized run (to prove the check can fail).
int64_t run_case(ComputePool& pool, const detail::IsaKernels& k, DType dt, const Case& c, std::mt19937& rng,
                 bool perturb = false) {
  const int64_t ldx = c.K + c.pad, ldy = c.N + c.pad;
  TestMatrix W(dt, c.N, c.K, c.K + c.pad, rng);
  std::vector<float> x = random_floats(rng, c.T * ldx);  // (T, ldx)
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t i = c.K; i < ldx; ++i) x[t * ldx + i] = NAN;
  std::vector<float> bias = random_floats(rng, c.N);
  std::vector<float> y0 = random_floats(rng, c.T * ldy);  // (T, ldy) initial y for accumulate
  std::vector<float> want = y0, got = y0;
  const float* b = c.bias ? bias.data() : nullptr;
  ref::matmul(x.data(), c.T, ldx, W.view, b, want.data(), ldy, c.accumulate);
  if (perturb) W.set(c.N / 2, c.K / 2, ref::mat_at(W.view, c.N / 2, c.K / 2) + 0.25f);
  detail::matmul_with(k, pool, x.data(), c.T, ldx, W.view, b, got.data(), ldy, c.accumulate);

  std::vector<double> tol(want.size(), 0.0);
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t n = 0; n < c.N; ++n) {
      double abs_sum = 0;
      for (int64_t i = 0; i < c.K; ++i) abs_sum += std::fabs(x[t * ldx + i] * ref::mat_at(W.view, n, i));
      double mag = std::fabs(want[t * ldy + n]) + (c.bias ? std::fabs(bias[n]) : 0.0) +
                   (c.accumulate ? std::fabs(y0[t * ldy + n]) : 0.0);
      tol[t * ldy + n] = matmul_tolerance(k, dt, c.K, abs_sum, mag);
    }
  }
  // Padding columns of y must be untouched.
  int64_t bad = 0;
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t n = c.N; n < ldy; ++n)
      if (!same_bits(&got[t * ldy + n], &y0[t * ldy + n], 1)) ++bad;
  return bad + count_outside(got.data(), want.data(), tol, got.size(), !perturb);
}

TEST(Matmul, MatchesReferenceOnAwkwardShapesEveryDtypeEveryIsa) {
  ComputePool pool(2);
  std::mt19937 rng(1);
  int i = 0;
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (DType dt : kDTypes) {
      for (int64_t K : {1, 7, 31, 33, 64, 100, 577}) {
        for (int64_t N : {1, 3, 5, 17, 130}) {
          for (int64_t T : {1, 3, 7, 33}) {
            Case c{T, K, N, i % 2 == 0, i / 2 % 2 == 0, i % 3 == 0 ? 5 : 0};
            ++i;
            SCOPED_TRACE(testing::Message() << k->name << " " << dtype_name(dt) << " T=" << T << " K=" << K
                                            << " N=" << N << " bias=" << c.bias << " acc=" << c.accumulate);
            EXPECT_EQ(run_case(pool, *k, dt, c, rng), 0);
          }
        }
      }
    }
  }
}

TEST(Matmul, ToleranceCheckRejectsAWrongWeight) {
  ComputePool pool(2);
  std::mt19937 rng(2);
  for (const detail::IsaKernels* k : cpu_isas()) {
    SCOPED_TRACE(k->name);
    EXPECT_GT(run_case(pool, *k, DType::kBF16, Case{3, 100, 17, true, false}, rng, /*perturb=*/true), 0);
  }
}

// y rows of a T-token call, computed with a given pool.
std::vector<float> run_rows(ComputePool& pool, const detail::IsaKernels& k, const float* x, int64_t T,
                            int64_t K, const MatView& W, const float* bias, const float* y0) {
  std::vector<float> y = y0 ? std::vector<float>(y0, y0 + T * W.rows) : std::vector<float>(T * W.rows, 0.f);
  detail::matmul_with(k, pool, x, T, K, W, bias, y.data(), W.rows, y0 != nullptr);
  return y;
}

TEST(Matmul, TokenRowIsBitIdenticalAloneAndInAnyBatch) {
  ComputePool pool2(2), pool1(1);
  std::mt19937 rng(3);
  const int64_t T = 33;
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (DType dt : kDTypes) {
      for (int64_t K : {33, 100, 577}) {
        for (int64_t N : {17, 130}) {
          SCOPED_TRACE(testing::Message() << k->name << " " << dtype_name(dt) << " K=" << K << " N=" << N);
          TestMatrix W(dt, N, K, K, rng);
          std::vector<float> x = random_floats(rng, T * K), bias = random_floats(rng, N);
          std::vector<float> y0 = random_floats(rng, T * N);
          for (const float* b :
               {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
            for (const float* acc :
                 {static_cast<const float*>(nullptr), static_cast<const float*>(y0.data())}) {
              std::vector<float> full = run_rows(pool2, *k, x.data(), T, K, W.view, b, acc);
              EXPECT_TRUE(same_bits(full.data(), run_rows(pool1, *k, x.data(), T, K, W.view, b, acc).data(),
                                    full.size()))
                  << "one thread vs two";
              for (int64_t t = 0; t < T; ++t) {
                const float* a0 = acc ? acc + t * N : nullptr;
                std::vector<float> one = run_rows(pool2, *k, x.data() + t * K, 1, K, W.view, b, a0);
                ASSERT_TRUE(same_bits(one.data(), full.data() + t * N, N)) << "T=1 vs T=33, token " << t;
              }
              for (int64_t sub : {2, 4, 5}) {
                for (int64_t t0 = 0; t0 + sub <= T; t0 += 3) {
                  const float* a0 = acc ? acc + t0 * N : nullptr;
                  std::vector<float> part = run_rows(pool2, *k, x.data() + t0 * K, sub, K, W.view, b, a0);
                  ASSERT_TRUE(same_bits(part.data(), full.data() + t0 * N, sub * N))
                      << "T=" << sub << " at token " << t0 << " vs T=33";
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST(Matmul, BitCompareDetectsAOneUlpWeightChange) {
  ComputePool pool(2);
  std::mt19937 rng(4);
  for (const detail::IsaKernels* k : cpu_isas()) {
    SCOPED_TRACE(k->name);
    const int64_t K = 64, N = 4;
    TestMatrix W(DType::kF32, N, K, K, rng);
    std::vector<float> x(K, 0.f);
    x[3] = 1.f;  // the sum is then exactly W[1][3], so a one-ulp change must show
    float w = ref::mat_at(W.view, 1, 3);
    W.set(1, 3, std::nextafter(w, 2.f));
    std::vector<float> a2 = run_rows(pool, *k, x.data(), 1, K, W.view, nullptr, nullptr);
    W.set(1, 3, w);
    std::vector<float> b = run_rows(pool, *k, x.data(), 1, K, W.view, nullptr, nullptr);
    EXPECT_FALSE(same_bits(a2.data(), b.data(), N));
  }
}

TEST(Matmul, LargeShapesMatchReferenceWithGemmAndGemvPaths) {
  // Enough rows and tokens for several row panels and token blocks on the GEMM path.
  ComputePool pool(2);
  std::mt19937 rng(5);
  for (const detail::IsaKernels* k : cpu_isas()) {
    if (k->isa == detail::Isa::kScalar) continue;
    for (int64_t T : {2, 16, 300}) {
      SCOPED_TRACE(testing::Message() << k->name << " T=" << T);
      EXPECT_EQ(run_case(pool, *k, DType::kBF16, Case{T, 1536, 150, true, true}, rng), 0);
    }
  }
}

// matmul_multi (the q/k/v and gate/up path): ONE dispatch over the concatenated rows of several outputs,
// each padded to the ISA's row grain, so a chunk may end in one matrix's padding, span two matrices, or stop
// early at the chunk's end; x is rounded to bf16 once for the outputs that want it. Each output must get
// exactly what its own matmul() call gives it, bit for bit, whatever the pool and whichever outputs sit
// beside it. Row counts are not multiples of any grain, K is odd, x, W and y have padded strides, and bias
// and accumulate vary per output. Dtype sets: all one dtype, and mixed (on avx512bf16 only the BF16
// outputs read the rounded x).
TEST(MatmulMulti, EachOutputIsBitIdenticalToItsOwnMatmulEveryIsaEveryPool) {
  ComputePool pool1(1), pool2(2), pool3(3);
  ComputePool* pools[] = {&pool1, &pool2, &pool3};
  std::mt19937 rng(6);
  const int64_t K = 77, ldx = K + 3;
  // The second set repeats the shapes in another order: with more grains than 4 chunks per thread, pools of
  // 2 and 3 threads then cut chunks that cross from one matrix into the next on every ISA.
  const std::vector<std::vector<int64_t>> row_sets = {{130, 17, 5}, {5, 130, 17, 130, 17, 5}};
  const std::vector<std::vector<DType>> dtype_sets = {{DType::kF32},
                                                      {DType::kF16},
                                                      {DType::kBF16},
                                                      {DType::kBF16, DType::kF32, DType::kF16},
                                                      {DType::kF32, DType::kBF16}};
  int rep = 0;
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (const std::vector<DType>& dts : dtype_sets) {
      for (const std::vector<int64_t>& rows : row_sets) {
        for (int64_t T : {1, 3, 7, 33}) {
          ++rep;
          const size_t n_out = rows.size();
          std::vector<float> x = random_floats(rng, T * ldx);  // (T, ldx), NaN past K
          for (int64_t t = 0; t < T; ++t)
            for (int64_t i = K; i < ldx; ++i) x[t * ldx + i] = NAN;
          std::vector<TestMatrix> W;
          W.reserve(n_out);
          std::vector<std::vector<float>> bias, y0;
          std::vector<int64_t> ldy;
          std::vector<MatmulOut> outs(n_out);
          std::string desc;
          for (size_t i = 0; i < n_out; ++i) {
            const int64_t N = rows[i];
            const DType dt = dts[i % dts.size()];
            W.emplace_back(dt, N, K, K + (i % 2 ? 0 : 5), rng);
            bias.push_back(random_floats(rng, N));
            ldy.push_back(N + 2);
            y0.push_back(random_floats(rng, T * ldy[i]));  // prefilled, padding included
            const bool use_bias = (i + rep) % 2 == 0, accumulate = (i + rep) / 2 % 2 == 0;
            outs[i] = MatmulOut{W[i].view, use_bias ? bias[i].data() : nullptr, nullptr, ldy[i], accumulate};
            desc += std::to_string(N) + std::string(dtype_name(dt)) + (use_bias ? "+bias" : "") +
                    (accumulate ? "+acc" : "") + " ";
          }
          SCOPED_TRACE(testing::Message() << k->name << " T=" << T << " outputs: " << desc);
          // Each output alone, on one thread.
          std::vector<std::vector<float>> want = y0;
          for (size_t i = 0; i < n_out; ++i)
            detail::matmul_with(*k, pool1, x.data(), T, ldx, outs[i].W, outs[i].bias, want[i].data(), ldy[i],
                                outs[i].accumulate);
          // Every other time with a prefetch hint for the next call (these matrices again, in reverse): it
          // only moves prefetches, never a result.
          std::vector<MatView> next;
          if (rep % 2)
            for (size_t i = n_out; i-- > 0;) next.push_back(W[i].view);
          for (ComputePool* pool : pools) {
            std::vector<std::vector<float>> got = y0;
            for (size_t i = 0; i < n_out; ++i) outs[i].y = got[i].data();
            detail::matmul_multi_with(*k, *pool, x.data(), T, ldx, outs, next);
            for (size_t i = 0; i < n_out; ++i)
              EXPECT_TRUE(same_bits(got[i].data(), want[i].data(), got[i].size()))
                  << "output " << i << " with " << pool->size() << " threads";
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace lp::kernels::test
