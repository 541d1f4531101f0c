// DeviceMemory: where an executor keeps the memory the forward step reads — KV-cache blocks and adapter slots
// (model/executor.h). The CPU executor has none (those layers keep their host Buffers); the CUDA executor
// implements it with device allocations and copies on its own copy stream, ordered before the next forward
// step that reads them. The interface has no CUDA types, so kv/ and lora/ stay free of any device toolkit.
// Called from the engine thread only, except pin_host (the adapter loader thread).
#pragma once

#include <cstddef>
#include <memory>

namespace lp {

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;

  // `bytes` of zeroed device memory, aligned for any element type; freed when the last owner drops it.
  // Throws lp::Error naming the size when the device is out of memory.
  virtual std::shared_ptr<void> allocate(size_t bytes) = 0;

  // host → device, asynchronous: complete before the next forward step starts reading `dst`, and never
  // overlapping a step still in flight that reads it. `src` must stay valid until the next forward step
  // starts (the host tier keeps a resident adapter alive at least that long). Fastest from pinned memory.
  virtual void copy_to_device(void* dst, const void* src, size_t bytes) = 0;
  // Zeroes `bytes` at `dst`, ordered like copy_to_device.
  virtual void fill_zero(void* dst, size_t bytes) = 0;

  // Page-locks [p, p + bytes) of host memory so copies from it are direct DMA; the registration ends when the
  // returned handle is dropped (before the memory is freed). A null handle when pinning is not possible
  // (copies still work, staged by the driver).
  virtual std::shared_ptr<void> pin_host(const void* p, size_t bytes) = 0;
};

}  // namespace lp
