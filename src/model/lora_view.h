// LoraBankView: what the forward pass needs of the adapter slot bank — for every layer and projection, the
// stacked per-slot LoRA weights (kernels::LoraWeights; a == nullptr when no slot can adapt that projection).
// The bank itself (memory, loading, eviction) lives in lora/; the model only reads through this view.
#pragma once

#include <array>
#include <vector>

#include "kernels/lora.h"
#include "model/weights.h"

namespace lp::model {

struct LoraBankView {
  std::vector<std::array<kernels::LoraWeights, kNumProj>> layers;  // (n_layers)
  const kernels::LoraWeights* get(int layer, Proj p) const {
    const auto& w = layers[layer][static_cast<int>(p)];
    return w.a ? &w : nullptr;
  }
};

}  // namespace lp::model
