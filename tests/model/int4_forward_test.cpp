// Quantized bases end to end: a packed AWQ / GPTQ demo model's logits against the independent reference
// forward on the dequantized weights (tests/util/reference_forward), and the reference's int8 option against
// --quantization int8 at load. The kernels quantize activations to int8 per block, so the tolerance is
// derived from that rounding (see kActTolerance); each check is shown able to fail.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>

#include "kernels/reference.h"
#include "model/demo_model.h"
#include "model/runner.h"
#include "model/weights.h"
#include "util/reference_forward.h"
#include "util/test_util.h"

namespace lp::model {
namespace {

using test::TempDir;

std::vector<float> model_logits(const std::filesystem::path& dir, const std::vector<int32_t>& ids,
                                int threads, const LoadOptions& opt = {}) {
  auto m = Model::load(dir, opt);
  ComputePool pool(threads);
  Runner r(*m, pool, static_cast<int64_t>(ids.size()) + 16, 16, DType::kF32);
  Runner::Item it{r.add_sequence(), ids, true};
  const auto& l = r.step({&it, 1});
  return std::vector<float>(l.begin(), l.end());
}

// The integer kernels round each activation to int8 per block of 64 or 128 columns: an error uniform within
// half a step, step = amax / 127, so rms(dx) = amax / (127 sqrt 12) and, with a block's amax about 4 rms of
// its (roughly Gaussian) values, about 1% of rms(x) per matmul input. Independent errors add in quadrature
// over the matmuls a token passes in sequence (q/k/v -> o -> gate/up -> down per layer, then lm_head:
// 4L + 1 of them): for L = 4 layers sqrt(17) * 0.009 ~ 0.04. The bound below is that, not a fit to one run.
double act_tolerance(int n_layers) {
  const double per_matmul = 4.0 / (127.0 * std::sqrt(12.0));
  return std::sqrt(4.0 * n_layers + 1.0) * per_matmul;
}

struct Int4Case {
  std::string shape, method;
  bool sym;
  std::string label;
};
void PrintTo(const Int4Case& c, std::ostream* os) { *os << c.label; }  // readable ctest names

class Int4VsReference : public ::testing::TestWithParam<Int4Case> {};

TEST_P(Int4VsReference, LogitsMatchTheDequantizedReference) {
  const Int4Case& p = GetParam();
  TempDir dir("int4"), dense("int4_dense");
  DemoSpec spec;
  spec.shape = p.shape;
  spec.seed = 4;
  spec.quantization = p.method;
  spec.gptq_sym = p.sym;
  write_demo_model(dir.path(), spec);
  ModelConfig c = ModelConfig::from_dir(dir.path());
  ASSERT_EQ(c.quant.method, p.method);
  ASSERT_EQ(c.torch_dtype, DType::kF16);
  {
    auto m = Model::load(dir.path());
    EXPECT_EQ(m->weights().quantization, p.method);
    for (const LayerWeights& lw : m->weights().layers)
      for (const kernels::MatView& v : lw.proj) ASSERT_EQ(v.format, kernels::WeightFormat::kQ4);
    EXPECT_EQ(m->weights().lm_head.format, kernels::WeightFormat::kDense);
  }
  // The same pseudo-random weights unquantized (F16), to show the int4 rounding is really there.
  DemoSpec fspec = spec;
  fspec.quantization.clear();
  fspec.dtype = DType::kF16;
  write_demo_model(dense.path(), fspec);

  auto ids = test::demo_ids(19, c.vocab_size, 6);
  auto ref = test::reference_logits(dir.path(), ids);
  auto ref_float = test::reference_logits(dense.path(), ids);
  const double tol = act_tolerance(c.n_layers);
  for (int threads : {1, 2}) {
    auto got = model_logits(dir.path(), ids, threads);
    ASSERT_EQ(got.size(), ref.size());
    const double err = test::normalized_error(got, ref);
    EXPECT_LT(err, tol) << p.label << " threads=" << threads;
    // The check can fail: the unquantized weights' logits are further off than the tolerance, and so is
    // a perturbed reference.
    EXPECT_GT(test::normalized_error(got, ref_float), tol) << p.label;
    std::vector<double> bad = ref;
    for (size_t i = 0; i < bad.size(); i += 97) bad[i] += 0.5;
    EXPECT_GT(test::normalized_error(got, bad), tol) << p.label;
    std::printf("%s threads=%d: vs dequantized reference %.4f, vs float reference %.4f (tolerance %.4f)\n",
                p.label.c_str(), threads, err, test::normalized_error(got, ref_float), tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, Int4VsReference,
                         ::testing::Values(Int4Case{"small", "awq", false, "small_awq"},
                                           Int4Case{"small", "gptq", true, "small_gptq_sym"},
                                           Int4Case{"tiny", "gptq", false, "tiny_gptq_asym"}),
                         [](const ::testing::TestParamInfo<Int4Case>& i) { return i.param.label; });

// Every weight the loader produced is within one quantization step of the float weight it was written
// from (demo-model quantizes round-to-nearest, so |error| <= s / 2, up to s where a clamp at 0 or 15
// bites). A wrong nibble order, group or zero would put weights a whole range off.
TEST(Int4Demo, EveryLoadedWeightIsWithinOneStepOfTheFloatWeight) {
  for (const std::string method : {"awq", "gptq"}) {
    TempDir dir("int4_w"), dense("int4_wf");
    DemoSpec spec;
    spec.shape = "small";
    spec.seed = 9;
    spec.quantization = method;
    spec.gptq_sym = false;
    write_demo_model(dir.path(), spec);
    DemoSpec fspec = spec;
    fspec.quantization.clear();
    fspec.dtype = DType::kF32;
    write_demo_model(dense.path(), fspec);
    ModelConfig c = ModelConfig::from_dir(dir.path());
    ModelWeights q = ModelWeights::load(dir.path(), c);
    ModelWeights f = ModelWeights::load(dense.path(), ModelConfig::from_dir(dense.path()));
    int64_t bad = 0, total = 0;
    double sum_err = 0, sum_step = 0;
    for (int l = 0; l < c.n_layers; ++l)
      for (int p = 0; p < kNumProj; ++p) {
        const kernels::MatView& w4 = q.layers[l].proj[p];
        const kernels::MatView& wf = f.layers[l].proj[p];
        ASSERT_EQ(w4.format, kernels::WeightFormat::kQ4);
        const int64_t ng = w4.row_stride / w4.group;
        for (int64_t n = 0; n < w4.rows; ++n)
          for (int64_t k = 0; k < w4.cols; ++k) {
            const double step = f16_to_f32(w4.group_scale[n * ng + k / w4.group]);
            const double err = std::fabs(kernels::ref::mat_at(w4, n, k) - kernels::ref::mat_at(wf, n, k));
            sum_err += err;
            sum_step += step;
            ++total;
            if (err > step * 1.001 && ++bad <= 5)
              ADD_FAILURE() << method << " layer " << l << " " << proj_name(static_cast<Proj>(p)) << " W["
                            << n << "][" << k << "] off by " << err << " (step " << step << ")";
          }
      }
    EXPECT_EQ(bad, 0) << method;
    // Round to nearest: the mean error is about a quarter step, far from the half step of a random pick.
    EXPECT_LT(sum_err / sum_step, 0.3) << method;
    std::printf("%s: mean error %.3f of a step over %lld weights\n", method.c_str(), sum_err / sum_step,
                static_cast<long long>(total));
    EXPECT_GT(total, 1000000) << method;
  }
}

TEST(Int4Demo, SameSpecSameBytes) {
  TempDir a("int4_a"), b("int4_b");
  DemoSpec spec;
  spec.shape = "tiny";
  spec.quantization = "gptq";
  spec.gptq_sym = false;
  write_demo_model(a.path(), spec);
  write_demo_model(b.path(), spec);
  EXPECT_EQ(test::read_file(a.path() / "model.safetensors"), test::read_file(b.path() / "model.safetensors"));
  EXPECT_EQ(test::read_file(a.path() / "config.json"), test::read_file(b.path() / "config.json"));
  spec.seed = 2;
  write_demo_model(b.path(), spec);
  EXPECT_NE(test::read_file(a.path() / "model.safetensors"), test::read_file(b.path() / "model.safetensors"));
}

// The reference's int8 option is what --quantization int8 runs (the rule, written twice).
TEST(Int8Reference, MatchesInt8AtLoadAndDiffersFromFloat) {
  TempDir dir("int8ref");
  DemoSpec spec;
  spec.shape = "tiny";
  spec.dtype = DType::kF32;
  spec.seed = 5;
  write_demo_model(dir.path(), spec);
  auto ids = test::demo_ids(17, 512, 8);
  auto ref8 = test::reference_logits(dir.path(), ids, test::RefQuant::kInt8);
  auto ref = test::reference_logits(dir.path(), ids);
  LoadOptions opt;
  opt.quantization = Quantization::kInt8;
  auto got = model_logits(dir.path(), ids, 2, opt);
  const double tol = act_tolerance(2);
  const double err8 = test::normalized_error(got, ref8);
  EXPECT_LT(err8, tol);
  // The reference's rounding is really applied: the two references differ by int8 weight rounding
  // (~ 1/(127 sqrt 12) of a row's amax per weight, ~0.5% of the logits), which the quantized run tracks.
  std::vector<float> ref8f(ref8.begin(), ref8.end());
  const double ref_gap = test::normalized_error(ref8f, ref);
  EXPECT_GT(ref_gap, 1e-3);
  EXPECT_LT(ref_gap, 0.05);
  // Activation rounding dominates both gaps, so this is a weak check, but the int8 run must sit nearer
  // the int8 reference than the float one.
  const double err_float = test::normalized_error(got, ref);
  EXPECT_LT(err8, err_float);
  std::printf(
      "int8: vs int8 reference %.5f, vs float reference %.5f, references apart %.5f (tolerance %.4f)\n", err8,
      err_float, ref_gap, tol);
}

}  // namespace
}  // namespace lp::model
