// Deterministic synthetic LoRA adapters in the exact PEFT layout (adapter_config.json +
// adapter_model.safetensors with PEFT's tensor names), for tests, benchmarks and the demo server.
// Unlike PEFT's initialisation (B = 0), both halves are random so an adapter visibly changes the output.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
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
  // Given values instead of random ones, by PEFT module path ("model.layers.0.mlp.down_proj"): A (rank, in)
  // and B (out, rank), row-major. Every targeted module must have them when any module does.
  std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> fixed;
};

void write_demo_adapter(const std::filesystem::path& dir, const model::ModelConfig& base, const DemoAdapterSpec& s);

// Tenant-like names for the demo adapters ("medical-qa", "legal-summary", ...), n of them.
std::vector<std::string> demo_adapter_names(int n);

// The i-th adapter of a demo set: same rank and all modules, or (mixed) varied ranks, target sets, rsLoRA
// and rank/alpha patterns.
DemoAdapterSpec demo_adapter_spec(int i, int rank, bool mixed, uint64_t seed, DType dtype);

// The story model's adapters (model/demo_story.h), the first n of its adapter passages (at most 4:
// medical-qa, legal-summary, code-review, french-support): rank 1 on layer 0's down_proj, each written to
// dir/<name>. Returns the names.
std::vector<std::string> write_story_adapters(const std::filesystem::path& dir,
                                              const model::ModelConfig& base, int n, DType dtype);

}  // namespace lp::lora
