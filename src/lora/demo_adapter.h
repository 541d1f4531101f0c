// Deterministic synthetic LoRA adapters in the exact PEFT layout (adapter_config.json +
// adapter_model.safetensors with PEFT's tensor names), for tests, benchmarks and the demo server.
// Unlike PEFT's initialisation (B = 0), both halves are random so an adapter visibly changes the output.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "model/config.h"

namespace lp::lora {

struct DemoAdapterSpec {
  int rank = 8;
  double alpha = 16;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  bool use_rslora = false;
  nlohmann::json rank_pattern = nlohmann::json::object();   // PEFT form: {"key": rank}
  nlohmann::json alpha_pattern = nlohmann::json::object();  // {"key": alpha}
  uint64_t seed = 1;
  DType dtype = DType::kBF16;
  std::string base_model = "";
  bool adapter_name_infix = false;  // write "lora_A.default.weight" like some PEFT versions
};

void write_demo_adapter(const std::filesystem::path& dir, const model::ModelConfig& base, const DemoAdapterSpec& s);

// Tenant-like names for the demo adapters ("medical-qa", "legal-summary", ...), n of them.
std::vector<std::string> demo_adapter_names(int n);

// The i-th adapter of a demo set: same rank and all modules, or (mixed) varied ranks, target sets, rsLoRA
// and rank/alpha patterns.
DemoAdapterSpec demo_adapter_spec(int i, int rank, bool mixed, uint64_t seed, DType dtype);

}  // namespace lp::lora
