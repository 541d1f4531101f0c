#include "cuda/gemm.h"

#include <cstdint>

#include <fmt/format.h>

#include "core/check.h"
#include "cuda/check.h"
#include "cuda/cublas_api.h"

namespace lp::cuda {

namespace {

// The largest power of two (<= 256, cuBLASLt's default assumption) that divides the address: what the
// heuristic may assume of a pointer. Base pointers of device allocations are 256-aligned; a view into a
// concatenated buffer may be less.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

}  // namespace

Gemm::Gemm(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  check_cublas(cublas_api().cublasLtCreate(&handle_), "cublasLtCreate");
  if (workspace_bytes_ > 0) {
    const cudaError_t e = cudaMalloc(&workspace_, workspace_bytes_);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      cublas_api().cublasLtDestroy(handle_);
      fail("CUDA: cannot allocate the {} bytes of GEMM workspace: {}", workspace_bytes_, cudaGetErrorString(e));
    }
  }
}

Gemm::~Gemm() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublas_api().cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublas_api().cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublas_api().cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublas_api().cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublas_api().cublasLtDestroy(handle_);
}

Gemm::Plan& Gemm::plan_for(const Key& key) {
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  const auto [T, N, K, ldx, ldy, dt, accumulate, align_w, align_x, align_y] = key;
  const cudaDataType_t type = cuda_data_type(static_cast<DType>(dt));
  // Emplace first so that a throw below still frees what was created (the destructor walks plans_); an
  // entry without an algorithm is erased again on failure.
  Plan& p = plans_[key];
  try {
    check_cublas(cublas_api().cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    // Row-major y (T, N) is column-major yᵀ (N, T): yᵀ = W · xᵀ, where W row-major (N, K) is the
    // column-major (K, N) matrix A taken transposed and x row-major (T, K) the column-major (K, T) matrix B.
    const int32_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    check_cublas(cublas_api().cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)), "TRANSA");
    check_cublas(cublas_api().cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)), "TRANSB");
    check_cublas(cublas_api().cublasLtMatrixLayoutCreate(&p.a, type, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K),
          "layout of W");
    check_cublas(cublas_api().cublasLtMatrixLayoutCreate(&p.b, type, static_cast<uint64_t>(K), static_cast<uint64_t>(T), ldx),
          "layout of x");
    check_cublas(cublas_api().cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, static_cast<uint64_t>(N), static_cast<uint64_t>(T), ldy),
          "layout of y");

    cublasLtMatmulPreference_t pref = nullptr;
    check_cublas(cublas_api().cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    const uint64_t ws = workspace_bytes_;
    const uint32_t al[4] = {align_w, align_x, align_y, align_y};  // A, B, C, D
    const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    s = cublas_api().cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; ++i)
      s = cublas_api().cublasLtMatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof(al[i]));
    if (s == CUBLAS_STATUS_SUCCESS)
      s = cublas_api().cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublas_api().cublasLtMatmulPreferenceDestroy(pref);
    check_cublas(s, "cublasLtMatmulAlgoGetHeuristic");
    if (found < 1 || result.state != CUBLAS_STATUS_SUCCESS)
      fail("cuBLASLt has no algorithm for y ({}, {}) f32 {}= x ({}, {}) · Wᵀ in {} (ldx {}, ldy {}, alignments "
           "{}/{}/{} bytes)",
           T, N, accumulate ? "+" : "", T, K, dtype_name(static_cast<DType>(dt)), ldx, ldy, align_w, align_x,
           align_y);
    LP_CHECK(result.workspaceSize <= workspace_bytes_);
    p.algo = result.algo;
    p.workspace = result.workspaceSize;
  } catch (...) {
    if (p.a) cublas_api().cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublas_api().cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublas_api().cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublas_api().cublasLtMatmulDescDestroy(p.desc);
    plans_.erase(key);
    throw;
  }
  return p;
}

void Gemm::run(const void* x, int64_t ldx, const void* w, DType dtype, float* y, int64_t ldy, int64_t T,
               int64_t N, int64_t K, bool accumulate, cudaStream_t stream) {
  if (T == 0) return;
  LP_CHECK(T > 0 && N > 0 && K > 0 && ldx >= K && ldy >= N, "gemm: T {} N {} K {} ldx {} ldy {}", T, N, K, ldx,
           ldy);
  LP_CHECK(x != nullptr && w != nullptr && y != nullptr);
  // cuBLASLt takes the sizes as 64-bit but its kernels index rows and columns in 32 bits.
  LP_CHECK(T <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && ldx <= INT32_MAX && ldy <= INT32_MAX);
  const Key key{T,
                N,
                K,
                ldx,
                ldy,
                static_cast<int>(dtype),
                accumulate,
                alignment_of(w),
                alignment_of(x),
                alignment_of(y)};
  const Plan& p = plan_for(key);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check_cublas(cublas_api().cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                       p.workspace > 0 ? workspace_ : nullptr, p.workspace, stream),
        "cublasLtMatmul");
  check_cuda(cudaGetLastError(), "cublasLtMatmul launch");
}

}  // namespace lp::cuda
