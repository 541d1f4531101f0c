// Helpers shared by the adapter-cache tests (manager, Zipf, TSan): a tiny base model config, demo adapter
// folders, the engine-side "acquire until ready" loop, and the check that a slot holds exactly an adapter's
// packed weights (zero-padded to max_rank, as the kernels read them).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "lora/adapter_manager.h"
#include "lora/demo_adapter.h"
#include "model/demo_model.h"

namespace lp::lora::cache_test {

inline model::ModelConfig tiny_config() {
  model::DemoSpec spec;
  spec.shape = "tiny";  // hidden 64, intermediate 176, 2 layers, 4 heads, 2 kv heads
  return model::ModelConfig::from_json(nlohmann::json::parse(model::demo_config_json(spec)), "tiny");
}

// Writes demo adapter `i` (all seven modules at `rank`, or the mixed set) into root/name.
inline std::filesystem::path write_adapter(const std::filesystem::path& root, const std::string& name,
                                           const model::ModelConfig& cfg, int i, int rank = 4,
                                           bool mixed = false) {
  std::filesystem::path dir = root / name;
  write_demo_adapter(dir, cfg, demo_adapter_spec(i, rank, mixed, /*seed=*/7, DType::kBF16));
  return dir;
}

// Engine side: acquire until the answer is not kLoading (waiting for the loader in between).
inline AdapterManager::Acquire acquire_ready(AdapterManager& m, const std::string& name) {
  for (int i = 0; i < 100; ++i) {
    AdapterManager::Acquire r = m.acquire(name);
    if (r.status != AdapterManager::Status::kLoading) return r;
    m.wait_for_loads();
  }
  return {AdapterManager::Status::kLoading, -1, "still loading after 100 tries"};
}

// "" when `slot` of the bank holds exactly `p` (every adapted module's A and B, zero padding, ranks; every
// other module rank 0); else the first difference.
inline std::string slot_mismatch(const SlotBank& bank, int slot, const PackedAdapter& p) {
  const model::LoraBankView& v = bank.view();
  const size_t es = dtype_size(bank.dtype());
  const int R = bank.max_rank();
  for (size_t l = 0; l < v.layers.size(); ++l) {
    for (int i = 0; i < kNumModules; ++i) {
      const kernels::LoraWeights& w = v.layers[l][i];
      const PackedModule* pm = nullptr;
      for (const PackedModule& m : p.modules)
        if (m.layer == static_cast<int>(l) && static_cast<int>(m.module) == i) pm = &m;
      if (!w.a) {
        if (pm) return "module without slot memory is adapted";
        continue;
      }
      const int rank = pm ? pm->rank : 0;
      if (w.ranks[slot] != rank)
        return "layer " + std::to_string(l) + " module " + std::to_string(i) + ": rank " +
               std::to_string(w.ranks[slot]) + " != " + std::to_string(rank);
      if (!pm) continue;
      const auto* a = static_cast<const uint8_t*>(w.a) + static_cast<size_t>(slot) * R * w.in * es;
      if (std::memcmp(a, pm->a.data(), pm->a.size()) != 0) return "A differs at layer " + std::to_string(l);
      for (size_t k = pm->a.size(); k < static_cast<size_t>(R) * w.in * es; ++k)
        if (a[k] != 0) return "A padding not zero";
      // Bᵀ: (max_rank, out) per slot; the adapter's rank rows, then zero rows.
      const auto* b = static_cast<const uint8_t*>(w.b) + static_cast<size_t>(slot) * R * w.out * es;
      if (std::memcmp(b, pm->b.data(), pm->b.size()) != 0) return "B differs at layer " + std::to_string(l);
      for (size_t k = pm->b.size(); k < static_cast<size_t>(R) * w.out * es; ++k)
        if (b[k] != 0) return "B padding not zero";
    }
  }
  return "";
}

}  // namespace lp::lora::cache_test
