// LoRA in the model: adapter output == base with merged weights; a mixed-adapter batch gives every
// sequence exactly what it gets alone (also on a base quantized to int8 at load, where the adapters stay
// BF16 / f32 and add on top); slot -1 is bit-identical to no adapter machinery at all; per-request scales
// and stacks equal the merged weights and batch like everything else.
#include <gtest/gtest.h>

#include <cstring>

#include "lora/adapter.h"
#include "lora/demo_adapter.h"
#include "lora/merge.h"
#include "lora/slot_bank.h"
#include "model/demo_model.h"
#include "model/runner.h"
#include "util/reference_forward.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

using model::Model;
using model::Runner;

// All-position logits of one sequence, optionally through adapter slot(s) `slot` of `bank`.
std::vector<float> logits_of(Model& m, const std::vector<int32_t>& ids, const SlotBank* bank,
                             Runner::LoraStack slot) {
  ComputePool pool(2);
  Runner r(m, pool, static_cast<int64_t>(ids.size()) + 16);
  if (bank) r.set_lora(&bank->view());
  Runner::Item it{r.add_sequence(), ids, true, slot};
  const auto& l = r.step({&it, 1});
  return std::vector<float>(l.begin(), l.end());
}

struct SoloSeq {
  std::vector<int32_t> ids;
  Runner::LoraStack lora;
};

// All the sequences in ONE prefill call, and (each prefilled alone but for its last token) in ONE decode step,
// give bit for bit the logits they got alone (`solo`: all positions of each).
void expect_batches_equal_solo(Model& m, const SlotBank& bank, const std::vector<SoloSeq>& seqs,
                               const std::vector<std::vector<float>>& solo) {
  const int V = m.config().vocab_size;
  ComputePool pool(2);
  {
    Runner r(m, pool, 1024);
    r.set_lora(&bank.view());
    std::vector<Runner::Item> items;
    for (const auto& s : seqs) items.push_back({r.add_sequence(), s.ids, true, s.lora});
    const auto& l = r.step(items);
    size_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(l.data() + row * V, solo[i].data(), solo[i].size() * 4)) << "prefill seq " << i;
      row += seqs[i].ids.size();
    }
  }
  Runner r(m, pool, 1024);
  r.set_lora(&bank.view());
  std::vector<Runner::Item> items;
  for (const auto& s : seqs) {
    const int id = r.add_sequence();
    Runner::Item it{id, std::span<const int32_t>(s.ids.data(), s.ids.size() - 1), false, s.lora};
    r.step({&it, 1});
    items.push_back({id, std::span<const int32_t>(&s.ids.back(), 1), false, s.lora});
  }
  const auto& l = r.step(items);
  for (size_t i = 0; i < seqs.size(); ++i)
    ASSERT_EQ(0, std::memcmp(l.data() + i * V, solo[i].data() + (seqs[i].ids.size() - 1) * V, V * 4))
        << "decode seq " << i;
}

class LoraModel : public ::testing::Test {
 protected:
  void make(DType base_dtype, const std::string& shape, const model::LoadOptions& load = {},
            const std::string& checkpoint_quant = "") {
    model::DemoSpec spec;
    spec.shape = shape;
    spec.dtype = base_dtype;
    spec.quantization = checkpoint_quant;
    spec.seed = 21;
    model::write_demo_model(dir_.path() / "base", spec);
    model_ = Model::load(dir_.path() / "base", load);
  }
  void mixed_batch_equals_solo();
  std::filesystem::path adapter(int i, int rank, DType dt) {
    auto p = dir_.path() / ("a" + std::to_string(i));
    if (!std::filesystem::exists(p)) write_demo_adapter(p, model_->config(), demo_adapter_spec(i, rank, true, 5, dt));
    return p;
  }
  test::TempDir dir_{"lora"};
  std::unique_ptr<Model> model_;
};

