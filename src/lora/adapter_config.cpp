#include "lora/adapter_config.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "core/check.h"
#include "io/json_file.h"

namespace lp::lora {

using nlohmann::ordered_json;

namespace {

constexpr int64_t kMaxRank = 1 << 16;

// A field that is absent or null reads as "not set".
const ordered_json* field(const ordered_json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string_view type_of(const ordered_json& v) {
  return io::json_type_name(v);
}

bool get_bool(const ordered_json& j, const char* key, const std::string& label) {
  const ordered_json* v = field(j, key);
  return v && io::json_bool(*v, key, label);
}

bool is_empty_value(const ordered_json* v) {
  return !v || ((v->is_array() || v->is_object() || v->is_string()) && v->empty());
}

// A list of strings, or one string (returned in `*single`).
std::vector<std::string> get_names(const ordered_json& v, const char* key, const std::string& label,
                                   std::optional<std::string>* single) {
  std::vector<std::string> out;
  if (v.is_string()) {
    *single = v.get<std::string>();
    return out;
  }
  if (!v.is_array())
    fail("{} in {} must be a list of names or a regex string (found {})", key, label, type_of(v));
  for (const auto& e : v) {
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      fail("{} in {} must contain non-empty strings (found {})", key, label, e.dump());
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

bool name_matches_entry(std::string_view name, std::string_view entry) {
  if (name == entry) return true;
  return name.size() > entry.size() && name.ends_with(entry) && name[name.size() - entry.size() - 1] == '.';
}

// Layer index of "model.layers.3.self_attn.q_proj" (PEFT's default layers pattern), or -1.
int layer_of(std::string_view name) {
  auto p = name.find("layers.");
  if (p == std::string_view::npos) return -1;
  p += 7;
  int64_t v = 0;
  size_t digits = 0;
  while (p < name.size() && name[p] >= '0' && name[p] <= '9' && digits < 9)
    v = v * 10 + (name[p++] - '0'), ++digits;
  return digits > 0 && p < name.size() && name[p] == '.' ? static_cast<int>(v) : -1;
}

void refuse_if_set(const ordered_json& j, const char* key, const std::string& label, const char* why) {
  const ordered_json* v = field(j, key);
  if (is_empty_value(v) || (v->is_boolean() && !v->get<bool>())) return;
  fail("{}: {} in {}: {}", key, v->dump(), label, why);
}

}  // namespace

bool AdapterConfig::targets(std::string_view module) const {
  if (exclude_regex && exclude_regex->fullmatch(module)) return false;
  for (const auto& e : exclude_names) {
    if (name_matches_entry(module, e)) return false;
  }
  if (all_linear) return true;  // callers only ask about linear projections
  if (target_regex) return target_regex->fullmatch(module);
  bool exact = false, found = false;
  for (const auto& t : target_names) {
    exact = exact || module == t;
    found = found || name_matches_entry(module, t);
  }
  if (!found || exact || layers_to_transform.empty())
    return found;  // PEFT skips the layer check on exact names
  int layer = layer_of(module);
  for (int l : layers_to_transform) {
    if (l == layer) return true;
  }
  return false;
}

int AdapterConfig::rank_for(std::string_view module) const {
  for (const auto& [re, r_eff] : rank_pattern) {
    if (re.match(module)) return r_eff;
  }
  return r;
}

double AdapterConfig::alpha_for(std::string_view module) const {
  for (const auto& [re, alpha] : alpha_pattern) {
    if (re.match(module)) return alpha;
  }
  return lora_alpha;
}

double AdapterConfig::scale_for(std::string_view module) const {
  double rank = rank_for(module);
  return alpha_for(module) / (use_rslora ? std::sqrt(rank) : rank);
}

AdapterConfig parse_adapter_config(const ordered_json& j, const std::string& label) {
  if (!j.is_object()) fail("{} must be a JSON object (found {})", label, type_of(j));
  AdapterConfig c;
  c.label = label;

  const ordered_json* pt = field(j, "peft_type");
  if (!pt) fail("{} has no peft_type (expected \"LORA\")", label);
  if (!pt->is_string() || pt->get_ref<const std::string&>() != "LORA") {
    fail("peft_type {} in {} is not supported: only LORA adapters can be served", pt->dump(), label);
  }

  if (const ordered_json* v = field(j, "r"))
    c.r = static_cast<int>(io::json_int(*v, "r", label, 1, kMaxRank));
  if (const ordered_json* v = field(j, "lora_alpha")) c.lora_alpha = io::json_number(*v, "lora_alpha", label);
  c.use_rslora = get_bool(j, "use_rslora", label);
  if (const ordered_json* v = field(j, "base_model_name_or_path")) {
    if (!v->is_string())
      fail("base_model_name_or_path in {} must be a string (found {})", label, type_of(*v));
    c.base_model_name_or_path = v->get<std::string>();
  }

  // Features that change the computation beyond y += s * B A x.
  if (get_bool(j, "use_dora", label)) {
    fail(
        "use_dora: true in {}: DoRA adapters are not supported (their magnitude vector rescales the base "
        "weight; only plain LoRA is served)",
        label);
  }
  if (get_bool(j, "fan_in_fan_out", label)) {
    fail(
        "fan_in_fan_out: true in {}: the adapter was trained on transposed (Conv1D, GPT-2 style) weights; "
        "Llama-family projections are nn.Linear and need fan_in_fan_out: false",
        label);
  }
  if (const ordered_json* v = field(j, "bias")) {
    if (!v->is_string() || v->get_ref<const std::string&>() != "none") {
      fail("bias {} in {}: adapters that train biases are not supported (need \"none\")", v->dump(), label);
    }
  }
  refuse_if_set(j, "lora_bias", label, "LoRA biases on lora_B are not supported");
  refuse_if_set(j, "modules_to_save", label,
                "adapters that ship fully trained copies of modules are not supported (only LoRA matrices)");
  refuse_if_set(j, "trainable_token_indices", label,
                "adapters that retrain embedding rows are not supported");
  refuse_if_set(j, "layer_replication", label, "layer replication is not supported");
  refuse_if_set(j, "target_parameters", label, "LoRA on raw parameters (target_parameters) is not supported");
  refuse_if_set(j, "alora_invocation_tokens", label, "activated LoRA (aLoRA) is not supported");
  refuse_if_set(j, "use_qalora", label, "QA-LoRA is not supported");

  // target_modules / exclude_modules
  const ordered_json* tm = field(j, "target_modules");
  if (!tm) fail("{} has no target_modules", label);
  std::optional<std::string> tm_regex;
  c.target_names = get_names(*tm, "target_modules", label, &tm_regex);
  if (tm_regex) {
    if (*tm_regex == "all-linear") {
      c.all_linear = true;
    } else {
      c.target_regex.emplace(*tm_regex, "target_modules of " + label);
      for (const char* m : {"model.embed_tokens", "lm_head"}) {
        if (c.target_regex->fullmatch(m)) {
          fail("target_modules \"{}\" in {} matches {}: LoRA on embeddings or lm_head is not supported",
               *tm_regex, label, m);
        }
      }
    }
  } else {
    if (c.target_names.empty()) fail("target_modules in {} is empty", label);
    for (const auto& t : c.target_names) {
      if (name_matches_entry(t, "embed_tokens") || name_matches_entry(t, "lm_head")) {
        fail("target_modules in {} names \"{}\": LoRA on embeddings or lm_head is not supported", label, t);
      }
    }
  }
  if (const ordered_json* v = field(j, "exclude_modules")) {
    std::optional<std::string> ex_regex;
    c.exclude_names = get_names(*v, "exclude_modules", label, &ex_regex);
    if (ex_regex) c.exclude_regex.emplace(*ex_regex, "exclude_modules of " + label);
  }

  // layers_to_transform / layers_pattern (PEFT applies them to the list form of target_modules only).
  if (const ordered_json* v = field(j, "layers_to_transform")) {
    if (v->is_array()) {
      for (const auto& e : *v)
        c.layers_to_transform.push_back(
            static_cast<int>(io::json_int(e, "layers_to_transform", label, 0, 1 << 20)));
    } else {
      c.layers_to_transform.push_back(
          static_cast<int>(io::json_int(*v, "layers_to_transform", label, 0, 1 << 20)));
    }
  }
  if (const ordered_json* v = field(j, "layers_pattern"); !is_empty_value(v)) {
    bool ok = (v->is_string() && v->get_ref<const std::string&>() == "layers") ||
              (v->is_array() && v->size() == 1 && (*v)[0] == "layers");
    if (!ok) {
      fail("layers_pattern {} in {} is not supported (Llama-family decoder layers live under \"layers\")",
           v->dump(), label);
    }
  }

  // rank_pattern / alpha_pattern, in file order.
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    const ordered_json* v = field(j, key);
    if (!v) continue;
    if (!v->is_object()) fail("{} in {} must be an object (found {})", key, label, type_of(*v));
    for (auto it = v->begin(); it != v->end(); ++it) {
      const std::string what = fmt::format("{} key \"{}\"", key, it.key());
      PyRegex re("(.*\\.)?(" + it.key() + ")$", what + " of " + label);
      if (key[0] == 'r') {
        c.rank_pattern.emplace_back(std::move(re),
                                    static_cast<int>(io::json_int(it.value(), what, label, 1, kMaxRank)));
      } else {
        c.alpha_pattern.emplace_back(std::move(re), io::json_number(it.value(), what, label));
      }
    }
  }
  return c;
}

AdapterConfig read_adapter_config(const std::string& path,
                                  const std::optional<std::filesystem::path>& confine_root) {
  return parse_adapter_config(io::read_ordered_json_file(path, io::kMaxJsonFileBytes, confine_root), path);
}

}  // namespace lp::lora
