// KV-cache sizing against figures computed by hand for Llama-3.1-8B (BF16: 131,072 bytes a token, 2,097,152 a
// block of 16; weights 16,060,522,496 bytes; 4 slots + 8 host adapters of 83,886,080 bytes at rank 16):
// the order of precedence of the flags, the 90% share of what is left, the max_num_seqs x max_model_len cap,
// the fallback without a memory figure, refusals, and `plan` / `serve` agreeing on the numbers.
#include "lora/kv_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "core/check.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

using ::testing::HasSubstr;

const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";

constexpr int64_t kWeights = 16'060'522'496;
constexpr int64_t kSlot = 83'886'080;
constexpr int64_t kFixed = kWeights + 4 * kSlot + 8 * kSlot;  // 17,067,155,456
constexpr int64_t kBlock = 16 * 131'072;                      // 2,097,152

struct Fixture {
  model::ModelConfig cfg = model::ModelConfig::from_json(nlohmann::json::parse(kLlama31_8B), "config.json");
  MemoryPlan lora;
  Fixture() {
    PlanOptions o;
    o.max_loras = 4;
    o.max_lora_rank = 16;
    o.max_cpu_loras = 8;
    lora = plan_memory(cfg, o);
  }
  KvPlan plan(const KvPlanOptions& o) { return plan_kv_cache(cfg, &lora, o); }
};

KvPlanOptions measured(int64_t bytes) {
  KvPlanOptions o;
  o.memory_available = bytes;
  o.memory_source = "MemAvailable in /proc/meminfo";
  return o;
}

