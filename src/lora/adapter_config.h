// adapter_config.json of a PEFT LoRA adapter: which modules it targets, its rank and alpha per module, and
// the refusal of every PEFT feature loraplex does not compute (DoRA, trained biases, modules_to_save,
// embedding/lm_head targets, fan_in_fan_out, ...). Matching follows PEFT exactly, on module names as PEFT
// sees them in a *ForCausalLM model ("model.layers.3.self_attn.q_proj"):
//   target_modules list:   name == entry, or name ends with "." + entry (then layers_to_transform applies)
//   target_modules string: re.fullmatch(pattern, name); "all-linear" means every linear but lm_head
//   exclude_modules:       the same two rules; an excluded module is never targeted
//   rank/alpha_pattern:    the first key (in file order) with re.match(rf"(.*\.)?({key})$", name) wins
//   scale:                 alpha / r, or alpha / sqrt(r) with use_rslora
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lora/py_regex.h"

namespace lp::lora {

struct AdapterConfig {
  std::string label;  // where it came from, for messages (".../adapter_config.json")
  int r = 8;
  double lora_alpha = 8.0;  // PEFT's default
  bool use_rslora = false;
  std::string base_model_name_or_path;  // "" when absent; informational

  // Exactly one of these describes target_modules.
  std::vector<std::string> target_names;  // list form
  std::optional<PyRegex> target_regex;    // string form
  bool all_linear = false;                // "all-linear"
  std::vector<std::string> exclude_names;
  std::optional<PyRegex> exclude_regex;
  std::vector<int> layers_to_transform;  // empty: every layer (list form of target_modules only)

  std::vector<std::pair<PyRegex, int>> rank_pattern;      // (compiled "(.*\.)?({key})$", rank), file order
  std::vector<std::pair<PyRegex, double>> alpha_pattern;  // (compiled key, alpha), file order

  // `module` is the full PEFT module name, e.g. "model.layers.3.self_attn.q_proj".
  bool targets(std::string_view module) const;
  int rank_for(std::string_view module) const;
  double alpha_for(std::string_view module) const;
  double scale_for(std::string_view module) const;  // alpha_for / rank_for (or / sqrt(rank_for) with rsLoRA)
};

// Validates a parsed adapter_config.json. Throws lp::Error naming `label` and the field on anything
// unsupported or malformed. Takes ordered_json because the order of rank_pattern/alpha_pattern keys decides
// which key wins.
AdapterConfig parse_adapter_config(const nlohmann::ordered_json& j, const std::string& label);

// Reads and validates `path` (duplicate keys are refused), opened through io::open_regular_file with
// `confine_root`.
AdapterConfig read_adapter_config(const std::string& path,
                                  const std::optional<std::filesystem::path>& confine_root = std::nullopt);

}  // namespace lp::lora
