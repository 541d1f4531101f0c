#include "model/demo_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/buffer.h"
#include "core/check.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/checkpoint_quant.h"
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
  double llama3_factor;  // rope_scaling "llama3" with this factor; 0 = none
};

Shape shape_of(const std::string& s) {
  if (s == "tiny") return {64, 176, 2, 4, 2, 512, 1024, false, 10000.0, 0};
  if (s == "small") return {256, 704, 4, 8, 2, 4096, 4096, true, 10000.0, 0};
  if (s == "smol") return {576, 1536, 30, 9, 3, 49152, 8192, true, 100000.0, 0};
  if (s == "1b") return {2048, 8192, 16, 32, 8, 128256, 131072, true, 500000.0, 32.0};
  if (s == "8b") return {4096, 14336, 32, 32, 8, 128256, 131072, false, 500000.0, 8.0};  // Llama-3.1-8B's
  if (s == "story") return {512, 256, 2, 8, 2, 1024, 2048, false, 10000.0, 0};  // model/demo_story.h
  fail("unknown demo shape '{}' (known: tiny, small, smol, 1b, 8b, story)", s);
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

// The group of a demo int4 checkpoint: 128 when it divides every projection's input count, else 64.
int demo_group(const Shape& s) {
  return s.hidden % 128 == 0 && s.inter % 128 == 0 ? 128 : 64;
}

// One int4 projection: q (out, in) and per group g (out, n_groups) a zero z and an f16 scale s, with
// W ~ (q - z) * s. Asymmetric: s = (max - min) / 15, z = round(-min / s); symmetric: s = 2 max|w| / 15,
// z = 8 (GPTQ's rule). z_min: 1 for GPTQ v1, whose qzeros store z - 1 and cannot hold -1.
struct Int4 {
  std::vector<uint8_t> q, z;
  std::vector<uint16_t> s;
  int64_t n_groups = 0;
};

Int4 quantize_int4(const std::vector<float>& w, int64_t out, int64_t in, int64_t group, bool sym, int z_min) {
  Int4 r;
  r.n_groups = (in + group - 1) / group;
  r.q.resize(static_cast<size_t>(out * in));
  r.z.resize(static_cast<size_t>(out * r.n_groups));
  r.s.resize(static_cast<size_t>(out * r.n_groups));
  for (int64_t n = 0; n < out; ++n)
    for (int64_t g = 0; g < r.n_groups; ++g) {
      const int64_t k0 = g * group, k1 = std::min(in, k0 + group);
      float lo = w[n * in + k0], hi = lo;
      for (int64_t k = k0; k < k1; ++k) {
        lo = std::min(lo, w[n * in + k]);
        hi = std::max(hi, w[n * in + k]);
      }
      float s = sym ? 2 * std::max(-lo, hi) / 15 : (hi - lo) / 15;
      const uint16_t s16 = f32_to_f16(s > 0 ? s : 1.0f);
      s = f16_to_f32(s16);  // q is computed with the scale as stored
      const int z = sym ? 8 : std::clamp(static_cast<int>(std::nearbyint(-lo / s)), z_min, 15);
      r.s[n * r.n_groups + g] = s16;
      r.z[n * r.n_groups + g] = static_cast<uint8_t>(z);
      for (int64_t k = k0; k < k1; ++k)
        r.q[n * in + k] =
            static_cast<uint8_t>(std::clamp(static_cast<int>(std::nearbyint(w[n * in + k] / s)) + z, 0, 15));
    }
  return r;
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
      {"torch_dtype", torch_dtype_name(spec.quantization.empty() ? spec.dtype : DType::kF16)},
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
  if (spec.quantization == "awq") {
    const int g = demo_group(s);
    if (s.hidden % g != 0 || s.inter % g != 0)
      fail(
          "demo shape {} cannot be written as AWQ: AWQ needs every projection's input features (hidden {}, "
          "intermediate {}) to be a multiple of the group ({})",
          spec.shape, s.hidden, s.inter, g);
    j["quantization_config"] = {
        {"quant_method", "awq"}, {"bits", 4}, {"group_size", g}, {"version", "gemm"}, {"zero_point", true}};
  } else if (spec.quantization == "gptq") {
    j["quantization_config"] = {{"quant_method", "gptq"},      {"bits", 4},
                                {"group_size", demo_group(s)}, {"desc_act", false},
                                {"sym", spec.gptq_sym},        {"checkpoint_format", "gptq"}};
  } else if (!spec.quantization.empty()) {
    fail("unknown demo quantization '{}' (known: awq, gptq)", spec.quantization);
  }
  if (spec.arch == "mistral" || spec.arch == "qwen2") j["sliding_window"] = nullptr;
  if (spec.arch == "qwen2") j["use_sliding_window"] = false;
  if (s.llama3_factor > 0)
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", s.llama3_factor},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  return j.dump(2);
}

void write_demo_model(const std::filesystem::path& dir, const DemoSpec& spec) {
  if (spec.shape == "story") fail("the story model's weights depend on its tokenizer: use write_story_model");
  std::filesystem::create_directories(dir);
  std::string cfg_text = demo_config_json(spec);
  {
    std::ofstream f(dir / "config.json");
    if (!f) fail("cannot write {}", (dir / "config.json").string());
    f << cfg_text << "\n";
  }
  ModelConfig c = ModelConfig::from_json(json::parse(cfg_text), "demo config");

  // All tensors are generated first (the writer needs every buffer alive until write()); the I32 ones are
  // added first, so every tensor stays aligned to its element size.
  const DType dt = spec.quantization.empty() ? spec.dtype : DType::kF16;
  std::vector<Buffer<uint8_t>> store;
  struct Pending {
    std::string name;
    std::vector<int64_t> shape;
    const void* data;
    bool i32;
  };
  std::vector<Pending> pending;
  auto values = [&](const std::string& name, int64_t n, float scale, float offset) {
    std::vector<float> v(static_cast<size_t>(n));
    DemoRng rng(spec.seed, name);
    for (float& x : v) x = offset + scale * rng.uniform();
    return v;
  };
  auto add_raw = [&](const std::string& name, std::vector<int64_t> shape, const void* src, size_t bytes,
                     bool i32) {
    Buffer<uint8_t> buf(bytes);
    if (bytes) std::memcpy(buf.data(), src, bytes);
    pending.push_back(Pending{name, std::move(shape), buf.data(), i32});
    store.push_back(std::move(buf));
  };
  // Float tensors are filled after all are listed, several at once: each tensor's values depend only on
  // (seed, name), so the bytes do not depend on the order (an 8b model is 8 billion values).
  struct Fill {
    std::string name;
    int64_t n;
    float scale, offset;
    uint8_t* dst;
  };
  std::vector<Fill> fills;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    Buffer<uint8_t> buf(static_cast<size_t>(n) * dtype_size(dt));
    fills.push_back(Fill{name, n, scale, offset, buf.data()});
    pending.push_back(Pending{name, std::move(shape), buf.data(), false});
    store.push_back(std::move(buf));
  };
  auto fill = [&](const Fill& f) {
    DemoRng rng(spec.seed, f.name);  // the same values as values(), in chunks (a 1b embedding is 1 GB of f32)
    constexpr int64_t kChunk = 4096;
    float tmp[kChunk];
    for (int64_t i = 0; i < f.n; i += kChunk) {
      int64_t m = std::min(kChunk, f.n - i);
      for (int64_t j = 0; j < m; ++j) tmp[j] = f.offset + f.scale * rng.uniform();
      from_f32(dt, tmp, f.dst + i * dtype_size(dt), static_cast<size_t>(m));
    }
  };
  const bool awq = spec.quantization == "awq";
  const int64_t group = c.quant.method.empty() ? 0 : c.quant.group_size;
  // An int4 projection `base` of (in, out), packed as checkpoint_quant.h describes.
  auto add_int4 = [&](const std::string& base, int64_t in, int64_t out, float scale) {
    std::vector<float> v = values(base + ".weight", out * in, scale, 0.0f);  // the float model's values
    const int zero_offset = c.quant.zero_offset();
    Int4 r = quantize_int4(v, out, in, group, !awq && spec.gptq_sym, zero_offset);
    const int64_t out8 = out / 8, G = r.n_groups;
    std::vector<int32_t> qw(static_cast<size_t>(in * out8)), qz(static_cast<size_t>(G * out8));
    auto put = [](int32_t& word, int nib, int value) {
      word = static_cast<int32_t>(static_cast<uint32_t>(word) | static_cast<uint32_t>(value) << (4 * nib));
    };
    for (int64_t n = 0; n < out; ++n) {
      const int nib = awq ? static_cast<int>(std::find(kAwqOrder, kAwqOrder + 8, n % 8) - kAwqOrder) : n % 8;
      for (int64_t g = 0; g < G; ++g) put(qz[g * out8 + n / 8], nib, r.z[n * G + g] - zero_offset);
      for (int64_t k = 0; k < in; ++k) {
        if (awq)
          put(qw[k * out8 + n / 8], nib, r.q[n * in + k]);
        else
          put(qw[(k / 8) * out + n], static_cast<int>(k % 8), r.q[n * in + k]);
      }
    }
    std::vector<uint16_t> sc(static_cast<size_t>(G * out));
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n = 0; n < out; ++n) sc[g * out + n] = r.s[n * G + g];
    if (awq)
      add_raw(base + ".qweight", {in, out8}, qw.data(), qw.size() * 4, true);
    else
      add_raw(base + ".qweight", {in / 8, out}, qw.data(), qw.size() * 4, true);
    add_raw(base + ".qzeros", {G, out8}, qz.data(), qz.size() * 4, true);
    add_raw(base + ".scales", {G, out}, sc.data(), sc.size() * 2, false);
    if (!awq) {
      std::vector<int32_t> gi(static_cast<size_t>(in));
      for (int64_t k = 0; k < in; ++k) gi[k] = static_cast<int32_t>(k / group);
      add_raw(base + ".g_idx", {in}, gi.data(), gi.size() * 4, true);
    }
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
      if (group) {
        add_int4(base, in, out, sc);
      } else {
        add(base + ".weight", {out, in}, sc, 0.0f);
      }
      if (has_bias(c, pr)) add(base + ".bias", {out}, 0.1f, 0.0f);
    }
  }
  add("model.norm.weight", {H}, 0.1f, 1.0f);
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H}, lin_scale(H) * 0.5f, 0.0f);
  // Largest first, each taken by the next free thread.
  std::stable_sort(fills.begin(), fills.end(), [](const Fill& a, const Fill& b) { return a.n > b.n; });
  std::atomic<size_t> next{0};
  ComputePool pool;
  pool.run([&](int, int) {
    for (size_t i = next++; i < fills.size(); i = next++) fill(fills[i]);
  });
  io::SafetensorsWriter w;
  for (const Pending& p : pending)
    if (p.i32) w.add_i32(p.name, p.shape, static_cast<const int32_t*>(p.data));
  for (const Pending& p : pending)
    if (!p.i32) w.add(p.name, dt, p.shape, p.data);
  w.set_metadata("format", "pt");
  w.write(dir / "model.safetensors");
}

}  // namespace lp::model

