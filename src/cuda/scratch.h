// Scratch memory of the CUDA executor: a device buffer and a pinned host buffer that grow on demand and never
// shrink (the forward's activations, the step's metadata and its staging, the logits). Internal to src/cuda.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "core/check.h"
#include "cuda/check.h"

namespace lp::cuda {

// A device allocation grown on demand, never shrunk. Growing waits for `stream` first: a step in flight may
// still read the old memory.
class DevBuf {
 public:
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p_) cudaFree(p_);
  }
  void ensure(size_t bytes, cudaStream_t stream, const char* what) {
    if (bytes <= cap_) return;
    check_cuda(cudaStreamSynchronize(stream), "waiting for the step before growing a buffer");
    if (p_) check_cuda(cudaFree(p_), "cudaFree");
    p_ = nullptr;
    cap_ = 0;
    const cudaError_t e = cudaMalloc(&p_, bytes);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      p_ = nullptr;
      fail("CUDA: cannot allocate {} bytes of device memory for {}: {}", bytes, what, cudaGetErrorString(e));
    }
    cap_ = bytes;
  }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }
  size_t cap() const { return cap_; }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// Pinned host memory, grown on demand. The caller makes sure no copy from or to it is still queued.
class HostBuf {
 public:
  HostBuf() = default;
  HostBuf(const HostBuf&) = delete;
  HostBuf& operator=(const HostBuf&) = delete;
  ~HostBuf() {
    if (p_) cudaFreeHost(p_);
  }
  void ensure(size_t bytes, const char* what) {
    if (bytes <= cap_) return;
    if (p_) check_cuda(cudaFreeHost(p_), "cudaFreeHost");
    p_ = nullptr;
    cap_ = 0;
    const cudaError_t e = cudaHostAlloc(&p_, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      p_ = nullptr;
      fail("CUDA: cannot allocate {} bytes of pinned host memory for {}: {}", bytes, what, cudaGetErrorString(e));
    }
    cap_ = bytes;
  }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace lp::cuda
