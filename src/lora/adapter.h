// Loading a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) against the shapes of
// the base model: every tensor is named, shaped and paired as PEFT writes it, or the load is refused with a
// message naming the tensor, its shape and the expected shape. Pickle files (.bin/.pt/.pth) are never
// parsed. The result is host-side float data, unscaled (the scale is carried beside it): the host tier
// folds the scale into B when it packs slots.
// Cost: reads and converts every adapter weight once (r * (in + out) floats per targeted module and layer).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "lora/adapter_config.h"
#include "model/weights.h"

namespace lp::lora {

// The seven projections of a Llama-family decoder layer LoRA can target: the model's own list.
using Module = model::Proj;
inline constexpr int kNumModules = model::kNumProj;
inline std::string_view module_name(Module m) { return model::proj_name(m); }      // "q_proj", ...
inline std::string_view module_parent(Module m) { return model::proj_parent(m); }  // "self_attn" or "mlp"
// PEFT's name for the module in layer `layer`: "model.layers.{layer}.{parent}.{name}".
std::string module_path(int layer, Module m);

// What the base model offers LoRA; the model layer fills it from its config.
struct BaseShapes {
  struct Dims {
    int64_t in = 0;   // columns of the base weight (nn.Linear in_features)
    int64_t out = 0;  // rows (out_features)
  };
  int n_layers = 0;
  std::array<Dims, kNumModules> dims{};  // indexed by Module
};

// One adapted projection: y += scale * B (A x).
struct LoraWeights {
  int layer = 0;
  Module module = Module::kQ;
  int rank = 0;        // r from rank_pattern or r
  float scale = 0.0f;  // alpha_eff / rank (or / sqrt(rank) with use_rslora); not folded into b
  int64_t in = 0, out = 0;
  DType file_dtype = DType::kF32;  // dtype in the file (informational; a and b are float)
  std::vector<float> a;            // (rank, in) row-major: lora_A.weight as stored
  std::vector<float> b;            // (out, rank) row-major: lora_B.weight as stored
};

struct LoraAdapter {
  std::filesystem::path dir;
  AdapterConfig config;
  std::vector<LoraWeights> weights;  // sorted by (layer, module); modules without tensors are absent

  const LoraWeights* find(int layer, Module m) const;  // nullptr when that module is not adapted
  int max_rank() const;                                // 0 when empty
  size_t num_params() const;                           // sum of rank * (in + out)
};

// Loads and validates `dir`. Throws lp::Error on anything malformed or unsupported (see adapter.cpp for the
// list); never reads a pickle file. With `confine_root` (an adapter a client named), every file read must be
// a regular file whose real path lies inside the root (io::open_regular_file: kForbidden, kInvalid).
LoraAdapter load_adapter(const std::filesystem::path& dir, const BaseShapes& base,
                         const std::optional<std::filesystem::path>& confine_root = std::nullopt);

}  // namespace lp::lora
