// Quantized weights (kQ8, kQ4) and the integer matmul: the int8 rule of QuantMatrix::quantize_int8 bit for
// bit, activation quantization on every ISA bit-identical to the reference, matmul on every ISA vs an
// independent double computation (the packed layout and the activation rule re-derived here from their
// documentation in kernels.h / quant.h), and batch invariance (a token's row is bit-identical whatever T,
// whichever tile computed it, whatever the thread count).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels_test_util.h"
#include "kernels/quant.h"
#include "kernels/reference.h"

namespace lp::kernels::test {
namespace {

// ---- Independent readers of the documented layouts -------------------------------------------------------

// (integer, zero point, scale) of element (r, c), read from the bytes as kernels.h documents them.
struct QElem {
  int q, z;
  double s;
};
QElem read_elem(const MatView& W, int64_t r, int64_t c) {
  const auto* bytes = static_cast<const uint8_t*>(W.data);
  if (W.format == WeightFormat::kQ8) return {bytes[r * W.row_stride + c], 128, W.row_scale[r]};
  const uint8_t b = bytes[r * (W.row_stride / 2) + (c / 64) * 32 + (c % 64) % 32];
  const int nib = (c % 64) < 32 ? (b & 15) : (b >> 4);
  const int64_t g = c / W.group, ng = W.row_stride / W.group;
  return {nib, W.group_zero[r * ng + g], f16_to_f32(W.group_scale[r * ng + g])};
}

// The activation rule of quant.h: per block, amax / 127 and round-half-even(x * 127 / amax).
struct TestActs {
  std::vector<int> xq;         // (ld)
  std::vector<double> scale;   // (n_blocks)
};
TestActs quantize_row(const float* x, int64_t K, int64_t ld, int block) {
  TestActs a;
  a.xq.assign(static_cast<size_t>(ld), 0);
  for (int64_t k0 = 0; k0 < ld; k0 += block) {
    float amax = 0.f;
    for (int64_t k = k0; k < std::min<int64_t>(k0 + block, K); ++k) amax = std::max(amax, std::fabs(x[k]));
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    a.scale.push_back(amax / 127.f);
    for (int64_t k = k0; k < std::min<int64_t>(k0 + block, K); ++k)
      a.xq[k] = static_cast<int>(std::clamp(std::nearbyint(x[k] * inv), -127.f, 127.f));
  }
  return a;
}

// y = sum_b sx_b * sum_{k in b} s_k (q_k - z_k) xq_k in double, and the magnitude the kernels' f32 rounding
// is relative to (|terms| summed; times the levels of accumulation in the tolerance).
struct Expect {
  double y, abs_sum;
};
Expect expected(const MatView& W, int64_t n, const TestActs& a, int block) {
  Expect e{0, 0};
  for (size_t b = 0; b < a.scale.size(); ++b) {
    for (int64_t k = static_cast<int64_t>(b) * block;
         k < std::min<int64_t>((b + 1) * block, W.row_stride); ++k) {
      const QElem q = read_elem(W, n, k);
      const double term = a.scale[b] * q.s * (q.q - q.z) * a.xq[k];
      e.y += term;
      // kQ4 sums q * x and z * x apart (the zero points come off per output, in f32): bound both.
      e.abs_sum += W.format == WeightFormat::kQ4 ? a.scale[b] * q.s * (q.q + q.z) * std::abs(a.xq[k])
                                                 : std::fabs(term);
    }
  }
  return e;
}

// A random kQ4 matrix: nibbles, zeros in 0..15, f16 scales in [0.005, 0.02].
QuantMatrix random_q4(int64_t N, int64_t K, int32_t group, std::mt19937& rng) {
  QuantMatrix m = QuantMatrix::make_q4(N, K, group, DType::kF16);
  std::uniform_int_distribution<int> nib(0, 15);
  std::uniform_real_distribution<float> sc(0.005f, 0.02f);
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t c = 0; c < K; ++c) m.set_q4(r, c, static_cast<uint8_t>(nib(rng)));
    for (int64_t g = 0; g < m.view().row_stride / group; ++g)
      m.set_group(r, g, f32_to_f16(sc(rng)), static_cast<uint8_t>(nib(rng)));
  }
  return m;
}

QuantMatrix random_q8(int64_t N, int64_t K, std::mt19937& rng) {
  TestMatrix dense(DType::kBF16, N, K, K, rng);
  return QuantMatrix::quantize_int8(dense.view);
}

// ---- The int8 rule ----------------------------------------------------------------------------------------

