#include "cuda/cuda_memory.h"

#include <atomic>

#include <fmt/format.h>

#include "core/check.h"
#include "core/log.h"
#include "cuda/check.h"

namespace lp::cuda {

struct CudaMemory::State {
  int device = 0;
  cudaStream_t copy = nullptr;
  cudaEvent_t copy_done = nullptr;  // the last copy or zeroing enqueued; steps wait for it
  cudaEvent_t step_done = nullptr;  // the end of the last step; copies wait for it
  cudaEvent_t mark = nullptr, mark_end = nullptr;  // timing (mark_copies)
  std::atomic<bool> warned_pin{false};

  ~State() {
    // Teardown: nothing to report to (and at process exit the runtime may already be gone).
    if (copy != nullptr) {
      cudaSetDevice(device);
      cudaStreamSynchronize(copy);
      cudaStreamDestroy(copy);
    }
    for (cudaEvent_t e : {copy_done, step_done, mark, mark_end})
      if (e != nullptr) cudaEventDestroy(e);
  }
};

CudaMemory::CudaMemory(int device) : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.device = device;
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  check_cuda(cudaStreamCreateWithFlags(&s.copy, cudaStreamNonBlocking), "creating the copy stream");
  check_cuda(cudaEventCreateWithFlags(&s.copy_done, cudaEventDisableTiming), "creating an event");
  check_cuda(cudaEventCreateWithFlags(&s.step_done, cudaEventDisableTiming), "creating an event");
  check_cuda(cudaEventCreate(&s.mark), "creating an event");
  check_cuda(cudaEventCreate(&s.mark_end), "creating an event");
}

CudaMemory::~CudaMemory() = default;

cudaStream_t CudaMemory::copy_stream() const { return state_->copy; }

std::shared_ptr<void> CudaMemory::allocate(size_t bytes) {
  check_cuda(cudaSetDevice(state_->device), "cudaSetDevice");
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // an allocation failure is not sticky: clear it so no later check sees it
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    fail("CUDA device {}: cannot allocate {} bytes ({:.2f} GiB) of device memory: {} ({:.2f} GiB free of "
         "{:.2f} GiB)",
         state_->device, bytes, bytes / 1073741824.0, cudaGetErrorString(e), free_b / 1073741824.0,
         total_b / 1073741824.0);
  }
  auto state = state_;
  std::shared_ptr<void> handle(p, [state](void* q) {
    cudaSetDevice(state->device);
    const cudaError_t fe = cudaFree(q);  // waits for the device: no step or copy can still use q
    if (fe != cudaSuccess) log_warn("CUDA: cudaFree failed: {}", cudaGetErrorString(fe));
  });
  // Zeroed on the copy stream and ordered like a copy: the first step that reads it waits for it.
  if (bytes > 0) check_cuda(cudaMemsetAsync(p, 0, bytes, state_->copy), "zeroing new device memory");
  enqueue_epilogue();
  return handle;
}

void CudaMemory::enqueue_prologue() {
  check_cuda(cudaSetDevice(state_->device), "cudaSetDevice");
  check_cuda(cudaStreamWaitEvent(state_->copy, state_->step_done, 0), "ordering a copy after the running step");
}

void CudaMemory::enqueue_epilogue() {
  check_cuda(cudaEventRecord(state_->copy_done, state_->copy), "recording the copy event");
}

void CudaMemory::copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  LP_CHECK(dst != nullptr && src != nullptr);
  enqueue_prologue();
  // From pinned memory a true DMA (the host tier keeps `src` alive and pinned until the copy stream drained,
  // see pin_host); from pageable memory the driver stages `src` before returning.
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, state_->copy), "host -> device copy");
  enqueue_epilogue();
}

void CudaMemory::fill_zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  LP_CHECK(dst != nullptr);
  enqueue_prologue();
  check_cuda(cudaMemsetAsync(dst, 0, bytes, state_->copy), "zeroing device memory");
  enqueue_epilogue();
}

std::shared_ptr<void> CudaMemory::pin_host(const void* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return nullptr;
  State& s = *state_;
  void* q = const_cast<void*>(p);  // cudaHostRegister does not write; its signature is not const
  cudaError_t e = cudaSetDevice(s.device);
  if (e == cudaSuccess) e = cudaHostRegister(q, bytes, cudaHostRegisterDefault);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so no later launch check reports it
    if (!s.warned_pin.exchange(true))
      log_warn("CUDA: cannot page-lock {} bytes of adapter memory ({}); host -> slot copies will be staged by "
               "the driver (slower). Further failures are not logged.",
               bytes, cudaGetErrorString(e));
    return nullptr;
  }
  auto state = state_;
  return std::shared_ptr<void>(q, [state](void* r) {
    // A DMA from these pages may still be queued on the copy stream: let it finish before the pages can go.
    cudaSetDevice(state->device);
    cudaError_t de = cudaStreamSynchronize(state->copy);
    if (de != cudaSuccess) log_warn("CUDA: copy stream failed before unpinning: {}", cudaGetErrorString(de));
    de = cudaHostUnregister(r);
    if (de != cudaSuccess) {
      (void)cudaGetLastError();
      log_warn("CUDA: cudaHostUnregister failed: {}", cudaGetErrorString(de));
    }
  });
}

void CudaMemory::before_step(cudaStream_t compute) {
  check_cuda(cudaStreamWaitEvent(compute, state_->copy_done, 0), "ordering a step after the pending copies");
}

void CudaMemory::after_step(cudaStream_t compute) {
  check_cuda(cudaEventRecord(state_->step_done, compute), "recording the step event");
}

void CudaMemory::mark_copies() {
  check_cuda(cudaSetDevice(state_->device), "cudaSetDevice");
  check_cuda(cudaEventRecord(state_->mark, state_->copy), "recording a timing event");
}

float CudaMemory::copies_ms_since_mark() {
  check_cuda(cudaSetDevice(state_->device), "cudaSetDevice");
  check_cuda(cudaEventRecord(state_->mark_end, state_->copy), "recording a timing event");
  check_cuda(cudaEventSynchronize(state_->mark_end), "waiting for the copies");
  float ms = 0;
  check_cuda(cudaEventElapsedTime(&ms, state_->mark, state_->mark_end), "timing the copies (mark_copies first)");
  return ms;
}

void CudaMemory::synchronize_copies() {
  check_cuda(cudaSetDevice(state_->device), "cudaSetDevice");
  check_cuda(cudaStreamSynchronize(state_->copy), "waiting for the copy stream");
}

}  // namespace lp::cuda
