#include "model/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>

#include "core/check.h"
#include "io/json_file.h"

namespace lp::model {

using nlohmann::json;

const std::vector<std::string>& ModelConfig::supported_architectures() {
  static const std::vector<std::string> archs = {"LlamaForCausalLM", "MistralForCausalLM",
                                                 "Qwen2ForCausalLM"};
  return archs;
}

namespace {

// Bounds on the sizes a config may give: far above any supported model, and small enough that no product
// the model computes overflows (q_dim() and kv_dim() are heads x head_dim <= 2^24 in int; vocab x hidden and
// the like are computed in int64).
constexpr int64_t kMaxSize = int64_t{1} << 20;       // hidden_size, intermediate_size
constexpr int64_t kMaxVocab = int64_t{1} << 24;      // vocab_size
constexpr int64_t kMaxCount = int64_t{1} << 12;      // num_hidden_layers, attention heads, head_dim
constexpr int64_t kMaxPositions = int64_t{1} << 32;  // max_position_embeddings and the like

// The fields of one object of config.json. An absent or null field takes its default; without a default it
// is required. Wrong types and out-of-range values are lp::Errors naming the file, the field and the value.
struct Fields {
  const json& j;
  const std::string& label;
  std::string prefix;  // "rope_scaling." for the nested object

  const json* find(const char* key, bool required) const {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null()) return &*it;
    if (required) fail("{}: missing required field '{}{}'", label, prefix, key);
    return nullptr;
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi, std::optional<int64_t> def = {}) const {
    const json* v = find(key, !def);
    return v ? io::json_int(*v, prefix + key, label, lo, hi) : *def;
  }
  double number(const char* key, std::optional<double> def = {}) const {
    const json* v = find(key, !def);
    return v ? io::json_number(*v, prefix + key, label) : *def;
  }
  bool flag(const char* key, bool def) const {
    const json* v = find(key, false);
    return v ? io::json_bool(*v, prefix + key, label) : def;
  }
  std::string string(const char* key, std::string def) const {
    const json* v = find(key, false);
    if (!v) return def;
    if (!v->is_string()) fail("{}{} in {} must be a string (found {})", prefix, key, label, v->dump());
    return v->get<std::string>();
  }
};

std::vector<int32_t> id_list(const json& j, const char* key, const std::string& label) {
  std::vector<int32_t> out;
  auto id = [&](const json& v) {
    out.push_back(static_cast<int32_t>(io::json_int(v, key, label, INT32_MIN, INT32_MAX)));
  };
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (it->is_number_integer()) id(*it);
  if (it->is_array())
    for (const auto& v : *it)
      if (v.is_number_integer()) id(v);
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

// The first of `keys` present (vLLM's get_from_keys: AutoAWQ writes w_bit / q_group_size, transformers
// bits / group_size), or nullptr.
const char* first_key(const json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (auto it = j.find(k); it != j.end() && !it->is_null()) return k;
  return nullptr;
}

CheckpointQuant parse_quantization_config(const json& q, const std::string& label) {
  if (!q.is_object()) fail("{}: quantization_config must be an object", label);
  const Fields f{q, label, "quantization_config."};
  CheckpointQuant c;
  c.method = f.string("quant_method", "");
  if (c.method.empty()) fail("{}: missing required field 'quantization_config.quant_method'", label);
  for (char& ch : c.method) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (c.method != "awq" && c.method != "gptq")
    fail("{}: quantization_config.quant_method \"{}\" is not supported; supported: awq, gptq", label,
         c.method);
  const char* bits_key = first_key(q, {"bits", "w_bit"});
  if (!bits_key) fail("{}: missing required field 'quantization_config.bits'", label);
  c.bits = static_cast<int>(f.integer(bits_key, INT32_MIN, INT32_MAX));
  if (c.bits != 4)
    fail("{}: quantization_config.{} is {}; only 4-bit {} checkpoints are supported", label, bits_key, c.bits,
         c.method);
  const char* group_key = first_key(q, {"group_size", "q_group_size"});
  if (!group_key) fail("{}: missing required field 'quantization_config.group_size'", label);
  c.group_size = static_cast<int>(f.integer(group_key, INT32_MIN, INT32_MAX));
  if (c.group_size != -1 && (c.group_size <= 0 || c.group_size % 64 != 0))
    fail(
        "{}: quantization_config.{} is {}; loraplex's int4 layout needs groups of a multiple of 64 columns "
        "(or -1, one group per row)",
        label, group_key, c.group_size);
  if (c.method == "awq") {
    c.version = f.string("version", "gemm");
    for (char& ch : c.version) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (c.version != "gemm")
      fail(
          "{}: quantization_config.version \"{}\" is not supported; AWQ checkpoints must use the GEMM layout",
          label, c.version);
    c.zero_point = f.flag("zero_point", true);
    if (!c.zero_point)
      fail(
          "{}: quantization_config.zero_point false is not supported (AWQ GEMM checkpoints have zero points)",
          label);
    if (c.group_size == -1) fail("{}: quantization_config.{} -1 is not an AWQ layout", label, group_key);
  } else {
    c.desc_act = f.flag("desc_act", false);
    c.sym = f.flag("sym", true);
    c.checkpoint_format = f.string("checkpoint_format", "gptq");
    if (c.checkpoint_format != "gptq" && c.checkpoint_format != "gptq_v2")
      fail("{}: quantization_config.checkpoint_format \"{}\" is not supported; supported: gptq, gptq_v2",
           label, c.checkpoint_format);
    if (f.flag("lm_head", false))
      fail("{}: quantization_config.lm_head true (a quantized lm_head) is not supported", label);
  }
  if (auto m = q.find("modules_to_not_convert");
      m != q.end() && !m->is_null() && !(m->is_array() && m->empty()))
    fail(
        "{}: quantization_config.modules_to_not_convert {} is not supported (every projection must be "
        "quantized)",
        label, m->dump());
  return c;
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
  const Fields f{j, label, ""};
  c.model_type = f.string("model_type", "");
  c.hidden_size = static_cast<int>(f.integer("hidden_size", 1, kMaxSize));
  c.intermediate_size = static_cast<int>(f.integer("intermediate_size", 1, kMaxSize));
  c.n_layers = static_cast<int>(f.integer("num_hidden_layers", 1, kMaxCount));
  c.n_heads = static_cast<int>(f.integer("num_attention_heads", 1, kMaxCount));
  c.n_kv_heads = static_cast<int>(f.integer("num_key_value_heads", 1, kMaxCount, c.n_heads));
  c.vocab_size = static_cast<int>(f.integer("vocab_size", 1, kMaxVocab));
  if (c.n_heads % c.n_kv_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", label, c.n_heads,
         c.n_kv_heads);
  int def_hd = c.hidden_size / c.n_heads;
  c.head_dim = static_cast<int>(f.integer("head_dim", 1, kMaxCount, def_hd));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0)
    fail("{}: head_dim {} must be positive and even", label, c.head_dim);
  if (!j.contains("head_dim") && c.hidden_size % c.n_heads != 0)
    fail("{}: hidden_size {} not divisible by num_attention_heads {} and no head_dim given", label,
         c.hidden_size, c.n_heads);
  c.max_position_embeddings = f.integer("max_position_embeddings", 1, kMaxPositions, 4096);
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-6);
  c.rope_theta = f.number("rope_theta", 10000.0);
  c.tie_word_embeddings = f.flag("tie_word_embeddings", false);
  c.torch_dtype = parse_torch_dtype(j, label);
  c.bos_token_ids = id_list(j, "bos_token_id", label);
  c.eos_token_ids = id_list(j, "eos_token_id", label);

