// Gemm: the projections of the CUDA forward through cuBLASLt. Row-major in and out, as the rest of the
// backend: y (T, N) f32 (+)= x (T, K) · W (N, K)ᵀ, W stored as nn.Linear stores it and x in W's dtype
// (F32, BF16, F16), accumulated in f32 (CUBLAS_COMPUTE_32F: no TF32 for F32 weights, to stay close to the
// CPU). One cuBLASLt handle and one workspace; the descriptors and the heuristic's algorithm are cached per
// shape, so after the first step of each shape a GEMM is one cublasLtMatmul call.
// Owned and called by the engine thread.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "core/dtype.h"

namespace lp::cuda {

class Gemm {
 public:
  // Creates the handle and a workspace of `workspace_bytes` on the current device. Throws lp::Error.
  explicit Gemm(size_t workspace_bytes = size_t{32} << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y[t][n] = (accumulate ? y[t][n] : 0) + sum_k x[t][k] * W[n][k]      t < T, n < N, k < K
  //   x: (T, K) in `dtype`, row stride ldx (elements);  W: (N, K) in `dtype`, row stride K;
  //   y: (T, N) f32, row stride ldy.  Enqueued on `stream`; throws lp::Error naming the cuBLAS status.
  void run(const void* x, int64_t ldx, const void* w, DType dtype, float* y, int64_t ldy, int64_t T, int64_t N,
           int64_t K, bool accumulate, cudaStream_t stream);

  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    size_t workspace = 0;
  };
  // (T, N, K, ldx, ldy, dtype, accumulate, alignment of W, x, y in bytes)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, uint32_t, uint32_t, uint32_t>;
  Plan& plan_for(const Key& key);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace lp::cuda
