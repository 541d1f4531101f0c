// The memory plan against figures computed by hand for two real configs (Llama-3.1-8B and SmolLM2-135M,
// written out below), the option parsers, and `loraplex plan` from a folder that holds only config.json.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "lora/plan.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

using ::testing::HasSubstr;

// meta-llama/Llama-3.1-8B config.json (the fields that matter).
const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
  "torch_dtype": "bfloat16",
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}})";

// HuggingFaceTB/SmolLM2-135M config.json.
const char* kSmolLM2_135M = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
  "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
  "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16"})";

model::ModelConfig config(const char* json) {
  return model::ModelConfig::from_json(nlohmann::json::parse(json), "config.json");
}

TEST(LoraPlan, Llama31_8B_AllModulesRank16Bf16) {
  PlanOptions o;
  o.max_loras = 4;
  o.max_lora_rank = 16;
  o.lora_dtype = DType::kBF16;
  o.max_cpu_loras = 8;
  MemoryPlan p = plan_memory(config(kLlama31_8B), o);
  // Per module: 32 layers × 16 × (in + out) × 2 bytes.
  EXPECT_EQ(p.modules[0].slot_bytes, 32 * 16 * (4096 + 4096) * 2);   // q_proj   8,388,608
  EXPECT_EQ(p.modules[1].slot_bytes, 32 * 16 * (4096 + 1024) * 2);   // k_proj   5,242,880
  EXPECT_EQ(p.modules[2].slot_bytes, 32 * 16 * (4096 + 1024) * 2);   // v_proj
  EXPECT_EQ(p.modules[3].slot_bytes, 32 * 16 * (4096 + 4096) * 2);   // o_proj
  EXPECT_EQ(p.modules[4].slot_bytes, 32 * 16 * (4096 + 14336) * 2);  // gate_proj 18,874,368
  EXPECT_EQ(p.modules[5].slot_bytes, 32 * 16 * (4096 + 14336) * 2);  // up_proj
  EXPECT_EQ(p.modules[6].slot_bytes, 32 * 16 * (14336 + 4096) * 2);  // down_proj
  // 41,943,040 LoRA parameters (what PEFT prints for r=16 on all linear layers of Llama-3-8B) × 2 bytes:
  // 83.9 MB. (ARCHITECTURE.md's "≈ 109 MB" does not follow from its own formula.)
  EXPECT_EQ(p.slot_bytes, 83'886'080);
  EXPECT_EQ(p.slots_bytes, 4 * 83'886'080LL);
  EXPECT_EQ(p.host_bytes, 8 * 83'886'080LL);
  EXPECT_EQ(p.base_params, 8'030'261'248LL);  // Llama-3.1-8B's parameter count
  EXPECT_EQ(p.base_bytes, 16'060'522'496LL);
  EXPECT_EQ(*p.options.kv_dtype, DType::kBF16);           // the KV cache defaults to the torch_dtype
  EXPECT_EQ(p.kv_bytes_per_token, 2 * 32 * 8 * 128 * 2);  // 131,072
  o.kv_dtype = DType::kF32;
  p = plan_memory(config(kLlama31_8B), o);
  EXPECT_EQ(p.kv_bytes_per_token, 2 * 32 * 8 * 128 * 4);  // 262,144
}

TEST(LoraPlan, SmolLM2_135M_DefaultsAndSubsets) {
  model::ModelConfig c = config(kSmolLM2_135M);
  PlanOptions o;
  o.max_loras = 4;
  o.max_lora_rank = 16;
  MemoryPlan p = plan_memory(c, o);
  EXPECT_EQ(p.options.max_cpu_loras, 4);  // default = max_loras
  // 30 × 16 × (1152 + 768 + 768 + 1152 + 2112 × 3) × 2
  EXPECT_EQ(p.slot_bytes, 9'768'960);
  EXPECT_EQ(p.base_params, 134'515'008);  // tied: no lm_head
  EXPECT_EQ(p.base_bytes, 269'030'016);
  EXPECT_EQ(p.kv_bytes_per_token, 2 * 30 * 3 * 64 * 2);  // 23,040 (BF16, the torch_dtype)

  o.lora_dtype = DType::kF32;
  o.max_lora_rank = 8;
  o.modules = parse_module_set({"q_proj", "v_proj"});
  p = plan_memory(c, o);
  EXPECT_EQ(p.modules[0].slot_bytes, 30 * 8 * (576 + 576) * 4);  // 1,105,920
  EXPECT_EQ(p.modules[2].slot_bytes, 30 * 8 * (576 + 192) * 4);  // 737,280
  EXPECT_EQ(p.modules[1].slot_bytes, 0);
  EXPECT_EQ(p.slot_bytes, 1'843'200);
}

TEST(LoraPlan, BiasesAndUntiedHeadAreCounted) {
  model::ModelConfig c = config(kSmolLM2_135M);
  c.tie_word_embeddings = false;
  c.attention_bias = true;  // q, k, v biases: 576 + 192 + 192 per layer
  EXPECT_EQ(base_param_count(c), 134'515'008 + 49152LL * 576 + 30 * 960);
}

TEST(LoraPlan, RefusesBadOptions) {
  model::ModelConfig c = config(kSmolLM2_135M);
  PlanOptions o;
  o.max_loras = 4;
  o.max_cpu_loras = 3;
  EXPECT_THROW(plan_memory(c, o), Error);
  o.max_cpu_loras = 0;
  o.max_lora_rank = 0;
  EXPECT_THROW(plan_memory(c, o), Error);
  o.max_lora_rank = 8;
  o.max_loras = 0;
  EXPECT_THROW(plan_memory(c, o), Error);
}

TEST(LoraPlan, Parsers) {
  EXPECT_EQ(parse_lora_dtype("auto", DType::kF16), DType::kF16);
  EXPECT_EQ(parse_lora_dtype("f16", DType::kBF16), DType::kF16);
  EXPECT_EQ(parse_lora_dtype("f32", DType::kBF16), DType::kF32);
  EXPECT_THROW(parse_lora_dtype("fp8", DType::kBF16), Error);
  EXPECT_EQ(parse_module_set({}), kAllModules);
  EXPECT_EQ(parse_module_set({"all-linear"}), kAllModules);
  EXPECT_EQ(parse_module_set({"down_proj"}), (ModuleSet{false, false, false, false, false, false, true}));
  EXPECT_THROW(parse_module_set({"lm_head"}), Error);
  EXPECT_EQ(parse_byte_size("123"), 123);
  EXPECT_EQ(parse_byte_size("16GiB"), 16LL << 30);
  EXPECT_EQ(parse_byte_size("16g"), 16LL << 30);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000);
  EXPECT_THROW(parse_byte_size("16 apples"), Error);
  EXPECT_THROW(parse_byte_size("GiB"), Error);
  EXPECT_THROW(parse_byte_size("99999999999TiB"), Error);
}

TEST(LoraPlan, CliPrintsJsonFromConfigAlone) {
  ASSERT_TRUE(std::filesystem::exists(test::loraplex_binary())) << "build the loraplex target first";
  test::TempDir dir("plan");
  test::write_file(dir / "config.json", kLlama31_8B);
  std::string out;
  int rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-loras 4 --max-lora-rank 16 --lora-dtype f16 "
                  "--max-cpu-loras 8 --memory-budget 32GiB --json",
                  test::loraplex_binary().string(), dir.path().string()),
      &out);
  ASSERT_EQ(rc, 0) << out;
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["slot_bytes"], 83'886'080);
  EXPECT_EQ(j["slots_bytes"], 4 * 83'886'080LL);
  EXPECT_EQ(j["host_bytes"], 8 * 83'886'080LL);
  EXPECT_EQ(j["base_bytes"], 16'060'522'496LL);
  EXPECT_EQ(j["kv_dtype"], "BF16");
  // 90% of (34,359,738,368 − 16,060,522,496 − 335,544,320 − 671,088,640) = 15,563,324,620 bytes, in whole
  // blocks of 16 x 131,072 bytes: 7,421 blocks.
  EXPECT_EQ(j["kv_blocks"], 7'421);
  EXPECT_EQ(j["kv_tokens"], 7'421 * 16);
  EXPECT_EQ(j["modules"]["gate_proj"]["slot_bytes"], 18'874'368);
  rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-loras 4 --max-lora-rank 16 --lora-dtype f16 "
                  "--max-cpu-loras 8 --memory-budget 32GiB --kv-cache-dtype f32 --json",
                  test::loraplex_binary().string(), dir.path().string()),
      &out);
  ASSERT_EQ(rc, 0) << out;
  j = nlohmann::json::parse(out);
  EXPECT_EQ(j["kv_dtype"], "F32");
  EXPECT_EQ(j["kv_tokens"], 3'710 * 16);  // 15,563,324,620 / (16 x 262,144) = 3,710.6
  rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-loras 4 --max-lora-rank 16 --kv-cache-dtype fp8 2>&1",
                  test::loraplex_binary().string(), dir.path().string()),
      &out);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, HasSubstr("--kv-cache-dtype: 'fp8' is not one of bf16, f16, f32, auto"));

  rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-loras 4 --max-lora-rank 16 --target-modules q_proj "
                  "v_proj",
                  test::loraplex_binary().string(), dir.path().string()),
      &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("k_proj"));
  EXPECT_THAT(out, HasSubstr("(not targeted)"));
  EXPECT_THAT(out, HasSubstr("13631488"));  // one slot: q (8,388,608) + v (5,242,880)

  rc = test::run_command(
      fmt::format("'{}' plan --model '{}' --max-loras 4 --max-cpu-loras 2 --max-lora-rank 16 2>&1",
                  test::loraplex_binary().string(), dir.path().string()),
      &out);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, HasSubstr("--max-cpu-loras 2 is smaller than --max-loras 4"));
}

}  // namespace
}  // namespace lp::lora
