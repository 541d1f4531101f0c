// Executor: the backend seam. Everything that depends on where the model runs — weight placement, KV-cache
// storage, adapter-slot storage and the forward step — sits behind this interface; the engine, the scheduler,
// the adapter manager and the server above it see only an Executor. Two implementations:
//   model::Model        the CPU forward (this folder): host weights, host KV cache, host slot bank;
//   cuda::CudaModel     (src/cuda, built with LP_CUDA): weights, KV blocks and slots in device memory.
// Owned and called by one thread (the engine thread); not thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/device_memory.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/lora_view.h"
#include "model/weights.h"

namespace lp::model {

enum class Device { kCpu, kCuda };
const char* device_name(Device d);  // "cpu" | "cuda"

class Executor {
 public:
  virtual ~Executor() = default;

  virtual Device device() const = 0;
  // One line for logs and `bench`: the device and what runs it ("cpu: avx512bf16", "cuda:0 NVIDIA H100 ...").
  virtual std::string describe() const = 0;
  virtual const ModelConfig& config() const = 0;
  // Host views of the weights (shapes, dtypes, byte counts; the CPU forward reads these very views).
  virtual const ModelWeights& weights() const = 0;

  // KV shape this model needs, for sizing a cache; elements of `dtype` (default: the torch_dtype).
  kv::KvShape kv_shape(int block_size = 16, std::optional<DType> dtype = std::nullopt) const;
  // The KV cache the forward reads, its storage where this executor computes (its block allocator and
  // prefix index stay on the host).
  virtual std::unique_ptr<kv::KvCache> make_kv_cache(const kv::KvShape& shape, int num_blocks) = 0;
  // Where adapter slots live: null on the CPU (host Buffers); the device's memory otherwise. The slot bank
  // (lora::SlotBank) allocates and fills its slots through it, so lora/ needs no device code.
  virtual DeviceMemory* slot_memory() { return nullptr; }

  // Runs the batch; writes logits (batch.logit_rows.size(), vocab) row-major to host memory `logits`. With
  // `lora`, every projection adds the LoRA term of each token's slot (one fused pass for all adapters);
  // tokens with slot -1, or a null `lora`, run the base model only. `pool` is the host's compute pool (the
  // CPU forward's workers; other executors may leave it idle). `lora` and `cache` must come from this
  // executor's slot_memory() and make_kv_cache().
  virtual void forward(ComputePool& pool, const Batch& batch, kv::KvCache& cache, float* logits,
                       const LoraBankView* lora = nullptr) = 0;
};

}  // namespace lp::model
