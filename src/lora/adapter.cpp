// Refusals, each with a message naming the tensor (and shapes where they matter):
//   pickle-only folder; missing adapter_config.json or weights; DoRA magnitude vectors; LoRA biases and other
//   bias tensors; embed_tokens / lm_head / lora_embedding tensors; names not of PEFT's form; adapter-name
//   infixes other than "default"; a layer index >= n_layers; a module the base does not have; a module
//   target_modules does not select; an A without its B or a B without its A; the same half twice; a shape
//   that is not [r, in] / [out, r]; a rank that differs from r / rank_pattern; non-finite values.
#include "lora/adapter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/check.h"
#include "io/file_open.h"
#include "io/safetensors.h"

namespace lp::lora {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kPrefix = "base_model.model.";
constexpr const char* kSupported =
    "LoRA is supported on q_proj, k_proj, v_proj, o_proj under self_attn and gate_proj, up_proj, down_proj "
    "under mlp";

// What a tensor name says, once it has passed classify().
struct TensorRole {
  int layer;
  Module module;
  bool is_b;
};

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) return out;
    start = p + 1;
  }
}

// Decimal layer index without sign or leading junk; -1 when not one.
int parse_layer(std::string_view s) {
  if (s.empty() || s.size() > 9) return -1;
  int v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return -1;
    v = v * 10 + (ch - '0');
  }
  return v;
}

TensorRole classify(const std::string& name, const BaseShapes& base, const std::string& file) {
  if (name.find("lora_magnitude_vector") != std::string::npos) {
    fail("tensor {} in {} is a DoRA magnitude vector: DoRA adapters are not supported", name, file);
  }
  if (name.find("embed_tokens") != std::string::npos || name.find("lm_head") != std::string::npos ||
      name.find("lora_embedding_") != std::string::npos) {
    fail("tensor {} in {} adapts an embedding or lm_head: LoRA on embeddings or lm_head is not supported",
         name, file);
  }
  if (!std::string_view(name).starts_with(kPrefix)) {
    fail(
        "unexpected tensor {} in {} (PEFT names look like base_model.model.model.layers.0.self_attn.q_proj."
        "lora_A.weight)",
        name, file);
  }
  std::string_view rest = std::string_view(name).substr(kPrefix.size());
  size_t pa = rest.rfind(".lora_A."), pb = rest.rfind(".lora_B.");
  if (pa == std::string_view::npos && pb == std::string_view::npos) {
    if (rest.ends_with(".bias")) {
      fail("tensor {} in {} is a bias: adapters that train biases are not supported", name, file);
    }
    fail("unexpected tensor {} in {}: not a lora_A or lora_B weight", name, file);
  }
  bool is_b = pa == std::string_view::npos || (pb != std::string_view::npos && pb > pa);
  size_t p = is_b ? pb : pa;
  std::string_view path = rest.substr(0, p), tail = rest.substr(p + 8);
  if (tail == "bias" || tail == "default.bias") {
    fail("tensor {} in {} is a LoRA bias: adapters with lora_bias are not supported", name, file);
  }
  if (tail != "weight" && tail != "default.weight") {
    fail(
        "unexpected tensor {} in {}: expected lora_{}.weight or lora_{}.default.weight after the module name",
        name, file, is_b ? 'B' : 'A', is_b ? 'B' : 'A');
  }
  auto parts = split(path, '.');
  int layer = parts.size() == 5 && parts[0] == "model" && parts[1] == "layers" ? parse_layer(parts[2]) : -1;
  if (layer < 0) {
    fail("tensor {} in {} adapts \"{}\", which is not a projection of a decoder layer ({})", name, file, path,
         kSupported);
  }
  if (layer >= base.n_layers) {
    fail("tensor {} in {} is for layer {}, but the base model has {} layers (0..{})", name, file, layer,
         base.n_layers, base.n_layers - 1);
  }
  for (int i = 0; i < kNumModules; ++i) {
    Module m = static_cast<Module>(i);
    if (parts[4] == module_name(m) && parts[3] == module_parent(m) && base.dims[i].in > 0 &&
        base.dims[i].out > 0) {
      return TensorRole{layer, m, is_b};
    }
  }
  fail("tensor {} in {} adapts module {}.{}, which the base model does not have ({})", name, file, parts[3],
       parts[4], kSupported);
}

std::string shape_of(int64_t a, int64_t b) {
  return fmt::format("[{}, {}]", a, b);
}

// Checks `t` is [rows, cols] where `rank_dim` (0 or 1) is the rank; names what each dimension is.
void check_shape(const io::TensorInfo& t, const std::string& file, const std::string& module, int64_t rows,
                 int64_t cols, int rank_dim, int rank, bool rank_from_pattern) {
  const char* form = rank_dim == 0 ? "[r, in_features]" : "[out_features, r]";
  const std::string expected = shape_of(rows, cols);
  if (t.shape.size() != 2) {
    fail("tensor {} in {} has shape {}, expected {} ({} of {})", t.name, file, t.shape_str(), expected, form,
         module);
  }
  int other = 1 - rank_dim;
  int64_t want_other = other == 0 ? rows : cols;
  if (t.shape[other] != want_other) {
    fail("tensor {} in {} has shape {}, expected {} ({} of {}: {} is {})", t.name, file, t.shape_str(),
         expected, form, module, other == 0 ? "out_features" : "in_features", want_other);
  }
  if (t.shape[rank_dim] != rank) {
    fail("tensor {} in {} has rank {} (shape {}), but the config gives r = {} for {} (from {}); expected {}",
         t.name, file, t.shape[rank_dim], t.shape_str(), rank, module,
         rank_from_pattern ? "rank_pattern" : "r", expected);
  }
}

