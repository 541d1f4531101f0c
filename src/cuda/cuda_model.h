// CudaModel: the model::Executor that runs the forward step on an NVIDIA GPU. Weights are uploaded once in
// their file dtype (dense F32 / BF16 / F16 only: int8 and int4 matrices are refused with a clear error), the
// KV cache's blocks and the adapter slots live in device memory (make_kv_cache, slot_memory), and forward()
// runs the whole step on one compute stream: cuBLASLt GEMMs for the projections (q/k/v as one GEMM of the
// concatenated weights, gate/up as another), the kernels of cuda/kernels.h for the rest, the LoRA shrink and
// expand of every adapter in one launch per projection group; only the logits rows that sample come back.
// Host → slot copies run on a second stream (the DeviceMemory of slot_memory()) with events, so the step
// that first reads a newly loaded slot waits for its copy on the device, not on the host.
// Owned and called by the engine thread.
#pragma once

#include <filesystem>
#include <memory>

#include "cuda/device.h"
#include "model/executor.h"

namespace lp::cuda {

class CudaModel : public model::Executor {
 public:
  // Loads config + weights from `dir` and uploads them to device `device_index`. Throws lp::Error when no
  // device is usable (the message names what is missing), when the weights are quantized, or when they do not
  // fit in device memory.
  static std::unique_ptr<CudaModel> load(const std::filesystem::path& dir, const model::LoadOptions& options,
                                         int device_index = 0);
  ~CudaModel() override;

  model::Device device() const override { return model::Device::kCuda; }
  std::string describe() const override;
  const model::ModelConfig& config() const override;
  const model::ModelWeights& weights() const override;
  std::unique_ptr<kv::KvCache> make_kv_cache(const kv::KvShape& shape, int num_blocks) override;
  DeviceMemory* slot_memory() override;
  void forward(ComputePool& pool, const model::Batch& batch, kv::KvCache& cache, float* logits,
               const model::LoraBankView* lora = nullptr) override;

  const DeviceInfo& info() const;
  // Waits until every queued step and copy is done (benchmarks and tests time with it).
  void synchronize();

  struct Impl;

 private:
  explicit CudaModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lp::cuda
