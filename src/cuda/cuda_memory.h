// CudaMemory: the lp::DeviceMemory of the CUDA executor — where the KV cache's blocks and the adapter slots
// live. Host → device copies (adapter loads) go on a copy stream of their own, ordered against the compute
// stream by events in both directions: a step waits (on the device, never the host) for the copies enqueued
// before it, and a copy waits for the step in flight before it, so a slot is never overwritten while a step
// still reads it and a load never blocks the engine thread.
// Engine thread: allocate, copy_to_device, fill_zero, before_step / after_step, the timing helpers. Any thread:
// pin_host and the handles it returns.
#pragma once

#include <cstddef>
#include <memory>

#include <cuda_runtime_api.h>

#include "core/device_memory.h"

namespace lp::cuda {

class CudaMemory : public DeviceMemory {
 public:
  // Creates the copy stream and its events on device `device` (the caller has made it current). Throws
  // lp::Error when CUDA fails.
  explicit CudaMemory(int device);
  ~CudaMemory() override;
  CudaMemory(const CudaMemory&) = delete;
  CudaMemory& operator=(const CudaMemory&) = delete;

  // cudaMalloc, zeroed on the copy stream (so the first step that reads it waits for the zeroing).
  std::shared_ptr<void> allocate(size_t bytes) override;
  void copy_to_device(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  // cudaHostRegister; the handle's deleter first waits for the copy stream (a DMA from these pages may still
  // be queued there), then unregisters. Null (and one warning in the log) when registration fails.
  std::shared_ptr<void> pin_host(const void* p, size_t bytes) override;

  // Called by the executor's forward around each step on its compute stream: the step waits for every copy
  // enqueued so far; copies enqueued later wait for the step's end.
  void before_step(cudaStream_t compute);
  void after_step(cudaStream_t compute);

  // Timing of host → slot copies (benchmarks): mark_copies() records a start event on the copy stream;
  // copies_ms_since_mark() records an end event, waits for it and returns the device time between the two,
  // i.e. everything enqueued on the copy stream in between (an adapter load: all its copies), including any
  // wait for a step that was still in flight when they were enqueued (synchronize first to exclude that).
  void mark_copies();
  float copies_ms_since_mark();

  // Waits until every copy enqueued so far is done.
  void synchronize_copies();
  cudaStream_t copy_stream() const;

 private:
  // Shared with the deleters of pin_host's handles, which may outlive this object (an adapter's host copy
  // dropped after the executor): they keep the stream alive until the last one is gone.
  struct State;
  void enqueue_prologue();  // the copy stream waits for the last step
  void enqueue_epilogue();  // records the copy-done event
  std::shared_ptr<State> state_;
};

}  // namespace lp::cuda