  if (c.architecture == "Qwen2ForCausalLM") {
    c.attention_bias = true;  // Qwen2 always has q/k/v bias, o_proj none
  } else {
    c.attention_bias = f.flag("attention_bias", false);
    c.o_bias = c.attention_bias;  // Llama's attention_bias covers o_proj too
    c.mlp_bias = f.flag("mlp_bias", false);
  }

  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    if (!rs->is_object()) fail("{}: rope_scaling must be an object", label);
    const Fields r{*rs, label, "rope_scaling."};
    std::string type = r.string("rope_type", r.string("type", "default"));
    if (type == "llama3") {
      c.rope_scaling.llama3 = true;
      c.rope_scaling.factor = r.number("factor");
      c.rope_scaling.low_freq_factor = r.number("low_freq_factor");
      c.rope_scaling.high_freq_factor = r.number("high_freq_factor");
      c.rope_scaling.original_max_position_embeddings =
          r.integer("original_max_position_embeddings", 1, kMaxPositions);
      if (c.rope_scaling.factor <= 0 || c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
        fail("{}: invalid llama3 rope_scaling (factor {}, low_freq_factor {}, high_freq_factor {})", label,
             c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor);
    } else if (type != "default") {
      fail("{}: unsupported rope_scaling type '{}' (supported: llama3, default)", label, type);
    }
  }

  if (auto q = j.find("quantization_config"); q != j.end() && !q->is_null())
    c.quant = parse_quantization_config(*q, label);

  c.max_model_len = c.max_position_embeddings;
  bool sliding = f.flag("use_sliding_window", true);
  if (auto sw = j.find("sliding_window"); sliding && sw != j.end() && sw->is_number_integer()) {
    int64_t w = sw->get<int64_t>();
    if (w > 0 && w < c.max_model_len) c.max_model_len = w;
  }
  return c;
}

ModelConfig ModelConfig::from_dir(const std::filesystem::path& dir) {
  auto path = dir / "config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    fail("cannot open {}: a Hugging Face model folder needs config.json", path.string());
  return from_json(io::read_json_file(path), path.string());
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

bool RopeTable::grow(const ModelConfig& c, int64_t n) {
  if (n <= positions) return false;
  if (inv_freq.empty()) inv_freq = rope_inv_freq(c);
  const int half = c.head_dim / 2;
  const int64_t from = positions;
  positions = std::min<int64_t>(c.max_model_len, std::max<int64_t>({n, 2 * from, 4096}));
  LP_CHECK(positions >= n, "position {} beyond the context length {}", n - 1, c.max_model_len);
  cos.resize(static_cast<size_t>(positions * half));
  sin.resize(static_cast<size_t>(positions * half));
  // Angles in double, then rounded once: the table is exact to f32 precision for every position (and the
  // same whenever it is computed).
  for (int64_t p = from; p < positions; ++p)
    for (int i = 0; i < half; ++i) {
      const double a = static_cast<double>(p) * inv_freq[i];
      cos[p * half + i] = static_cast<float>(std::cos(a));
      sin[p * half + i] = static_cast<float>(std::sin(a));
    }
  return true;
}

}  // namespace lp::model