std::vector<float> to_floats(const io::TensorInfo& t, const std::string& file) {
  size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  to_f32(t.dtype, t.data, out.data(), n);  // no alignment needed
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i]))
      fail("tensor {} in {} has a non-finite value ({}) at index {}", t.name, file, out[i], i);
  }
  return out;
}

// The weights file of `dir`, refusing pickle-only folders before anything else is read: a pickle file is
// only looked up by name, never opened.
io::TensorSet open_weights(const fs::path& dir, const std::optional<fs::path>& confine_root) {
  if (io::entry_exists(dir / "adapter_model.safetensors") ||
      io::entry_exists(dir / "adapter_model.safetensors.index.json")) {
    return io::TensorSet::open_dir(dir, "adapter_model", confine_root);
  }
  for (const char* pickle : {"adapter_model.bin", "adapter_model.pt", "adapter_model.pth"}) {
    if (io::entry_exists(dir / pickle)) {
      fail(
          "{} has {} but no adapter_model.safetensors: pickle files are never parsed (loading one can "
          "execute "
          "arbitrary code); convert the adapter to safetensors (load it in PEFT and save_pretrained(..., "
          "safe_serialization=True))",
          dir.string(), pickle);
    }
  }
  fail("no adapter_model.safetensors in {}", dir.string());
}

}  // namespace

std::string module_path(int layer, Module m) {
  return fmt::format("model.layers.{}.{}.{}", layer, module_parent(m), module_name(m));
}

const LoraWeights* LoraAdapter::find(int layer, Module m) const {
  auto it = std::lower_bound(weights.begin(), weights.end(), std::make_pair(layer, m),
                             [](const LoraWeights& w, const std::pair<int, Module>& k) {
                               return std::make_pair(w.layer, w.module) < k;
                             });
  return it != weights.end() && it->layer == layer && it->module == m ? &*it : nullptr;
}

int LoraAdapter::max_rank() const {
  int r = 0;
  for (const auto& w : weights) r = std::max(r, w.rank);
  return r;
}

size_t LoraAdapter::num_params() const {
  size_t n = 0;
  for (const auto& w : weights) n += static_cast<size_t>(w.rank) * static_cast<size_t>(w.in + w.out);
  return n;
}

LoraAdapter load_adapter(const fs::path& dir, const BaseShapes& base,
                         const std::optional<fs::path>& confine_root) {
  LP_CHECK(base.n_layers > 0, "BaseShapes without layers");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("adapter folder {} does not exist or is not a folder", dir.string());
  const fs::path config_path = dir / "adapter_config.json";
  if (!io::entry_exists(config_path)) fail("no adapter_config.json in {}", dir.string());

  LoraAdapter ad;
  ad.dir = dir;
  ad.config = read_adapter_config(config_path.string(), confine_root);
  const AdapterConfig& cfg = ad.config;
  for (int l : cfg.layers_to_transform) {
    if (l >= base.n_layers) {
      fail("layers_to_transform in {} names layer {}, but the base model has {} layers", cfg.label, l,
           base.n_layers);
    }
  }
  io::TensorSet set = open_weights(dir, confine_root);
  const std::string file = (dir / "adapter_model.safetensors").string();

  // Pair the halves by (layer, module).
  struct Pair {
    const io::TensorInfo* a = nullptr;
    const io::TensorInfo* b = nullptr;
  };
  std::map<std::pair<int, int>, Pair> pairs;
  for (const io::TensorInfo* t : set.all()) {
    TensorRole role = classify(t->name, base, file);
    Pair& p = pairs[{role.layer, static_cast<int>(role.module)}];
    const io::TensorInfo*& slot = role.is_b ? p.b : p.a;
    if (slot) fail("tensors {} and {} in {} are the same LoRA half of one module", slot->name, t->name, file);
    slot = t;
  }
  if (pairs.empty()) fail("{} contains no LoRA tensors", file);

  for (const auto& [key, p] : pairs) {
    const auto [layer, mi] = key;
    const Module m = static_cast<Module>(mi);
    const std::string path = module_path(layer, m);
    const BaseShapes::Dims d = base.dims[mi];
    const int rank = cfg.rank_for(path);
    const bool from_pattern = std::any_of(cfg.rank_pattern.begin(), cfg.rank_pattern.end(),
                                          [&](const auto& e) { return e.first.match(path); });
    if (!p.b) {
      fail("tensor {} in {} has no matching lora_B (expected shape {} for {})", p.a->name, file,
           shape_of(d.out, rank), path);
    }
    if (!p.a) {
      fail("tensor {} in {} has no matching lora_A (expected shape {} for {})", p.b->name, file,
           shape_of(rank, d.in), path);
    }
    if (!cfg.targets(path)) {
      fail("tensor {} in {} adapts {}, which target_modules in {} does not select", p.a->name, file, path,
           cfg.label);
    }
    check_shape(*p.a, file, path, rank, d.in, 0, rank, from_pattern);
    check_shape(*p.b, file, path, d.out, rank, 1, rank, from_pattern);

    LoraWeights w;
    w.layer = layer;
    w.module = m;
    w.rank = rank;
    w.scale = static_cast<float>(cfg.scale_for(path));
    w.in = d.in;
    w.out = d.out;
    w.file_dtype = p.a->dtype;
    w.a = to_floats(*p.a, file);
    w.b = to_floats(*p.b, file);
    ad.weights.push_back(std::move(w));
  }
  return ad;  // std::map iteration order is (layer, module): already sorted
}

}  // namespace lp::lora