TEST(QuantizeInt8, FollowsTheRuleBitForBitOnEveryDtype) {
  std::mt19937 rng(7);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t K : {1, 63, 64, 65, 200}) {
      TestMatrix W(dt, 5, K, K + 3, rng);
      for (int64_t c = 0; c < K; ++c) W.set(2, c, 0.f);  // a zero row: scale 1, all q 0
      QuantMatrix q = QuantMatrix::quantize_int8(W.view);
      const MatView& v = q.view();
      ASSERT_EQ(v.format, WeightFormat::kQ8);
      ASSERT_EQ(v.row_stride, (K + 63) / 64 * 64);
      for (int64_t r = 0; r < 5; ++r) {
        float amax = 0.f;
        for (int64_t c = 0; c < K; ++c) amax = std::max(amax, std::fabs(ref::mat_at(W.view, r, c)));
        const float scale = amax > 0.f ? amax / 127.f : 1.f;
        ASSERT_EQ(v.row_scale[r], scale) << "row " << r;
        const auto* bytes = static_cast<const uint8_t*>(v.data) + r * v.row_stride;
        for (int64_t c = 0; c < v.row_stride; ++c) {
          const float want = c < K ? std::nearbyint(ref::mat_at(W.view, r, c) / scale) : 0.f;
          ASSERT_EQ(static_cast<int>(bytes[c]) - 128, static_cast<int>(want)) << r << "," << c;
        }
      }
    }
  }
}

TEST(QuantizeInt8, TiesRoundToEven) {
  // Row max 127 gives scale 1 exactly, so W / scale is W: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, 0.5 -> 0.
  std::vector<float> row = {127.f, 2.5f, 3.5f, -2.5f, 0.5f, -127.f};
  MatView d{row.data(), DType::kF32, 1, 6, 6};
  QuantMatrix q = QuantMatrix::quantize_int8(d);
  const auto* b = static_cast<const uint8_t*>(q.view().data);
  std::vector<int> got;
  for (int c = 0; c < 6; ++c) got.push_back(b[c] - 128);
  EXPECT_EQ(got, (std::vector<int>{127, 2, 4, -2, 0, -127}));
  EXPECT_EQ(q.view().row_scale[0], 1.f);
}

// ---- Activations --------------------------------------------------------------------------------------------

TEST(QuantizeActs, EveryIsaGivesTheRuleBitForBit) {
  std::mt19937 rng(3);
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (int block : {64, 128}) {
      for (int64_t K : {1, 17, 64, 100, 128, 576, 577}) {
        const int64_t T = 3, ldx = K + 5;
        std::vector<float> x = random_floats(rng, T * ldx, -3.f, 3.f);
        for (int64_t i = 0; i < std::min<int64_t>(K, 64); ++i) x[ldx + i] = 0.f;  // an all-zero block
        if (K > 10) x[2 * ldx + 3] = 1e-30f;                                       // tiny but not zero
        QuantActsBuffer buf;
        QuantActs a = buf.prepare(T, K, block);
        k->quantize_acts(x.data(), 0, T, ldx, K, a);
        for (int64_t t = 0; t < T; ++t) {
          TestActs want = quantize_row(x.data() + t * ldx, K, a.ld, block);
          ASSERT_EQ(static_cast<int64_t>(want.scale.size()), a.n_blocks);
          for (int64_t b = 0; b < a.n_blocks; ++b) {
            ASSERT_EQ(a.scale[t * a.n_blocks + b], static_cast<float>(want.scale[b])) << k->name;
            int32_t lanes[16] = {};
            for (int64_t c = b * block; c < std::min<int64_t>((b + 1) * block, a.ld); ++c)
              lanes[(c % 64) / 4] += want.xq[c];
            for (int l = 0; l < 16; ++l) ASSERT_EQ(a.lane_sum[(t * a.n_blocks + b) * 16 + l], lanes[l]);
          }
          for (int64_t c = 0; c < a.ld; ++c)
            ASSERT_EQ(a.xq[t * a.ld + c], want.xq[c]) << k->name << " K=" << K << " t=" << t << " c=" << c;
        }
      }
    }
  }
}

// ---- The matmul -------------------------------------------------------------------------------------------

struct QCase {
  WeightFormat format;
  int32_t group;  // kQ4
  int64_t T, K, N;
  bool bias, accumulate;
};

