// The model forward against an independent reference, and the paging/batching invariants:
// decode through the paged cache == prefill, and a batch gives each sequence what it gets alone.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "model/demo_model.h"
#include "model/runner.h"
#include "model/weights.h"
#include "util/reference_forward.h"
#include "util/test_util.h"

namespace lp::model {
namespace {

using test::TempDir;

// Rewrites config.json of `dir` with `patch` merged in.
void patch_config(const std::filesystem::path& dir, const nlohmann::json& patch) {
  auto p = dir / "config.json";
  nlohmann::json j = nlohmann::json::parse(test::read_file(p));
  j.merge_patch(patch);
  test::write_file(p, j.dump(2));
}

std::vector<float> model_logits(const std::filesystem::path& dir, const std::vector<int32_t>& ids,
                                int threads, std::optional<DType> kv_dtype = std::nullopt) {
  auto m = Model::load(dir);
  ComputePool pool(threads);
  Runner r(*m, pool, static_cast<int64_t>(ids.size()) + 16, 16, kv_dtype);
  EXPECT_EQ(r.cache().shape().dtype, kv_dtype.value_or(m->config().torch_dtype));
  Runner::Item it{r.add_sequence(), ids, true};
  const auto& l = r.step({&it, 1});
  return std::vector<float>(l.begin(), l.end());
}

struct ArchCase {
  std::string arch;
  nlohmann::json patch;
  std::string label;
  bool biases = false;  // llama with attention_bias and mlp_bias: every projection has a bias
};

class ForwardVsReference : public ::testing::TestWithParam<ArchCase> {};

TEST_P(ForwardVsReference, F32WeightsMatchWithin1e4) {
  TempDir dir("fwd");
  DemoSpec spec;
  spec.shape = "tiny";
  spec.dtype = DType::kF32;
  spec.arch = GetParam().arch;
  spec.attention_bias = spec.mlp_bias = GetParam().biases;
  spec.seed = 3;
  write_demo_model(dir.path(), spec);
  if (!GetParam().patch.is_null()) patch_config(dir.path(), GetParam().patch);
  if (GetParam().biases) {  // so the bias of each of the seven projections is compared
    ModelConfig c = ModelConfig::from_dir(dir.path());
    for (int p = 0; p < kNumProj; ++p) {
      EXPECT_TRUE(has_bias(c, static_cast<Proj>(p))) << proj_name(static_cast<Proj>(p));
    }
  }
  auto ids = test::demo_ids(37, 512, 5);
  auto ref = test::reference_logits(dir.path(), ids);
  for (int threads : {1, 2}) {
    auto got = model_logits(dir.path(), ids, threads);
    ASSERT_EQ(got.size(), ref.size());
    double err = test::normalized_error(got, ref);
    EXPECT_LT(err, 1e-4) << GetParam().label << " threads=" << threads;
    // The check can fail: a perturbed reference is far off.
    std::vector<double> bad = ref;
    bad[bad.size() / 2] += 1.0;
    bad[7] -= 1.0;
    EXPECT_GT(test::normalized_error(got, bad), 1e-4);
  }
}

// A 16-bit KV cache (the default for a BF16 / F16 model, or asked for) rounds each cached key and value
// once: an F32 model with a BF16 or F16 cache stays close to the f64 reference, and really differs from the
// F32 cache (so the dtype reaches the kernels). The F32 cache is the one held to 1e-4 above.
TEST(KvCacheDtype, SixteenBitCacheStaysCloseToTheReference) {
  TempDir dir("kvdt");
  DemoSpec spec;
  spec.shape = "tiny";
  spec.dtype = DType::kF32;
  spec.seed = 4;
  write_demo_model(dir.path(), spec);
  auto ids = test::demo_ids(37, 512, 6);
  auto ref = test::reference_logits(dir.path(), ids);
  auto f32 = model_logits(dir.path(), ids, 2);
  EXPECT_LT(test::normalized_error(f32, ref), 1e-4);
  for (auto [kd, bound] : {std::pair{DType::kBF16, 1e-2}, std::pair{DType::kF16, 2e-3}}) {
    SCOPED_TRACE(dtype_name(kd));
    auto got = model_logits(dir.path(), ids, 2, kd);
    ASSERT_EQ(got.size(), ref.size());
    const double err = test::normalized_error(got, ref);
    EXPECT_LT(err, bound);
    EXPECT_GT(err, test::normalized_error(f32, ref));
    EXPECT_NE(0, std::memcmp(got.data(), f32.data(), got.size() * sizeof(float)));
    // Rounding K/V to 16 bits is a relative change of <= 2^-9 (BF16) or 2^-12 (F16) per element.
    std::printf("[ info ] %s KV cache: normalized error %.3g (F32 cache %.3g)\n",
                std::string(dtype_name(kd)).c_str(), err, test::normalized_error(f32, ref));
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, ForwardVsReference,
                         ::testing::Values(ArchCase{"llama", nullptr, "llama"},
                                           ArchCase{"qwen2", nullptr, "qwen2_bias"},
                                           ArchCase{"mistral", nullptr, "mistral"},
                                           ArchCase{"llama",
                                                    {{"rope_scaling",
                                                      {{"rope_type", "llama3"},
                                                       {"factor", 8.0},
                                                       {"low_freq_factor", 1.0},
                                                       {"high_freq_factor", 4.0},
                                                       {"original_max_position_embeddings", 16}}}},
                                                    "llama3_rope"},
                                           ArchCase{"llama", {{"tie_word_embeddings", false}}, "untied"},
                                           ArchCase{"llama", nullptr, "llama_all_biases", true}),
                         [](const auto& info) { return info.param.label; });

// The invariants hold for every weight dtype and with the base quantized at load (--quantization int8,
// with and without lm_head): the quantized kernels must be as batch-invariant as the dense ones.
struct PagedCase {
  DType dtype = DType::kBF16;
  Quantization quant = Quantization::kNone;
  bool quantize_lm_head = false;
  std::string label;
};

void PrintTo(const PagedCase& c, std::ostream* os) { *os << c.label; }

class PagedInvariants : public ::testing::TestWithParam<PagedCase> {
 protected:
  void SetUp() override {
    DemoSpec spec;
    spec.shape = "small";
    spec.dtype = GetParam().dtype;
    spec.seed = 11;
    write_demo_model(dir_.path(), spec);
    model_ = Model::load(dir_.path(), options());
    vocab_ = model_->config().vocab_size;
  }
  static LoadOptions options(WeightPlacement placement = WeightPlacement::kMemory) {
    LoadOptions o;
    o.placement = placement;
    o.quantization = GetParam().quant;
    o.quantize_lm_head = GetParam().quantize_lm_head;
    return o;
  }
  TempDir dir_{"paged"};
  std::unique_ptr<Model> model_;
  int vocab_ = 0;
};

// Prefill of the whole sequence vs. a short prefill then one decode step per token: every position's
// logits are bit-identical (same kernels, same per-token arithmetic, KV read through the block table).
TEST_P(PagedInvariants, DecodeStepsEqualPrefill) {
  ComputePool pool(2);
  auto ids = test::demo_ids(41, vocab_, 1);  // crosses two block boundaries (block size 16)
  std::vector<float> want;
  {
    Runner full(*model_, pool, 64);
    Runner::Item it{full.add_sequence(), ids, true};
    const auto& l = full.step({&it, 1});
    want.assign(l.begin(), l.end());
  }
  for (size_t first : {size_t{1}, size_t{5}, size_t{16}}) {
    Runner r(*model_, pool, 128);
    // Occupy some blocks first so this sequence's blocks are not 0, 1, 2.
    int other = r.add_sequence();
    auto filler = test::demo_ids(20, vocab_, 9);
    Runner::Item f{other, filler, false};
    r.step({&f, 1});
    int s = r.add_sequence();
    Runner::Item pre{s, std::span<const int32_t>(ids.data(), first), true};
    const auto& l0 = r.step({&pre, 1});
    ASSERT_EQ(0, std::memcmp(l0.data(), want.data(), first * vocab_ * sizeof(float))) << "prefill " << first;
    for (size_t t = first; t < ids.size(); ++t) {
      Runner::Item d{s, std::span<const int32_t>(ids.data() + t, 1), false};
      const auto& l = r.step({&d, 1});
      ASSERT_EQ(0, std::memcmp(l.data(), want.data() + t * vocab_, vocab_ * sizeof(float)))
          << "first=" << first << " position " << t;
    }
  }
}

// A step that fails (one item does not fit the KV cache) leaves every sequence as it was: the next step
// gives what it would have given without the failed one.
TEST_P(PagedInvariants, FailedStepChangesNothing) {
  ComputePool pool(2);
  auto a = test::demo_ids(10, vocab_, 21), big = test::demo_ids(40, vocab_, 22), next = test::demo_ids(3, vocab_, 23);
  std::vector<float> want;
  {
    Runner r(*model_, pool, 32);
    int s = r.add_sequence();
    Runner::Item it{s, a, false};
    r.step({&it, 1});
    Runner::Item d{s, next, true};
    const auto& l = r.step({&d, 1});
    want.assign(l.begin(), l.end());
  }
  Runner r(*model_, pool, 32);  // 2 blocks: 40 tokens never fit
  int s = r.add_sequence(), t = r.add_sequence();
  std::vector<Runner::Item> both = {{s, a, false}, {t, big, false}};
  EXPECT_THROW(r.step(both), Error);
  EXPECT_EQ(r.length(s), 0);
  Runner::Item it{s, a, false};
  r.step({&it, 1});
  Runner::Item d{s, next, true};
  const auto& l = r.step({&d, 1});
  ASSERT_EQ(0, std::memcmp(l.data(), want.data(), want.size() * sizeof(float)));
}

// Sequences of different lengths in ONE forward call (prefill chunks and decode tokens mixed) get exactly
// the logits they get alone.
TEST_P(PagedInvariants, BatchEqualsSolo) {
  ComputePool pool(2);
  std::vector<std::vector<int32_t>> seqs;
  for (int n : {1, 7, 16, 33, 3}) seqs.push_back(test::demo_ids(n, vocab_, 100 + n));
  std::vector<std::vector<float>> solo;
  for (const auto& s : seqs) {
    Runner r(*model_, pool, 64);
    Runner::Item it{r.add_sequence(), s, true};
    const auto& l = r.step({&it, 1});
    solo.emplace_back(l.begin(), l.end());
  }
  // All five as prefills in one call.
  {
    Runner r(*model_, pool, 512);
    std::vector<Runner::Item> items;
    for (const auto& s : seqs) items.push_back({r.add_sequence(), s, true});
    const auto& l = r.step(items);
    size_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(l.data() + row * vocab_, solo[i].data(), solo[i].size() * sizeof(float)))
          << "sequence " << i;
      row += seqs[i].size();
    }
  }
  // Mixed step: sequence 3 decodes its last token while the others prefill whole.
  {
    Runner r(*model_, pool, 512);
    int s3 = r.add_sequence();
    Runner::Item head{s3, std::span<const int32_t>(seqs[3].data(), seqs[3].size() - 1), false};
    r.step({&head, 1});
    std::vector<Runner::Item> items;
    std::vector<size_t> order;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (i == 3) {
        items.push_back({s3, std::span<const int32_t>(&seqs[3].back(), 1), false});
      } else {
        items.push_back({r.add_sequence(), seqs[i], false});
      }
    }
    const auto& l = r.step(items);
    for (size_t i = 0; i < seqs.size(); ++i) {
      const float* want = solo[i].data() + (seqs[i].size() - 1) * vocab_;
      ASSERT_EQ(0, std::memcmp(l.data() + i * vocab_, want, vocab_ * sizeof(float))) << "sequence " << i;
    }
  }
}

