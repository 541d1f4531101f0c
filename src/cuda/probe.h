// The two ceilings of a CUDA device, measured in the same run as a benchmark (`bench --device cuda`):
// device-memory bandwidth (a large device-to-device copy) and the dense GEMM rate (cuBLAS). A decode step is
// judged against the first (it reads every weight once), a prefill step against the second. Built in every
// configuration: without LP_CUDA (probe_none.cpp) each probe throws lp::Error saying the backend is missing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace lp::cuda {

// Samples of one probe and their median.
struct ProbeResult {
  double median = 0;
  std::vector<double> samples;
};

// cudaMemcpyAsync device → device of `bytes` (random data), timed with events after a warm-up, `repeats`
// times. Each sample is (bytes read + bytes written) per second = 2 * bytes / time: a copy of N bytes moves
// 2N through device memory, which is how the bandwidth of a decode step (that reads W bytes) compares:
// its bound is W / this rate. On device 0 (the current device). Throws lp::Error on any CUDA error.
ProbeResult measure_d2d_bandwidth(size_t bytes, int repeats);

// D (M, N) = A (M, K) · B (K, N) through cublasGemmEx, inputs and output in `dtype` (BF16, F16 or F32),
// f32 accumulation (tensor cores for BF16 / F16), random inputs in [-1, 1), timed with events after a
// warm-up, `repeats` times. Each sample is 2 * M * N * K / time in TFLOP/s. Throws lp::Error on any CUDA or
// cuBLAS error.
ProbeResult measure_gemm_tflops(int64_t M, int64_t N, int64_t K, DType dtype, int repeats);

// Waits until all work queued on the current device, on every stream, is done (cudaDeviceSynchronize), so
// a host clock read after it measures the device work too. Throws lp::Error on a CUDA error.
void device_synchronize();

}  // namespace lp::cuda