// Elements outside tolerance of one case on one ISA; `perturb` flips a nibble / byte of the optimized run.
int64_t run_qcase(ComputePool& pool, const detail::IsaKernels& k, const QCase& c, std::mt19937& rng,
                  bool perturb = false) {
  QuantMatrix m = c.format == WeightFormat::kQ8 ? random_q8(c.N, c.K, rng) : random_q4(c.N, c.K, c.group, rng);
  const MatView& W = m.view();
  const int64_t ldx = c.K + 3, ldy = c.N + 2;
  std::vector<float> x = random_floats(rng, c.T * ldx, -2.f, 2.f);
  std::vector<float> bias = random_floats(rng, c.N);
  std::vector<float> y0 = random_floats(rng, c.T * ldy);
  const int block = act_block(W);
  std::vector<float> got = y0;
  if (perturb) {
    if (c.format == WeightFormat::kQ4) {
      m.set_q4(c.N / 2, c.K / 2, static_cast<uint8_t>((m.q4_at(c.N / 2, c.K / 2) + 8) % 16));
    } else {
      auto* b = const_cast<uint8_t*>(static_cast<const uint8_t*>(W.data)) + (c.N / 2) * W.row_stride + c.K / 2;
      *b = static_cast<uint8_t>(*b ^ 0x40);
    }
  }
  detail::matmul_with(k, pool, x.data(), c.T, ldx, W, c.bias ? bias.data() : nullptr, got.data(), ldy,
                      c.accumulate);
  if (perturb) {  // undo, so `expected` sees the unperturbed weights
    if (c.format == WeightFormat::kQ4) {
      m.set_q4(c.N / 2, c.K / 2, static_cast<uint8_t>((m.q4_at(c.N / 2, c.K / 2) + 8) % 16));
    } else {
      auto* b = const_cast<uint8_t*>(static_cast<const uint8_t*>(W.data)) + (c.N / 2) * W.row_stride + c.K / 2;
      *b = static_cast<uint8_t>(*b ^ 0x40);
    }
  }
  int64_t bad = 0;
  for (int64_t t = 0; t < c.T; ++t) {
    TestActs a = quantize_row(x.data() + t * ldx, c.K, W.row_stride, block);
    for (int64_t n = 0; n < c.N; ++n) {
      Expect e = expected(W, n, a, block);
      double want = e.y + (c.bias ? bias[n] : 0.0) + (c.accumulate ? y0[t * ldy + n] : 0.0);
      // f32: one rounding per block product and FMA, a 16-lane tree sum, the row scale, bias, accumulate.
      const double nb = static_cast<double>(a.scale.size());
      double tol = (nb + 24) * kF32Eps * e.abs_sum + 4 * kF32Eps * (std::fabs(want) + std::fabs(y0[t * ldy + n]));
      if (!(std::fabs(got[t * ldy + n] - want) <= tol)) {
        if (!perturb && bad < 5)
          ADD_FAILURE() << k.name << " format " << static_cast<int>(c.format) << " g" << c.group << " T" << c.T
                        << " K" << c.K << " N" << c.N << " at t=" << t << " n=" << n << ": got "
                        << got[t * ldy + n] << " want " << want << " tol " << tol;
        ++bad;
      }
    }
    for (int64_t n = c.N; n < ldy; ++n)  // padding untouched
      if (!same_bits(&got[t * ldy + n], &y0[t * ldy + n], 1)) ++bad;
  }
  return bad;
}

TEST(QuantMatmul, MatchesIndependentComputationOnAwkwardShapesEveryIsa) {
  ComputePool pool(2);
  std::mt19937 rng(11);
  int i = 0;
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (auto [fmt, group] : {std::pair{WeightFormat::kQ8, 0}, {WeightFormat::kQ4, 64}, {WeightFormat::kQ4, 128},
                              {WeightFormat::kQ4, 192}}) {
      for (int64_t K : {1, 64, 100, 128, 384, 577}) {
        const int64_t Kp = (K + 63) / 64 * 64;
        if (fmt == WeightFormat::kQ4 && Kp % group != 0) continue;
        for (int64_t N : {1, 5, 17, 70}) {
          for (int64_t T : {1, 2, 3, 4, 5, 8}) {
            QCase c{fmt, group, T, K, N, i % 2 == 0, i / 2 % 2 == 0};
            ++i;
            EXPECT_EQ(run_qcase(pool, *k, c, rng), 0);
          }
        }
      }
    }
  }
}