// For each of the four mixed specs (all modules; attention-only rsLoRA; q/v with rank and alpha patterns;
// MLP-only with the ".default" infix): F32 weights, F32 slots, normalized error < 1e-4 vs the merged model.
TEST_F(LoraModel, AdapterEqualsMergedF32) {
  make(DType::kF32, "tiny");
  auto ids = test::demo_ids(29, model_->config().vocab_size, 3);
  auto base = logits_of(*model_, ids, nullptr, -1);
  for (int i = 0; i < 4; ++i) {
    auto ad = adapter(i, 8, DType::kF32);
    LoraAdapter la = load_adapter(ad, base_shapes(model_->config()));
    SlotBank bank(model_->config(), 3, 16, DType::kF32);
    bank.load(2, pack_adapter(la, DType::kF32));
    auto got = logits_of(*model_, ids, &bank, 2);
    auto merged_dir = dir_.path() / ("merged" + std::to_string(i));
    merge_adapter(dir_.path() / "base", ad, merged_dir);
    auto merged = Model::load(merged_dir);
    auto want = logits_of(*merged, ids, nullptr, -1);
    double err = test::normalized_error(got.data(), want.data(), got.size());
    EXPECT_LT(err, 1e-4) << "adapter " << i;
    // ... and the adapter really changes the output (so the comparison can fail).
    EXPECT_GT(test::normalized_error(base.data(), want.data(), got.size()), 1e-2) << "adapter " << i;
  }
}

// Mixed batch == solo, bit for bit (tolerance 0: every kernel is batch invariant), for BF16 base + BF16
// slots, in prefill and in decode: 4 adapters of ranks 16/8/4(+16 via pattern)/16 and different target sets,
// plus base-only sequences, one forward call.
TEST_F(LoraModel, MixedBatchEqualsSolo) {
  make(DType::kBF16, "small");
  mixed_batch_equals_solo();
}

model::LoadOptions int8_load() {
  model::LoadOptions o;
  o.quantization = model::Quantization::kInt8;
  return o;
}

// The same on a base quantized to int8 at load (--quantization int8): the quantized kernels are batch
// invariant too, and the BF16 LoRA term of each token's adapter adds on top of them. An F32 file, so that
// lm_head stays F32 and its input is not rounded to BF16, which would hide a one-ulp difference upstream.
TEST_F(LoraModel, MixedBatchEqualsSoloOnInt8Base) {
  make(DType::kF32, "small", int8_load());
  ASSERT_EQ(model_->weights().quantization, "int8");
  mixed_batch_equals_solo();
}

// And on an AWQ int4 checkpoint (the QLoRA case): kQ4 projections, F16 elsewhere, BF16 adapters on top.
TEST_F(LoraModel, MixedBatchEqualsSoloOnAwqBase) {
  make(DType::kF16, "small", {}, "awq");
  ASSERT_EQ(model_->weights().quantization, "awq");
  mixed_batch_equals_solo();
}

// An adapter on the int8 base changes the output by about what it changes on the unquantized base: the
// LoRA path is untouched by quantization (only the base's part of each projection moved, by a quantization
// step at most).
TEST_F(LoraModel, AdapterOnInt8BaseAddsAboutTheSameUpdate) {
  make(DType::kF32, "tiny");
  auto plain = std::move(model_);
  model_ = Model::load(dir_.path() / "base", int8_load());
  auto ids = test::demo_ids(29, model_->config().vocab_size, 3);
  LoraAdapter la = load_adapter(adapter(0, 8, DType::kF32), base_shapes(model_->config()));
  SlotBank bank(model_->config(), 1, 8, DType::kF32);
  bank.load(0, pack_adapter(la, DType::kF32));
  auto delta = [&](Model& m) {
    auto with = logits_of(m, ids, &bank, 0), without = logits_of(m, ids, nullptr, -1);
    for (size_t i = 0; i < with.size(); ++i) with[i] -= without[i];
    return with;
  };
  auto dq = delta(*model_), dp = delta(*plain);
  double norm = 0;
  for (float v : dp) norm += static_cast<double>(v) * v;
  ASSERT_GT(norm, 1e-2) << "the adapter must change the output for this comparison to mean anything";
  // 0.04 measured (tiny F32, AVX-512); an adapter dropped or added twice gives 1.
  EXPECT_LT(test::normalized_error(dq.data(), dp.data(), dq.size()), 0.15);
  EXPECT_NE(0, std::memcmp(dq.data(), dp.data(), dq.size() * 4)) << "the int8 base changed nothing";
}