// The rotary table grows with the positions a model has seen. A model whose table grew in two steps (4096
// positions, then more) gives a long sequence exactly what a model that saw it first gives.
TEST(RotaryTable, GrownInStepsEqualsBuiltAtOnce) {
  TempDir dir("rope");
  DemoSpec spec;
  spec.shape = "tiny";
  spec.dtype = DType::kF32;
  spec.seed = 5;
  write_demo_model(dir.path(), spec);
  patch_config(dir.path(), {{"max_position_embeddings", 8192}});
  auto ids = test::demo_ids(4500, 256, 3);
  ComputePool pool(2);
  auto last_logits = [&](Model& m, bool warm_up_short) {
    Runner r(m, pool, 4608);
    if (warm_up_short) {  // the table is built for 4096 positions here, and grown below
      Runner::Item it{r.add_sequence(), std::span<const int32_t>(ids.data(), 8), false};
      r.step({&it, 1});
    }
    Runner::Item it{r.add_sequence(), ids, false};
    const auto& l = r.step({&it, 1});
    return std::vector<float>(l.begin(), l.end());
  };
  auto stepped = Model::load(dir.path()), direct = Model::load(dir.path());
  auto a = last_logits(*stepped, true), b = last_logits(*direct, false);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

// Weights copied into huge-page memory (the default) or read in place from the file mapping: the same
// bytes, so bit-identical logits, for a prefill (GEMM path) and decode steps (GEMV path). The views must
// point into the copy (or into the mapping), or the test would compare a placement with itself.
TEST_P(PagedInvariants, WeightPlacementKeepsLogitsBitIdentical) {
  auto mapped = Model::load(dir_.path(), options(WeightPlacement::kMapped));
  auto& copied = *model_;  // loaded with the default placement
  auto inside = [](const void* p, const Buffer<uint8_t>& b) {
    auto* c = static_cast<const uint8_t*>(p);
    return b.size() > 0 && c >= b.data() && c < b.data() + b.size();
  };
  EXPECT_EQ(mapped->weights().streamed.size(), 0u);
  for (const Model* m : {mapped.get(), &copied}) {
    const bool want = m == &copied;
    const ModelWeights& w = m->weights();
    // Quantized matrices live in their own storage (ModelWeights::quant_storage) under either placement.
    auto dense = [](const kernels::MatView& v) { return v.format == kernels::WeightFormat::kDense; };
    for (const LayerWeights& lw : w.layers)
      for (const kernels::MatView& v : lw.proj) EXPECT_EQ(inside(v.data, w.streamed), want && dense(v));
    EXPECT_EQ(inside(w.lm_head.data, w.streamed), want && dense(w.lm_head));
    if (m->config().tie_word_embeddings && dense(w.lm_head)) {
      EXPECT_EQ(w.embed.data, w.lm_head.data);
    }
  }
  auto ids = test::demo_ids(40, vocab_, 5);
  auto run = [&](Model& m) {
    ComputePool pool(2);
    Runner r(m, pool, 64);
    int s = r.add_sequence();
    std::vector<float> out;
    Runner::Item it{s, std::span<const int32_t>(ids.data(), 32), true};
    const auto& l = r.step({&it, 1});
    out.insert(out.end(), l.begin(), l.end());
    for (size_t i = 32; i < ids.size(); ++i) {
      Runner::Item d{s, std::span<const int32_t>(ids.data() + i, 1), false};
      const auto& ld = r.step({&d, 1});
      out.insert(out.end(), ld.begin(), ld.end());
    }
    return out;
  };
  auto a = run(*mapped), b = run(copied);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

// --quantization int8 does what it says: the projections (and with --quantize-lm-head lm_head) are kQ8,
// the rest keeps the file dtype, and the logits differ from the unquantized model's (a flag that did
// nothing would pass every invariant above) while staying close to them.
TEST_P(PagedInvariants, QuantizedBaseRunsQuantizedWeights) {
  const ModelWeights& w = model_->weights();
  if (GetParam().quant == Quantization::kNone) {  // the default loads the file dtype, untouched
    EXPECT_EQ(w.quantization, "none");
    for (const LayerWeights& lw : w.layers)
      for (const kernels::MatView& v : lw.proj) EXPECT_EQ(v.format, kernels::WeightFormat::kDense);
    return;
  }
  EXPECT_EQ(w.quantization, "int8");
  for (const LayerWeights& lw : w.layers)
    for (const kernels::MatView& v : lw.proj) EXPECT_EQ(v.format, kernels::WeightFormat::kQ8);
  EXPECT_EQ(w.lm_head.format,
            GetParam().quantize_lm_head ? kernels::WeightFormat::kQ8 : kernels::WeightFormat::kDense);
  EXPECT_EQ(w.embed.format, kernels::WeightFormat::kDense);
  EXPECT_EQ(w.embed.dtype, GetParam().dtype);

  auto plain = Model::load(dir_.path());
  EXPECT_EQ(plain->weights().quantization, "none");
  EXPECT_LT(w.bytes_per_decode_step, plain->weights().bytes_per_decode_step);
  auto ids = test::demo_ids(24, vocab_, 31);
  auto logits = [&](Model& m) {
    ComputePool pool(2);
    Runner r(m, pool, 64);
    Runner::Item it{r.add_sequence(), ids, true};
    const auto& l = r.step({&it, 1});
    return std::vector<float>(l.begin(), l.end());
  };
  auto q = logits(*model_), p = logits(*plain);
  ASSERT_EQ(q.size(), p.size());
  EXPECT_NE(0, std::memcmp(q.data(), p.data(), q.size() * sizeof(float)));
  // int8 per output channel keeps a weight within half a step (amax / 254) of its value; through four
  // layers the logits move, but far less than their own size.
  EXPECT_LT(test::normalized_error(q.data(), p.data(), q.size()), 0.05);
}

INSTANTIATE_TEST_SUITE_P(DTypes, PagedInvariants,
                         ::testing::Values(PagedCase{DType::kBF16, Quantization::kNone, false, "BF16"},
                                           PagedCase{DType::kF32, Quantization::kNone, false, "F32"},
                                           PagedCase{DType::kF16, Quantization::kNone, false, "F16"},
                                           PagedCase{DType::kBF16, Quantization::kInt8, false, "BF16_int8"},
                                           PagedCase{DType::kF32, Quantization::kInt8, false, "F32_int8"},
                                           PagedCase{DType::kF16, Quantization::kInt8, false, "F16_int8"},
                                           PagedCase{DType::kBF16, Quantization::kInt8, true,
                                                     "BF16_int8_lm_head"}),
                         [](const auto& info) { return info.param.label; });

}  // namespace
}  // namespace lp::model