TEST(KvPlan, DefaultIsNinetyPercentOfWhatIsLeftInWholeBlocks) {
  Fixture f;
  KvPlan p = f.plan(measured(32LL << 30));
  EXPECT_EQ(p.weights_bytes, kWeights);
  EXPECT_EQ(p.slots_bytes, 4 * kSlot);
  EXPECT_EQ(p.host_bytes, 8 * kSlot);
  EXPECT_EQ(p.memory_bytes, 32LL << 30);
  EXPECT_EQ(p.left_bytes, (32LL << 30) - kFixed);  // 17,292,582,912
  // floor(0.9 x 17,292,582,912) = 15,563,324,620 bytes -> 7,421 blocks (7,422 would need 15,565,062,144).
  EXPECT_EQ(p.kv_blocks, 7'421);
  EXPECT_EQ(p.kv_tokens, 7'421 * 16);
  EXPECT_EQ(p.kv_bytes, 7'421 * kBlock);
  EXPECT_FALSE(p.capped);
  EXPECT_EQ(p.problem, "");
  EXPECT_THAT(p.sized_by, HasSubstr("90% of the memory left"));
  std::string text = kv_plan_text(p);
  EXPECT_THAT(text, HasSubstr("118736"));
  EXPECT_THAT(text, HasSubstr("7421 blocks of 16"));
  EXPECT_THAT(text, HasSubstr("MemAvailable"));

  KvPlanOptions o = measured(32LL << 30);
  o.kv_dtype = DType::kF32;  // twice the bytes a token: 15,563,324,620 / 4,194,304 = 3,710.6
  EXPECT_EQ(f.plan(o).kv_blocks, 3'710);

  EXPECT_EQ(plan_kv_cache(f.cfg, nullptr, measured(32LL << 30)).kv_blocks,
            static_cast<int64_t>(((32LL << 30) - kWeights) * 0.9) / kBlock)
      << "without LoRA nothing is set aside for slots";
}

TEST(KvPlan, FlagsTakePrecedenceInOrder) {
  Fixture f;
  KvPlanOptions o = measured(32LL << 30);
  o.kv_cache_memory = 8LL << 30;  // 8 GiB / 2 MiB = 4,096 blocks, whatever the machine has
  KvPlan p = f.plan(o);
  EXPECT_EQ(p.kv_blocks, 4'096);
  EXPECT_EQ(p.sized_by, "--kv-cache-memory");
  o.kv_cache_tokens = 1'000;  // exact, rounded up to whole blocks: 63 blocks, 1,008 tokens
  p = f.plan(o);
  EXPECT_EQ(p.kv_blocks, 63);
  EXPECT_EQ(p.kv_tokens, 1'008);
  EXPECT_EQ(p.sized_by, "--kv-cache-tokens");

  KvPlanOptions b = measured(1LL << 30);
  b.memory_budget = 32LL << 30;  // plan's --memory-budget replaces the measured figure
  p = f.plan(b);
  EXPECT_EQ(p.kv_blocks, 7'421);
  EXPECT_EQ(p.memory_source, "--memory-budget");

  // The flags ignore the memory: --kv-cache-tokens with less memory than the weights still plans.
  KvPlanOptions t = measured(1LL << 30);
  t.kv_cache_tokens = 16;
  EXPECT_EQ(f.plan(t).kv_blocks, 1);
  EXPECT_EQ(f.plan(t).problem, "");
}

TEST(KvPlan, CappedAtEveryRunningSequenceAtFullContext) {
  Fixture f;
  KvPlanOptions o = measured(32LL << 30);
  o.max_num_seqs = 4;
  o.max_model_len = 8'192;  // 4 x 512 blocks
  KvPlan p = f.plan(o);
  EXPECT_EQ(p.kv_blocks, 2'048);
  EXPECT_TRUE(p.capped);
  EXPECT_THAT(kv_plan_text(p), HasSubstr("capped"));
  o.max_model_len = 0;  // the model's 131,072: 4 x 8,192 blocks, above what memory gives
  EXPECT_EQ(f.plan(o).kv_blocks, 7'421);
  o.kv_cache_memory = 8LL << 30;  // an explicit size is not capped
  o.max_model_len = 8'192;
  EXPECT_EQ(f.plan(o).kv_blocks, 4'096);
}

TEST(KvPlan, TightMemoryAndNoMemoryFigure) {
  Fixture f;
  // 16 GiB: 112,713,728 bytes left, 90% = 101,442,355 -> 48 blocks.
  KvPlan p = f.plan(measured(16LL << 30));
  EXPECT_EQ(p.kv_blocks, 48);
  // 15 GiB is less than weights + slots + host: no KV cache, and a message that says what to do.
  p = f.plan(measured(15LL << 30));
  EXPECT_EQ(p.kv_blocks, 0);
  EXPECT_LT(p.left_bytes, 0);
  EXPECT_THAT(p.problem, HasSubstr("no memory left for the KV cache"));
  EXPECT_THAT(p.problem, HasSubstr("--kv-cache-memory"));
  EXPECT_THAT(kv_plan_text(p), HasSubstr("NO KV CACHE"));
  // Less than one block by --kv-cache-memory.
  KvPlanOptions o;
  o.kv_cache_memory = 1'000'000;
  EXPECT_EQ(f.plan(o).kv_blocks, 0);
  EXPECT_THAT(f.plan(o).problem, HasSubstr("holds no KV block"));
  // Memory unknown: vLLM's CPU default of 4 GiB = 2,048 blocks.
  KvPlanOptions u;
  u.memory_source = "unknown";
  p = f.plan(u);
  EXPECT_EQ(p.kv_blocks, 2'048);
  EXPECT_EQ(p.memory_bytes, -1);
}

TEST(KvPlan, RefusesBadOptions) {
  Fixture f;
  KvPlanOptions o;
  o.kv_cache_tokens = -1;
  EXPECT_THROW(f.plan(o), Error);
  o = {};
  o.kv_cache_memory = -1;
  EXPECT_THROW(f.plan(o), Error);
  o = {};
  o.share = 1.5;
  EXPECT_THROW(f.plan(o), Error);
  o = {};
  o.max_num_seqs = 0;
  EXPECT_THROW(f.plan(o), Error);
}

TEST(KvPlan, ByteSizesAreParsedStrictly) {
  EXPECT_EQ(parse_byte_size("8GiB"), 8LL << 30);
  EXPECT_EQ(parse_byte_size("512MiB"), 512LL << 20);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000);
  EXPECT_EQ(parse_byte_size("4096"), 4096);
  for (const char* bad :
       {"", "8 GiB", "1.5GiB", "-1", "+5", "8GiBs", "GiB", "0x10", "8e9", "99999999999999999999"})
    EXPECT_THROW(parse_byte_size(bad), Error) << bad;
}

// `plan` prints the numbers serve would use for the same flags; --kv-cache-memory 0 or junk is refused.
TEST(KvPlan, PlanCliPrintsTheKvPlan) {
  ASSERT_TRUE(std::filesystem::exists(test::loraplex_binary())) << "build the loraplex target first";
  test::TempDir dir("kvplan");
  test::write_file(dir / "config.json", kLlama31_8B);
  const std::string bin = test::loraplex_binary().string(), model = dir.path().string();
  std::string out;
  int rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-loras 4 --max-cpu-loras 8 --kv-cache-memory 8GiB --json", bin,
                  model),
      &out);
  ASSERT_EQ(rc, 0) << out;
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["kv_blocks"], 4'096);
  EXPECT_EQ(j["kv_tokens"], 65'536);
  EXPECT_EQ(j["kv_bytes"], 8LL << 30);
  EXPECT_EQ(j["weights_bytes"], kWeights);
  EXPECT_EQ(j["kv_sized_by"], "--kv-cache-memory");

  rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --kv-cache-tokens 100 --kv-cache-memory 8GiB", bin, model), &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("112  in 7 blocks of 16, sized by --kv-cache-tokens"));
  EXPECT_THAT(out, HasSubstr("adapter slots"));

  // With nothing given, the measured memory is named as the source.
  rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-num-seqs 1 --max-model-len 64", bin, model), &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex("memory \\((MemAvailable|cgroup)"))) << out;

  for (const char* bad : {"0", "8 GiB", "lots"}) {
    rc = test::run_command(fmt::format("'{}' plan --model '{}' --kv-cache-memory '{}' 2>&1", bin, model, bad),
                           &out);
    EXPECT_NE(rc, 0) << bad << ": " << out;
    EXPECT_THAT(out, HasSubstr("--kv-cache-memory")) << bad;
  }
}

}  // namespace
}  // namespace lp::lora
