#include "model/demo_model.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/buffer.h"
#include "core/check.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace lp::model {

using nlohmann::json;

DemoRng::DemoRng(uint64_t seed, const std::string& name) : s_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {
  for (unsigned char ch : name) s_ = (s_ ^ ch) * 0x100000001B3ull;  // FNV-1a mix of the name
}

uint64_t DemoRng::next() {  // splitmix64
  uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float DemoRng::uniform() { return static_cast<float>(static_cast<int64_t>(next() >> 40) - (1 << 23)) / (1 << 23); }

namespace {

struct Shape {
  int hidden, inter, layers, heads, kv_heads, vocab;
  int64_t max_pos;
  bool tie;
  double theta;
  bool llama3_rope;
};

Shape shape_of(const std::string& s) {
  if (s == "tiny") return {64, 176, 2, 4, 2, 512, 1024, false, 10000.0, false};
  if (s == "small") return {256, 704, 4, 8, 2, 4096, 4096, true, 10000.0, false};
  if (s == "smol") return {576, 1536, 30, 9, 3, 49152, 8192, true, 100000.0, false};
  if (s == "1b") return {2048, 8192, 16, 32, 8, 128256, 131072, true, 500000.0, true};
  fail("unknown demo shape '{}' (known: tiny, small, smol, 1b)", s);
}

const char* arch_name(const std::string& a) {
  if (a == "llama") return "LlamaForCausalLM";
  if (a == "mistral") return "MistralForCausalLM";
  if (a == "qwen2") return "Qwen2ForCausalLM";
  fail("unknown demo architecture '{}' (known: llama, mistral, qwen2)", a);
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
  }
  return "?";
}

json ids_json(const std::vector<int32_t>& ids) {
  if (ids.empty()) return nullptr;
  if (ids.size() == 1) return ids[0];
  return ids;
}

}  // namespace

int demo_vocab_size(const std::string& shape) { return shape_of(shape).vocab; }

std::string demo_config_json(const DemoSpec& spec) {
  Shape s = shape_of(spec.shape);
  json j = {
      {"architectures", {arch_name(spec.arch)}},
      {"model_type", spec.arch},
      {"hidden_size", s.hidden},
      {"intermediate_size", s.inter},
      {"num_hidden_layers", s.layers},
      {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},
      {"head_dim", s.hidden / s.heads},
      {"vocab_size", s.vocab},
      {"max_position_embeddings", s.max_pos},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", s.theta},
      {"tie_word_embeddings", s.tie},
      {"torch_dtype", torch_dtype_name(spec.dtype)},
      {"hidden_act", "silu"},
      {"bos_token_id", ids_json(spec.bos_ids)},
      {"eos_token_id", ids_json(spec.eos_ids)},
  };
  if (spec.arch == "llama") {
    j["attention_bias"] = spec.attention_bias;
    j["mlp_bias"] = spec.mlp_bias;
  } else if (spec.attention_bias || spec.mlp_bias) {
    fail("demo attention_bias and mlp_bias are for the llama architecture only (not {})", spec.arch);
  }
  if (spec.arch == "mistral" || spec.arch == "qwen2") j["sliding_window"] = nullptr;
  if (spec.arch == "qwen2") j["use_sliding_window"] = false;
  if (s.llama3_rope)
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 32.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  return j.dump(2);
}

void write_demo_model(const std::filesystem::path& dir, const DemoSpec& spec) {
  std::filesystem::create_directories(dir);
  std::string cfg_text = demo_config_json(spec);
  {
    std::ofstream f(dir / "config.json");
    if (!f) fail("cannot write {}", (dir / "config.json").string());
    f << cfg_text << "\n";
  }
  ModelConfig c = ModelConfig::from_json(json::parse(cfg_text), "demo config");

  // All tensors are generated first (the writer needs every buffer alive until write()).
  std::vector<Buffer<uint8_t>> store;
  io::SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    Buffer<uint8_t> buf(static_cast<size_t>(n) * dtype_size(spec.dtype));
    DemoRng rng(spec.seed, name);
    constexpr int64_t kChunk = 4096;
    float tmp[kChunk];
    for (int64_t i = 0; i < n; i += kChunk) {
      int64_t m = std::min(kChunk, n - i);
      for (int64_t j = 0; j < m; ++j) tmp[j] = offset + scale * rng.uniform();
      from_f32(spec.dtype, tmp, buf.data() + i * dtype_size(spec.dtype), static_cast<size_t>(m));
    }
    w.add(name, spec.dtype, std::move(shape), buf.data());
    store.push_back(std::move(buf));
  };
  const int64_t H = c.hidden_size;
  // Uniform(-a, a) has std a/sqrt(3): a = sqrt(3/in) gives unit-variance outputs for unit inputs.
  auto lin_scale = [](int64_t in) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(in))); };
  const float resid = 1.0f / std::sqrt(2.0f * c.n_layers);  // keeps the residual stream from growing
  add("model.embed_tokens.weight", {c.vocab_size, H}, 0.035f, 0.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    std::string pre = "model.layers." + std::to_string(l) + ".";
    add(pre + "input_layernorm.weight", {H}, 0.1f, 1.0f);
    add(pre + "post_attention_layernorm.weight", {H}, 0.1f, 1.0f);
    for (int p = 0; p < kNumProj; ++p) {
      Proj pr = static_cast<Proj>(p);
      auto [in, out] = proj_shape(c, pr);
      float sc = lin_scale(in) * ((pr == Proj::kO || pr == Proj::kDown) ? resid : 1.0f);
      std::string base = pre + proj_parent(pr) + "." + proj_name(pr);
      add(base + ".weight", {out, in}, sc, 0.0f);
      if (has_bias(c, pr)) add(base + ".bias", {out}, 0.1f, 0.0f);
    }
  }
  add("model.norm.weight", {H}, 0.1f, 1.0f);
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H}, lin_scale(H) * 0.5f, 0.0f);
  w.set_metadata("format", "pt");
  w.write(dir / "model.safetensors");
}

}  // namespace lp::model

