#include "model/config.h"

#include <cmath>
#include <fstream>
#include <numbers>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace lp::model {

using nlohmann::json;

const std::vector<std::string>& ModelConfig::supported_architectures() {
  static const std::vector<std::string> archs = {"LlamaForCausalLM", "MistralForCausalLM",
                                                 "Qwen2ForCausalLM"};
  return archs;
}

namespace {

template <class T>
T get_num(const json& j, const char* key, const std::string& label, bool required, T def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) fail("{}: missing required field '{}'", label, key);
    return def;
  }
  if (!it->is_number()) fail("{}: field '{}' must be a number, got {}", label, key, it->dump());
  if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) fail("{}: field '{}' must be an integer, got {}", label, key, it->dump());
  }
  return it->get<T>();
}

std::vector<int32_t> id_list(const json& j, const char* key) {
  std::vector<int32_t> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (it->is_number_integer()) out.push_back(it->get<int32_t>());
  if (it->is_array())
    for (const auto& v : *it)
      if (v.is_number_integer()) out.push_back(v.get<int32_t>());
  return out;
}

DType parse_torch_dtype(const json& j, const std::string& label) {
  auto it = j.find("torch_dtype");
  if (it == j.end()) it = j.find("dtype");  // newer transformers write "dtype"
  if (it == j.end() || it->is_null()) return DType::kBF16;
  std::string s = it->is_string() ? it->get<std::string>() : "";
  if (s == "bfloat16") return DType::kBF16;
  if (s == "float16") return DType::kF16;
  if (s == "float32") return DType::kF32;
  fail("{}: unsupported torch_dtype {} (supported: bfloat16, float16, float32)", label, it->dump());
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& label) {
  if (!j.is_object()) fail("{}: config must be a JSON object", label);
  ModelConfig c;
  auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    fail("{}: missing 'architectures' list", label);
  c.architecture = (*archs)[0].get<std::string>();
  const auto& sup = supported_architectures();
  if (std::find(sup.begin(), sup.end(), c.architecture) == sup.end()) {
    std::string list;
    for (const auto& a : sup) list += (list.empty() ? "" : ", ") + a;
    fail("{}: unsupported architecture '{}' (supported: {})", label, c.architecture, list);
  }
  c.model_type = j.value("model_type", "");
  c.hidden_size = get_num<int>(j, "hidden_size", label, true, 0);
  c.intermediate_size = get_num<int>(j, "intermediate_size", label, true, 0);
  c.n_layers = get_num<int>(j, "num_hidden_layers", label, true, 0);
  c.n_heads = get_num<int>(j, "num_attention_heads", label, true, 0);
  c.n_kv_heads = get_num<int>(j, "num_key_value_heads", label, false, c.n_heads);
  c.vocab_size = get_num<int>(j, "vocab_size", label, true, 0);
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.n_layers <= 0 || c.n_heads <= 0 ||
      c.n_kv_heads <= 0 || c.vocab_size <= 0)
    fail("{}: sizes must be positive (hidden_size {}, intermediate_size {}, num_hidden_layers {}, "
         "num_attention_heads {}, num_key_value_heads {}, vocab_size {})",
         label, c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size);
  if (c.n_heads % c.n_kv_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", label, c.n_heads,
         c.n_kv_heads);
  int def_hd = c.hidden_size / c.n_heads;
  c.head_dim = get_num<int>(j, "head_dim", label, false, def_hd);
  if (c.head_dim <= 0 || c.head_dim % 2 != 0)
    fail("{}: head_dim {} must be positive and even", label, c.head_dim);
  if (!j.contains("head_dim") && c.hidden_size % c.n_heads != 0)
    fail("{}: hidden_size {} not divisible by num_attention_heads {} and no head_dim given", label,
         c.hidden_size, c.n_heads);
  c.max_position_embeddings = get_num<int64_t>(j, "max_position_embeddings", label, false, 4096);
  c.rms_norm_eps = get_num<double>(j, "rms_norm_eps", label, false, 1e-6);
  c.rope_theta = get_num<double>(j, "rope_theta", label, false, 10000.0);
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  c.torch_dtype = parse_torch_dtype(j, label);
  c.bos_token_ids = id_list(j, "bos_token_id");
  c.eos_token_ids = id_list(j, "eos_token_id");

  if (c.architecture == "Qwen2ForCausalLM") {
    c.attention_bias = true;  // Qwen2 always has q/k/v bias, o_proj none
  } else {
    c.attention_bias = j.value("attention_bias", false);
    c.o_bias = c.attention_bias;  // Llama's attention_bias covers o_proj too
    c.mlp_bias = j.value("mlp_bias", false);
  }

  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    if (!rs->is_object()) fail("{}: rope_scaling must be an object", label);
    std::string type = rs->value("rope_type", rs->value("type", std::string("default")));
    if (type == "llama3") {
      c.rope_scaling.llama3 = true;
      c.rope_scaling.factor = get_num<double>(*rs, "factor", label + " rope_scaling", true, 1.0);
      c.rope_scaling.low_freq_factor = get_num<double>(*rs, "low_freq_factor", label + " rope_scaling", true, 1);
      c.rope_scaling.high_freq_factor =
          get_num<double>(*rs, "high_freq_factor", label + " rope_scaling", true, 4);
      c.rope_scaling.original_max_position_embeddings =
          get_num<int64_t>(*rs, "original_max_position_embeddings", label + " rope_scaling", true, 8192);
      if (c.rope_scaling.factor <= 0 || c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
        fail("{}: invalid llama3 rope_scaling (factor {}, low_freq_factor {}, high_freq_factor {})", label,
             c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor);
    } else if (type != "default") {
      fail("{}: unsupported rope_scaling type '{}' (supported: llama3, default)", label, type);
    }
  }

  c.max_model_len = c.max_position_embeddings;
  bool sliding = j.value("use_sliding_window", true);
  if (auto sw = j.find("sliding_window"); sliding && sw != j.end() && sw->is_number_integer()) {
    int64_t w = sw->get<int64_t>();
    if (w > 0 && w < c.max_model_len) c.max_model_len = w;
  }
  return c;
}

ModelConfig ModelConfig::from_dir(const std::filesystem::path& dir) {
  auto path = dir / "config.json";
  std::ifstream f(path);
  if (!f) fail("cannot open {}: a Hugging Face model folder needs config.json", path.string());
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
  return from_json(j, path.string());
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  int half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (!c.rope_scaling.llama3) return inv;
  const auto& s = c.rope_scaling;
  double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    double wavelen = 2 * std::numbers::pi / inv[i];
    if (wavelen > low_wavelen) {
      inv[i] = inv[i] / s.factor;
    } else if (wavelen >= high_wavelen) {
      double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                      (s.high_freq_factor - s.low_freq_factor);
      inv[i] = (1 - smooth) * inv[i] / s.factor + smooth * inv[i];
    }
  }
  return inv;
}

}  // namespace lp::model