void LoraModel::mixed_batch_equals_solo() {
  const int V = model_->config().vocab_size;
  SlotBank bank(model_->config(), 4, 16, DType::kBF16);
  for (int i = 0; i < 4; ++i)
    bank.load(i, pack_adapter(load_adapter(adapter(i, 16, DType::kBF16), base_shapes(model_->config())),
                              DType::kBF16));
  std::vector<SoloSeq> seqs;
  const int slots[] = {0, -1, 1, 2, 3, -1, 2, 0};
  for (int i = 0; i < 8; ++i) seqs.push_back({test::demo_ids(5 + 4 * i, V, 50 + i), slots[i]});
  std::vector<std::vector<float>> solo;
  for (const auto& s : seqs) solo.push_back(logits_of(*model_, s.ids, &bank, s.lora));
  expect_batches_equal_solo(*model_, bank, seqs, solo);
  ComputePool pool(2);
  // Decode of few tokens (the GEMV path, under kGemmMinTokens): sequences 0 (slot 0) and 2 (slot 1) decode
  // their last token together, against their solo prefill (the GEMM path).
  {
    Runner r(*model_, pool, 1024);
    r.set_lora(&bank.view());
    std::vector<Runner::Item> items;
    for (size_t i : {size_t{0}, size_t{2}}) {
      const int id = r.add_sequence();
      Runner::Item it{id, std::span<const int32_t>(seqs[i].ids.data(), seqs[i].ids.size() - 1), false,
                      seqs[i].lora};
      r.step({&it, 1});
      items.push_back({id, std::span<const int32_t>(&seqs[i].ids.back(), 1), false, seqs[i].lora});
    }
    const auto& l = r.step(items);
    for (size_t j = 0; j < 2; ++j) {
      const size_t i = j == 0 ? 0 : 2;
      ASSERT_EQ(0, std::memcmp(l.data() + j * V, solo[i].data() + (seqs[i].ids.size() - 1) * V, V * 4))
          << "two-token decode seq " << i;
    }
  }
  // The adapters differ from each other and from the base (so equality above is not vacuous).
  for (size_t i = 1; i < 5; ++i)
    EXPECT_NE(0, std::memcmp(solo[0].data(), solo[i].data(), V * 4)) << i;
}

// Per-request scales and stacks vs the independent reference forward (tests/util) on the base with the
// adapters merged in double (W + sum_i m_i·s_i·B_i·A_i): F32 weights and slots, normalized error < 1e-4.
TEST_F(LoraModel, ScalesAndStacksEqualTheReferenceOnMergedWeights) {
  make(DType::kF32, "tiny");
  SlotBank bank(model_->config(), 4, 16, DType::kF32);
  std::vector<std::filesystem::path> ads;
  for (int i = 0; i < 3; ++i) {
    ads.push_back(adapter(i, 8, DType::kF32));
    bank.load(i, pack_adapter(load_adapter(ads[i], base_shapes(model_->config())), DType::kF32));
  }
  auto ids = test::demo_ids(21, model_->config().vocab_size, 4);
  auto base = logits_of(*model_, ids, nullptr, -1);
  struct Case {
    std::vector<std::pair<int32_t, float>> stack;  // (adapter = slot, scale)
  };
  const std::vector<Case> cases = {{{{0, 0.5f}}}, {{{1, 2.f}}}, {{{2, -1.f}}},
                                   {{{0, 1.f}, {1, 0.5f}}}, {{{2, 0.75f}, {0, 1.f}, {1, -0.5f}}}};
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& st = cases[c].stack;
    std::vector<MergeTerm> terms;
    for (auto [a, m] : st) terms.push_back({ads[a], m});
    auto merged = dir_.path() / ("merged_stack" + std::to_string(c));
    merge_adapters(dir_.path() / "base", terms, merged);
    std::vector<double> want = test::reference_logits(merged, ids);
    Runner::LoraStack stack(st[0].first, st[0].second, {st.begin() + 1, st.end()});
    auto got = logits_of(*model_, ids, &bank, stack);
    EXPECT_LT(test::normalized_error(got, want), 1e-4) << "case " << c;
    // The case really changes the output, and every adapter of a stack counts: dropping the last one moves
    // the result away from the merged reference.
    std::vector<double> base_d(base.begin(), base.end());
    EXPECT_GT(test::normalized_error(got, base_d), 1e-2) << "case " << c;
    if (st.size() > 1) {
      Runner::LoraStack shorter(st[0].first, st[0].second, {st.begin() + 1, st.end() - 1});
      EXPECT_GT(test::normalized_error(logits_of(*model_, ids, &bank, shorter), want), 1e-3) << "case " << c;
    }
  }
}

