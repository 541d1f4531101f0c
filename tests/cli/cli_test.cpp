// The `loraplex` binary from outside: demo-model writes a loadable HF folder with adapters; `logits --batch`
// (one forward call, mixed adapters) equals one `logits --ids` run per sequence; merge; bench --json keys.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "util/test_util.h"

namespace lp::test {
namespace {

std::string bin() { return loraplex_binary().string(); }

std::vector<float> read_f32(const std::filesystem::path& p) {
  std::string s = read_file(p);
  std::vector<float> v(s.size() / 4);
  std::memcpy(v.data(), s.data(), v.size() * 4);
  return v;
}

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("cli");
    std::string out;
    ASSERT_EQ(0, run_command(bin() + " demo-model " + (dir_->path() / "m").string() +
                                 " --shape tiny --seed 2 --adapters 3 --rank 8 --mixed 2>&1",
                             &out))
        << out;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path model() { return dir_->path() / "m"; }
  static std::filesystem::path adapter(const std::string& n) { return dir_->path() / "m" / "adapters" / n; }
  static TempDir* dir_;
};
TempDir* Cli::dir_ = nullptr;

TEST_F(Cli, DemoModelHasHfLayoutAndAdapters) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(model() / f)) << f;
  for (const char* a : {"medical-qa", "legal-summary", "code-review"}) {
    EXPECT_TRUE(std::filesystem::exists(adapter(a) / "adapter_config.json")) << a;
    EXPECT_TRUE(std::filesystem::exists(adapter(a) / "adapter_model.safetensors")) << a;
  }
  auto cfg = nlohmann::json::parse(read_file(model() / "config.json"));
  EXPECT_EQ(cfg["vocab_size"], 512);
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
}

TEST_F(Cli, BatchLogitsEqualSingleRunsWithMixedAdapters) {
  struct S {
    std::string ids;
    std::string adapter;
  };
  std::vector<S> seqs = {{"1,2,3,4,5", ""}, {"9,8,7", "medical-qa"}, {"5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5", "legal-summary"},
                         {"42", "code-review"}, {"100,200,300,400", "medical-qa"}};
  nlohmann::json spec = nlohmann::json::array();
  for (const auto& s : seqs) {
    nlohmann::json ids = nlohmann::json::parse("[" + s.ids + "]");
    spec.push_back({{"ids", ids}, {"adapter", s.adapter.empty() ? nlohmann::json(nullptr) : nlohmann::json(adapter(s.adapter).string())}});
  }
  write_file(dir_->path() / "spec.json", spec.dump());
  std::string out;
  ASSERT_EQ(0, run_command(bin() + " logits --model " + model().string() + " --batch " + (dir_->path() / "spec.json").string() +
                               " --out-dir " + (dir_->path() / "batch").string() + " 2>&1",
                           &out))
      << out;
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::string cmd = bin() + " logits --model " + model().string() + " --ids " + seqs[i].ids + " --out " +
                      (dir_->path() / ("one" + std::to_string(i) + ".f32")).string();
    if (!seqs[i].adapter.empty()) cmd += " --adapter " + adapter(seqs[i].adapter).string();
    ASSERT_EQ(0, run_command(cmd + " 2>&1", &out)) << out;
    auto one = read_f32(dir_->path() / ("one" + std::to_string(i) + ".f32"));
    auto batched = read_f32(dir_->path() / "batch" / ("seq" + std::to_string(i) + ".f32"));
    size_t T = std::count(seqs[i].ids.begin(), seqs[i].ids.end(), ',') + 1;
    ASSERT_EQ(one.size(), T * 512);
    ASSERT_EQ(batched.size(), one.size());
    // Bit-identical even though the batch held other adapters: the max rank of the bank differs too.
    EXPECT_EQ(0, std::memcmp(one.data(), batched.data(), one.size() * 4)) << "sequence " << i;
  }
}

TEST_F(Cli, MergedModelGeneratesLikeTheAdapter) {
  std::string out, merged_out, adapter_out;
  auto merged = dir_->path() / "merged";
  ASSERT_EQ(0, run_command(bin() + " merge --model " + model().string() + " --adapter " + adapter("medical-qa").string() +
                               " --out " + merged.string() + " 2>&1",
                           &out))
      << out;
  ASSERT_EQ(0, run_command(bin() + " generate --model " + merged.string() + " --ids 3,1,4,1,5 -n 8 --ignore-eos", &merged_out));
  ASSERT_EQ(0, run_command(bin() + " generate --model " + model().string() + " --ids 3,1,4,1,5 -n 8 --ignore-eos --lora-dtype f32 --adapter " +
                               adapter("medical-qa").string(),
                           &adapter_out));
  auto tokens = [](const std::string& s) { return s.substr(0, s.find('\n')); };
  // BF16 merged weights vs f32 LoRA slots: greedy tokens agree on this tiny model (logits are compared at
  // 1e-4 in the F32 test in tests/lora).
  EXPECT_EQ(tokens(merged_out), tokens(adapter_out));
  EXPECT_EQ(tokens(merged_out).rfind("tokens:", 0), 0u) << merged_out;
}

TEST_F(Cli, BenchJsonHasTheRooflineKeys) {
  std::string out;
  ASSERT_EQ(0, run_command(bin() + " bench --model " + model().string() +
                               " --batch 2 --prompt-len 8 --gen 4 --repeats 1 --adapters 2 --rank 8 --json",
                           &out))
      << out;
  auto j = nlohmann::json::parse(out);
  for (const char* k : {"prefill_tokens_per_s", "decode_tokens_per_s", "decode_roofline_ratio", "bandwidth_gb_per_s",
                        "lora_overhead", "lora_byte_bound", "lora_part_speedup_fused_vs_naive"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_GT(j["bandwidth_gb_per_s"].get<double>(), 0.1);
}

TEST_F(Cli, BadInputGivesAClearErrorAndExitCode1) {
  std::string out;
  EXPECT_EQ(1, run_command(bin() + " logits --model " + model().string() + " --ids 1,x,3 --out /dev/null 2>&1", &out));
  EXPECT_NE(out.find("invalid token id 'x'"), std::string::npos) << out;
  EXPECT_EQ(1, run_command(bin() + " generate --model /nonexistent -n 1 --ids 1 2>&1", &out));
  EXPECT_NE(out.find("config.json"), std::string::npos) << out;
  EXPECT_EQ(1, run_command(bin() + " logits --model " + model().string() + " --ids 1,99999 --out /dev/null 2>&1", &out));
  EXPECT_NE(out.find("out of range"), std::string::npos) << out;
}

}  // namespace
}  // namespace lp::test
