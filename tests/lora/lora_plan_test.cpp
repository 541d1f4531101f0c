// The memory plan against figures computed by hand for two real configs (Llama-3.1-8B and SmolLM2-135M,
// written out below), the option parsers, and `loraplex plan` from a folder that holds only config.json.
// The quantized weight plan (plan_weights) against hand figures and against what ModelWeights::load reports
// for demo models (odd shapes, biases, tied heads).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "kernels/quant.h"
#include "lora/kv_plan.h"
#include "lora/plan.h"
#include "model/demo_model.h"
#include "model/weights.h"
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

model::LoadOptions int8_options(bool lm_head = false) {
  model::LoadOptions o;
  o.placement = model::WeightPlacement::kMapped;
  o.quantization = model::Quantization::kInt8;
  o.quantize_lm_head = lm_head;
  return o;
}

TEST(WeightPlan, Llama31_8B_Int8ByHand) {
  // Per layer (rows x cols, all cols multiples of 64): q 4096x4096, k/v 1024x4096, o 4096x4096,
  // gate/up 14336x4096, down 4096x14336: 218,103,808 int8 bytes + 4 x 43,008 row scales = 218,275,840;
  // x 32 layers = 6,984,826,880. lm_head stays BF16: 128256 x 4096 x 2 = 1,050,673,152. Norms: (2 x 32 + 1)
  // x 4096 x 2 = 532,480. The embedding (another 1,050,673,152) is resident but not read per step.
  WeightPlan p = plan_weights(config(kLlama31_8B), int8_options());
  EXPECT_EQ(p.quantization, "int8");
  ASSERT_EQ(p.by_format.size(), 2u);
  EXPECT_EQ(p.by_format[0], (std::pair<std::string, int64_t>{"int8", 6'984'826'880LL}));
  EXPECT_EQ(p.by_format[1], (std::pair<std::string, int64_t>{"BF16", 1'050'673'152LL}));
  EXPECT_EQ(p.decode_step_bytes, 8'036'032'512LL);
  EXPECT_EQ(p.resident_bytes, 9'086'705'664LL);
  // --quantize-lm-head: 128256 x 4096 + 4 x 128256 = 525,849,600 int8 bytes instead of the BF16 head.
  p = plan_weights(config(kLlama31_8B), int8_options(true));
  ASSERT_EQ(p.by_format.size(), 1u);
  EXPECT_EQ(p.by_format[0].second, 6'984'826'880LL + 525'849'600LL);
  // Unquantized: the plan's resident bytes are the old base_bytes.
  p = plan_weights(config(kLlama31_8B), {});
  EXPECT_EQ(p.quantization, "none");
  EXPECT_EQ(p.resident_bytes, 16'060'522'496LL);
  EXPECT_EQ(p.decode_step_bytes, 16'060'522'496LL - 1'050'673'152LL);
}

TEST(WeightPlan, Llama31_8B_AwqByHand) {
  // An AWQ checkpoint of it (4 bits, group 128): per layer 218,103,808 weights / 2 = 109,051,904 bytes of
  // nibbles + 3 bytes (f16 scale, zero) x 1,703,936 groups (rows x cols / 128 summed over the seven) =
  // 114,163,712; x 32 = 3,653,238,784. lm_head and norms stay F16 (its torch_dtype): as for BF16 above.
  model::ModelConfig c = config(kLlama31_8B);
  c.torch_dtype = DType::kF16;
  c.quant.method = "awq";
  c.quant.bits = 4;
  c.quant.group_size = 128;
  WeightPlan p = plan_weights(c, {});
  EXPECT_EQ(p.quantization, "awq");
  ASSERT_EQ(p.by_format.size(), 2u);
  EXPECT_EQ(p.by_format[0], (std::pair<std::string, int64_t>{"int4", 3'653'238'784LL}));
  EXPECT_EQ(p.by_format[1], (std::pair<std::string, int64_t>{"F16", 1'050'673'152LL}));
  EXPECT_EQ(p.decode_step_bytes, 3'653'238'784LL + 1'050'673'152LL + 532'480);
  EXPECT_EQ(p.resident_bytes, p.decode_step_bytes + 1'050'673'152LL);
  // One group per row (-1): 3 bytes per row (43,008 rows a layer) instead of per 128 columns.
  c.quant.group_size = -1;
  EXPECT_EQ(plan_weights(c, {}).by_format[0].second, 32 * (109'051'904LL + 3 * 43'008));
  // int8 on top of an int4 checkpoint is refused, as the loader refuses it.
  EXPECT_THROW(plan_weights(c, int8_options()), Error);
}

TEST(WeightPlan, QuantizedMatrixBytesByHand) {
  // Worked out here from the layout (rows padded to 64 columns; kQ8 one f32 scale per row; kQ4 an f16 scale
  // and a zero byte per group), for columns that need padding and that do not.
  // 7 x 176 -> Kp 192: int8 7 x 192 + 28 = 1,372; int4 group 64: 7 x 96 + 3 x 7 x 3 = 735.
  EXPECT_EQ(kernels::quant_matrix_bytes(kernels::WeightFormat::kQ8, 7, 176), 1'372);
  EXPECT_EQ(kernels::quant_matrix_bytes(kernels::WeightFormat::kQ4, 7, 176, 64), 735);
  // 3 x 64: int8 192 + 12 = 204; int4 group 64: 96 + 9 = 105.
  EXPECT_EQ(kernels::quant_matrix_bytes(kernels::WeightFormat::kQ8, 3, 64), 204);
  EXPECT_EQ(kernels::quant_matrix_bytes(kernels::WeightFormat::kQ4, 3, 64, 64), 105);
  // 2 x 1000 -> Kp 1024: int8 2,048 + 8 = 2,056; int4 group 128: 1,024 + 3 x 2 x 8 = 1,072.
  EXPECT_EQ(kernels::quant_matrix_bytes(kernels::WeightFormat::kQ8, 2, 1000), 2'056);
  EXPECT_EQ(kernels::quant_matrix_bytes(kernels::WeightFormat::kQ4, 2, 1000, 128), 1'072);
  // A QuantMatrix's view reports the same bytes (mat_bytes reads the view's format, rows and group).
  kernels::QuantMatrix q4 = kernels::QuantMatrix::make_q4(2, 1000, 128, DType::kBF16);
  EXPECT_EQ(kernels::mat_bytes(q4.view()), 1'072);
}

// plan (config.json only) and ModelWeights::load (the loaded matrices) must agree byte for byte: plan's
// numbers are computed from the shapes, load's from the views it actually built.
TEST(WeightPlan, EqualsWhatTheLoadedModelReports) {
  test::TempDir dir("weight-plan");
  struct Case {
    std::string name;
    model::DemoSpec spec;
  };
  std::vector<Case> cases;
  cases.push_back({"tiny", {}});  // untied head; intermediate 176 (rows padded to 192)
  cases.back().spec.attention_bias = cases.back().spec.mlp_bias = true;
  cases.push_back({"tiny-qwen2-f16", {}});
  cases.back().spec.arch = "qwen2";
  cases.back().spec.dtype = DType::kF16;
  cases.push_back({"small-tied", {}});
  cases.back().spec.shape = "small";
  cases.push_back({"small-awq", {}});  // int4 checkpoints: group 128
  cases.back().spec.shape = "small";
  cases.back().spec.quantization = "awq";
  cases.push_back({"tiny-gptq-asym", {}});  // group 64 (176 inputs of down_proj)
  cases.back().spec.quantization = "gptq";
  cases.back().spec.gptq_sym = false;
  for (const Case& c : cases) {
    model::write_demo_model(dir / c.name, c.spec);
    const model::ModelConfig cfg = model::ModelConfig::from_dir(dir / c.name);
    const bool int4 = !c.spec.quantization.empty();
    for (int quant = 0; quant < 2; ++quant) {
      for (bool lm_head : {false, true}) {
        model::LoadOptions o = int8_options(lm_head);
        if (!quant) o.quantization = model::Quantization::kNone;
        if (int4 && quant) {  // refused by both
          EXPECT_THROW(plan_weights(cfg, o), Error);
          EXPECT_THROW(model::ModelWeights::load(dir / c.name, cfg, o), Error);
          continue;
        }
        SCOPED_TRACE(c.name + (quant ? " int8" : " none") + (lm_head ? " +lm_head" : ""));
        const model::ModelWeights w = model::ModelWeights::load(dir / c.name, cfg, o);
        const WeightPlan p = plan_weights(cfg, o);
        EXPECT_EQ(p.quantization, w.quantization);
        std::vector<std::pair<std::string, int64_t>> loaded;
        for (const auto& [f, n] : w.bytes_by_format()) loaded.emplace_back(f, static_cast<int64_t>(n));
        EXPECT_EQ(p.by_format, loaded);
        EXPECT_EQ(p.decode_step_bytes, static_cast<int64_t>(w.bytes_per_decode_step));
        // Resident: the embedding plus every step matrix, the head counted once when it is the embedding.
        const int64_t embed = kernels::mat_bytes(w.embed);
        const bool shared = w.lm_head.data == w.embed.data;
        EXPECT_EQ(p.resident_bytes, embed + static_cast<int64_t>(w.bytes_per_decode_step) -
                                        (shared ? kernels::mat_bytes(w.lm_head) : 0));
        if (quant) {
          EXPECT_LT(p.decode_step_bytes, plan_weights(cfg, {}).decode_step_bytes);
        }
        if (int4) {
          EXPECT_EQ(p.by_format[0].first, "int4");
        }
      }
    }
  }
}

TEST(WeightPlan, CliReportsBytesPerFormatAndGivesTheKvCacheTheRoom) {
  test::TempDir dir("plan-q");
  test::write_file(dir / "config.json", kLlama31_8B);
  auto plan = [&](const std::string& flags, std::string* out) {
    return test::run_command(fmt::format("'{}' plan --model '{}' --memory-budget 32GiB {} 2>&1",
                                         test::loraplex_binary().string(), dir.path().string(), flags),
                             out);
  };
  std::string out;
  ASSERT_EQ(plan("--quantization int8 --json", &out), 0) << out;
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["quantization"], "int8");
  EXPECT_EQ(j["weight_bytes_by_format"]["int8"], 6'984'826'880LL);
  EXPECT_EQ(j["weight_bytes_by_format"]["BF16"], 1'050'673'152LL);
  EXPECT_EQ(j["decode_step_bytes"], 8'036'032'512LL);
  EXPECT_EQ(j["weights_bytes"], 9'086'705'664LL);
  // 90% of (34,359,738,368 - 9,086,705,664) = 22,745,729,433 bytes in blocks of 16 x 131,072: 10,846 blocks
  // (unquantized: 7,853).
  EXPECT_EQ(j["kv_blocks"], 10'846);
  ASSERT_EQ(plan("-q int8", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("quantization int8"));
  EXPECT_THAT(out, HasSubstr("6984826880"));
  ASSERT_EQ(plan("--json", &out), 0) << out;
  j = nlohmann::json::parse(out);
  EXPECT_EQ(j["quantization"], "none");
  EXPECT_EQ(j["kv_blocks"], 7'853);
  // All of the weights but the embedding and the norms.
  EXPECT_EQ(j["weight_bytes_by_format"]["BF16"], 16'060'522'496LL - 1'050'673'152LL - 532'480);
  EXPECT_NE(plan("--quantization int4", &out), 0);
  EXPECT_THAT(out, HasSubstr("--quantization int4: expected none, int8, awq or gptq"));
}

}  // namespace
}  // namespace lp::lora
