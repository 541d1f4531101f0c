// The two compute-side forms of an adapter:
//   PackedAdapter — the host tier's form: per adapted (layer, module), A (rank, in) and (B·scale)ᵀ (rank, out)
//                   already converted to the slot dtype, so host → slot is two plain copies.
//   SlotBank      — `max_loras` slots pre-allocated at start-up in the kernels' stacked layout, per layer and
//                   target module: A[max_loras][max_rank][in], Bᵀ[max_loras][max_rank][out], zero-padded.
//                   (B is kept transposed so the expand kernel is vectorized over the outputs.)
// The bank exposes a model::LoraBankView that the forward pass reads. Owned by the engine thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/buffer.h"
#include "core/device_memory.h"
#include "core/dtype.h"
#include "lora/adapter.h"
#include "model/config.h"
#include "model/lora_view.h"

namespace lp::lora {

struct PackedModule {
  int layer = 0;
  Module module = Module::kQ;
  int rank = 0;
  Buffer<uint8_t> a;  // (rank, in) in dtype
  Buffer<uint8_t> b;  // (rank, out) in dtype: lora_B transposed, scale folded in
};

struct PackedAdapter {
  DType dtype = DType::kF32;
  int max_rank = 0;
  std::vector<PackedModule> modules;  // sorted by (layer, module)
  // Page-lock registrations of the modules' buffers (device slots: host → slot copies are then direct DMA).
  // Declared after `modules`, so they end before the buffers are freed.
  std::vector<std::shared_ptr<void>> pins;
  size_t bytes() const;
};

// Converts a loaded adapter to `dtype` with the scale folded into B. With `pin` (an executor's slot memory),
// the result's buffers are page-locked for it.
PackedAdapter pack_adapter(const LoraAdapter& adapter, DType dtype, DeviceMemory* pin = nullptr);

// BaseShapes of a model config (what LoRA may target, and the shapes).
BaseShapes base_shapes(const model::ModelConfig& c);

// Which of the seven projections get slot memory (an adapter targeting another one is refused).
using ModuleSet = std::array<bool, kNumModules>;
inline constexpr ModuleSet kAllModules = {true, true, true, true, true, true, true};

// Bytes of one module's part of a slot, over all layers: layers × max_rank × (in + out) × dtype bytes.
int64_t module_slot_bytes(const model::ModelConfig& c, Module m, int max_rank, DType dtype);
// Bytes of one slot: the sum of module_slot_bytes over `modules`.
size_t slot_bytes(const model::ModelConfig& c, int max_rank, DType dtype, const ModuleSet& modules);

class SlotBank {
 public:
  // Slots in host memory, or with `memory` (model::Executor::slot_memory()) in that device's memory: then
  // view() holds device pointers (the executor's forward reads them) and load() / clear() enqueue copies.
  SlotBank(const model::ModelConfig& c, int max_loras, int max_rank, DType dtype,
           const ModuleSet& modules = kAllModules, DeviceMemory* memory = nullptr);
  SlotBank(const SlotBank&) = delete;
  SlotBank& operator=(const SlotBank&) = delete;

  int max_loras() const { return max_loras_; }
  int max_rank() const { return max_rank_; }
  DType dtype() const { return dtype_; }
  size_t bytes() const { return bytes_; }
  const model::LoraBankView& view() const { return view_; }

  // Throws lp::Error when the adapter does not fit this bank (rank > max_rank, a module without slot
  // memory, another dtype); the slot is left cleared then.
  void load(int slot, const PackedAdapter& adapter);
  void clear(int slot);  // the slot adapts nothing (ranks 0)
  // Checks that `adapter` would load, without touching any slot.
  void check_fits(const PackedAdapter& adapter) const;

 private:
  struct Part {
    int64_t in = 0, out = 0;
    Buffer<uint8_t> a, b;          // (max_loras, max_rank, in), (max_loras, max_rank, out); host slots only
    int32_t* ranks = nullptr;      // (max_loras) in ranks_: the truth; null when the module has no memory
    uint8_t* a_data = nullptr;     // a, b and ranks where the forward reads them (host, or device)
    uint8_t* b_data = nullptr;
    int32_t* ranks_data = nullptr;
  };
  Part& part(int layer, Module m) { return parts_[static_cast<size_t>(layer) * kNumModules + static_cast<int>(m)]; }
  size_t a_bytes(const Part& p) const { return static_cast<size_t>(max_loras_) * max_rank_ * p.in * dtype_size(dtype_); }
  size_t b_bytes(const Part& p) const { return static_cast<size_t>(max_loras_) * max_rank_ * p.out * dtype_size(dtype_); }
  void place_on_device();
  void clear_ranks(int slot);  // on the host only
  void publish_ranks();        // device slots: ranks_ → the device's copy (one copy for every part)

  int n_layers_, max_loras_, max_rank_;
  DType dtype_;
  ModuleSet modules_;
  DeviceMemory* memory_ = nullptr;
  std::shared_ptr<void> device_;  // the device slots' one allocation
  size_t bytes_ = 0;
  std::vector<Part> parts_;       // (n_layers, kNumModules)
  Buffer<int32_t> ranks_;         // (parts, max_loras)
  std::shared_ptr<void> ranks_pin_;  // device slots: ranks_ page-locked (ends before ranks_ is freed)
  int32_t* ranks_dev_ = nullptr;     // device slots: ranks_'s copy in device_  // (n_layers, kNumModules); unallocated modules have empty buffers
  model::LoraBankView view_;
};

}  // namespace lp::lora