TEST(QuantMatmul, ToleranceCheckRejectsAWrongWeight) {
  ComputePool pool(1);
  std::mt19937 rng(5);
  for (const detail::IsaKernels* k : cpu_isas()) {
    EXPECT_GT(run_qcase(pool, *k, {WeightFormat::kQ8, 0, 3, 256, 9, false, false}, rng, true), 0) << k->name;
    EXPECT_GT(run_qcase(pool, *k, {WeightFormat::kQ4, 128, 5, 256, 9, false, false}, rng, true), 0) << k->name;
  }
}

// Token t's row of y, computed inside batches of every size up to 9 and with 1 or 2 threads, is bit-identical
// to the row computed alone (GEMV for T < 4, GEMM tiles of 3 tokens and remainders otherwise).
TEST(QuantMatmul, TokenRowIsBitIdenticalAloneAndInAnyBatch) {
  std::mt19937 rng(9);
  for (const detail::IsaKernels* k : cpu_isas()) {
    for (auto [fmt, group] : {std::pair{WeightFormat::kQ8, 0}, {WeightFormat::kQ4, 64}, {WeightFormat::kQ4, 256}}) {
      const int64_t K = 768, N = 83, T = 9;
      QuantMatrix m = fmt == WeightFormat::kQ8 ? random_q8(N, K, rng) : random_q4(N, K, group, rng);
      std::vector<float> x = random_floats(rng, T * K, -2.f, 2.f);
      std::vector<float> alone(T * N);
      ComputePool one(1);
      for (int64_t t = 0; t < T; ++t)
        detail::matmul_with(*k, one, x.data() + t * K, 1, K, m.view(), nullptr, alone.data() + t * N, N, false);
      for (int threads : {1, 2}) {
        ComputePool pool(threads);
        for (int64_t Tb = 2; Tb <= T; ++Tb) {
          std::vector<float> y(Tb * N);
          detail::matmul_with(*k, pool, x.data(), Tb, K, m.view(), nullptr, y.data(), N, false);
          for (int64_t t = 0; t < Tb; ++t)
            ASSERT_TRUE(same_bits(&y[t * N], &alone[t * N], N))
                << k->name << " fmt " << static_cast<int>(fmt) << " T=" << Tb << " t=" << t << " threads " << threads;
        }
      }
    }
  }
}

TEST(QuantMatmul, LargeShapesMatchWithGemmAndGemvPaths) {
  ComputePool pool(2);
  std::mt19937 rng(13);
  for (const detail::IsaKernels* k : cpu_isas()) {
    if (k->isa == detail::Isa::kScalar || k->isa == detail::Isa::kAvx2) continue;  // these run the reference
    for (int64_t T : {1, 40}) {
      EXPECT_EQ(run_qcase(pool, *k, {WeightFormat::kQ8, 0, T, 2048, 300, true, false}, rng), 0);
      EXPECT_EQ(run_qcase(pool, *k, {WeightFormat::kQ4, 128, T, 2048, 300, false, true}, rng), 0);
    }
  }
}

// matmul_multi with a dense and two quantized outputs of different activation blocks: each output is
// bit-identical to its own matmul.
TEST(QuantMatmul, MultiWithMixedFormatsEqualsSeparateCalls) {
  std::mt19937 rng(17);
  ComputePool pool(2);
  const int64_t K = 640, T = 5;
  QuantMatrix a = random_q8(40, K, rng), b = random_q4(33, K, 64, rng);
  TestMatrix d(DType::kBF16, 21, K, K, rng);
  std::vector<float> x = random_floats(rng, T * K);
  for (const detail::IsaKernels* k : cpu_isas()) {
    std::vector<float> ya(T * 40), yb(T * 33), yd(T * 21), sa(T * 40), sb(T * 33), sd(T * 21);
    MatmulOut outs[] = {{a.view(), nullptr, ya.data(), 40, false},
                        {d.view, nullptr, yd.data(), 21, false},
                        {b.view(), nullptr, yb.data(), 33, false}};
    detail::matmul_multi_with(*k, pool, x.data(), T, K, outs);
    detail::matmul_with(*k, pool, x.data(), T, K, a.view(), nullptr, sa.data(), 40, false);
    detail::matmul_with(*k, pool, x.data(), T, K, b.view(), nullptr, sb.data(), 33, false);
    detail::matmul_with(*k, pool, x.data(), T, K, d.view, nullptr, sd.data(), 21, false);
    EXPECT_TRUE(same_bits(ya.data(), sa.data(), ya.size())) << k->name;
    EXPECT_TRUE(same_bits(yb.data(), sb.data(), yb.size())) << k->name;
    EXPECT_TRUE(same_bits(yd.data(), sd.data(), yd.size())) << k->name;
  }
}

}  // namespace
}  // namespace lp::kernels::test
