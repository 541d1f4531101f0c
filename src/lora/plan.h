// The memory plan of a LoRA server, from the base model's config.json alone (no weights): bytes of one
// adapter slot per target module and in total, of all slots, of the host tier at full rank, of the base
// weights, and of one token of KV cache. `loraplex plan` prints it; `serve` logs the same plan, and
// AdapterManager allocates exactly `slots_bytes` (it checks). How many KV tokens fit in what is left is
// lora/kv_plan.h's business.
//
//   slot_bytes  = Σ layers × target modules × max_lora_rank × (in + out) × bytes(lora dtype)
//   slots_bytes = max_loras × slot_bytes
//   host_bytes  = max_cpu_loras × slot_bytes       (every host adapter at full rank, all target modules)
//   base_bytes  = params(embed, layers (7 projections, their biases, 2 norms), final norm, lm_head unless
//                 tied) × bytes(torch_dtype)
//   kv_bytes_per_token = 2 (K, V) × layers × kv_heads × head_dim × bytes(KV dtype, default torch_dtype)
// plan_weights gives the base weights as ModelWeights::load holds them under --quantization, also from the
// shapes alone (see there).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "lora/adapter.h"
#include "lora/slot_bank.h"
#include "model/config.h"
#include "model/weights.h"

namespace lp::lora {

struct PlanOptions {
  int max_loras = 1;
  int max_lora_rank = 16;
  DType lora_dtype = DType::kBF16;
  ModuleSet modules = kAllModules;
  int max_cpu_loras = 0;          // 0: = max_loras
  std::optional<DType> kv_dtype;  // unset: the model's torch_dtype (as the engine)
};

struct MemoryPlan {
  PlanOptions options;  // with max_cpu_loras resolved
  struct ModuleBytes {
    Module module = Module::kQ;
    bool targeted = false;
    int64_t in = 0, out = 0;  // of the base projection
    int64_t slot_bytes = 0;   // this module's part of one slot, over all layers
  };
  std::array<ModuleBytes, kNumModules> modules{};
  int64_t slot_bytes = 0;
  int64_t slots_bytes = 0;
  int64_t host_bytes = 0;
  int64_t base_params = 0;
  int64_t base_bytes = 0;
  int64_t kv_bytes_per_token = 0;
};

// Throws lp::Error (kInvalid) for max_loras / max_lora_rank < 1 or max_cpu_loras < max_loras.
MemoryPlan plan_memory(const model::ModelConfig& config, const PlanOptions& options);

// Parameters of the base model's weights (what base_bytes counts).
int64_t base_param_count(const model::ModelConfig& config);

// --lora-dtype: "bf16" | "f16" | "f32" | "auto" (= the base model's torch_dtype, so `plan`, which reads only
// config.json, and `serve` size the same slots). Throws lp::Error otherwise.
DType parse_lora_dtype(const std::string& s, DType torch_dtype);
// Module names ("q_proj", ...) to a set; "all" or "all-linear" (or an empty list) is every module.
ModuleSet parse_module_set(const std::vector<std::string>& names);
// "17179869184", "16GiB", "16G" (= GiB), "500MB" (10^6), "64KiB" (units in any case)... Throws lp::Error on
// anything else: no sign, space, fraction or unknown unit, nothing over INT64_MAX.
int64_t parse_byte_size(const std::string& s);
// "83.9 MB (80.0 MiB)".
std::string format_bytes(int64_t bytes);

std::string plan_text(const MemoryPlan& plan);  // a human-readable table, one line per module
nlohmann::json plan_json(const MemoryPlan& plan);  // slot_bytes, slots_bytes, host_bytes, base_bytes, ...

// The base weights as ModelWeights::load(dir, config, options) holds them, from the config alone (quantized
// matrices by kernels::quant_matrix_bytes; the file is assumed to hold torch_dtype; an AWQ / GPTQ
// checkpoint's projections as kQ4 in the group the loader
// picks, which for a desc_act checkpoint whose g_idx renames groups can be 64 instead: then the plan's
// int4 bytes are a little low). Throws lp::Error for int8 on an int4 checkpoint, as the loader does. The numbers equal ModelWeights::bytes_by_format / bytes_per_decode_step
// (tests/lora/lora_plan_test.cpp loads a demo model to check).
struct WeightPlan {
  std::string quantization = "none";  // as ModelWeights::quantization: none, int8, awq or gptq
  bool quantize_lm_head = false;
  // The matrices a decode step streams (7 projections x layers, lm_head) by format ("int8", "BF16", ...),
  // in the order ModelWeights::bytes_by_format lists them.
  std::vector<std::pair<std::string, int64_t>> by_format;
  int64_t decode_step_bytes = 0;  // by_format + the norms and biases: ModelWeights::bytes_per_decode_step
  int64_t resident_bytes = 0;     // every weight as held after load (embeddings too): what the KV plan
                                  // subtracts; without quantization = base_param_count x bytes(torch_dtype)
};
WeightPlan plan_weights(const model::ModelConfig& config, const model::LoadOptions& options);
std::string weight_plan_text(const WeightPlan& plan);  // "weights: int8 x MiB, BF16 y MiB; decode step ..."
nlohmann::json weight_plan_json(const WeightPlan& plan);  // quantization, weight_bytes_by_format, ...

}  // namespace lp::lora