// Scales and stacks in one mixed batch with plain adapter and base requests: every sequence gets exactly
// (bit for bit) what it gets alone, in prefill and in decode; scale 0 is the base, bit for bit; an explicit
// scale of 1 is the plain adapter, bit for bit.
TEST_F(LoraModel, ScaledAndStackedMixedBatchEqualsSolo) {
  make(DType::kBF16, "small");
  const int V = model_->config().vocab_size;
  SlotBank bank(model_->config(), 4, 16, DType::kBF16);
  for (int i = 0; i < 4; ++i)
    bank.load(i, pack_adapter(load_adapter(adapter(i, 16, DType::kBF16), base_shapes(model_->config())),
                              DType::kBF16));
  std::vector<SoloSeq> seqs = {
      {test::demo_ids(9, V, 60), Runner::LoraStack(0)},
      {test::demo_ids(12, V, 61), Runner::LoraStack(-1)},
      {test::demo_ids(10, V, 62), Runner::LoraStack(1, 0.5f)},
      {test::demo_ids(11, V, 63), Runner::LoraStack(2, 1.f, {{3, 0.25f}})},
      {test::demo_ids(13, V, 64), Runner::LoraStack(3, -1.f, {{0, 1.f}, {1, 2.f}})},
      {test::demo_ids(8, V, 65), Runner::LoraStack(1, 0.f)},
      {test::demo_ids(7, V, 66), Runner::LoraStack(0, 1.f, {{2, 1.f}})},
  };
  std::vector<std::vector<float>> solo;
  for (const auto& s : seqs) solo.push_back(logits_of(*model_, s.ids, &bank, s.lora));
  expect_batches_equal_solo(*model_, bank, seqs, solo);
  // Scale 0 == no adapter machinery at all; an explicit 1 == the plain slot.
  auto base5 = logits_of(*model_, seqs[5].ids, nullptr, -1);
  EXPECT_EQ(0, std::memcmp(base5.data(), solo[5].data(), base5.size() * 4));
  auto plain2 = logits_of(*model_, seqs[2].ids, &bank, Runner::LoraStack(1));
  auto one2 = logits_of(*model_, seqs[2].ids, &bank, Runner::LoraStack(1, 1.f));
  EXPECT_EQ(0, std::memcmp(plain2.data(), one2.data(), one2.size() * 4));
  EXPECT_NE(0, std::memcmp(plain2.data(), solo[2].data(), one2.size() * 4));  // 0.5 is not 1
}

// Slot -1 with a bank full of adapters == no bank at all, bit for bit.
TEST_F(LoraModel, SlotMinusOneEqualsBase) {
  make(DType::kBF16, "tiny");
  SlotBank bank(model_->config(), 2, 8, DType::kBF16);
  bank.load(0, pack_adapter(load_adapter(adapter(0, 8, DType::kBF16), base_shapes(model_->config())), DType::kBF16));
  bank.load(1, pack_adapter(load_adapter(adapter(1, 8, DType::kBF16), base_shapes(model_->config())), DType::kBF16));
  auto ids = test::demo_ids(33, model_->config().vocab_size, 8);
  auto plain = logits_of(*model_, ids, nullptr, -1);
  auto minus_one = logits_of(*model_, ids, &bank, -1);
  ASSERT_EQ(0, std::memcmp(plain.data(), minus_one.data(), plain.size() * 4));
  auto adapted = logits_of(*model_, ids, &bank, 0);
  EXPECT_NE(0, std::memcmp(plain.data(), adapted.data(), plain.size() * 4));
}

TEST_F(LoraModel, BankRefusesWhatDoesNotFit) {
  make(DType::kBF16, "tiny");
  auto la = load_adapter(adapter(0, 16, DType::kBF16), base_shapes(model_->config()));
  SlotBank small(model_->config(), 2, 8, DType::kBF16);
  try {
    small.load(0, pack_adapter(la, DType::kBF16));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "adapter rank 16 exceeds --max-lora-rank 8");
  }
  ModuleSet attn_only = {true, true, true, true, false, false, false};
  SlotBank partial(model_->config(), 2, 16, DType::kBF16, attn_only);
  EXPECT_THROW(partial.load(0, pack_adapter(la, DType::kBF16)), Error);
  EXPECT_EQ(2 * slot_bytes(model_->config(), 8, DType::kBF16, kAllModules), small.bytes());
}

}  // namespace
}  // namespace lp::lora
