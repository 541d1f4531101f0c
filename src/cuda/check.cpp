// cuda/check.h. In a .cpp: the messages use fmt, whose consteval format strings nvcc's front end rejects.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "core/check.h"
#include "cuda/check.h"

namespace lp::cuda {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(fmt::format("CUDA error in {}: {} ({})", what, cudaGetErrorString(e), cudaGetErrorName(e)));
}

void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

}  // namespace lp::cuda
