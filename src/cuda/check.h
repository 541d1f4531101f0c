// The CUDA error checks every call and launch of the backend goes through (check.cpp).
#pragma once

#include <cuda_runtime_api.h>

namespace lp::cuda {

// Throws lp::Error naming `what` and the CUDA error if `e` is not cudaSuccess.
void check_cuda(cudaError_t e, const char* what);
// check_cuda(cudaGetLastError(), what): called after every launch.
void check_launch(const char* what);

}  // namespace lp::cuda
