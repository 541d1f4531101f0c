// cuBLAS and cuBLASLt, loaded on first use (dlopen) rather than linked: a binary built with the CUDA backend
// then neither needs those libraries to start nor maps them (half a gigabyte of library, hundreds of MB
// touched by the loader) unless a CUDA executor or probe actually runs. Call sites read the same names
// through the table: cublas_api().cublasLtMatmul(...).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include "core/dtype.h"

namespace lp::cuda {

#define LP_CUBLAS_FUNCTIONS(X)                                                                             \
  X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasSetStream_v2) X(cublasGetStatusName)     \
  X(cublasGetStatusString) X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetStatusName)                   \
  X(cublasLtGetStatusString) X(cublasLtMatmul) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmulDescCreate) \
  X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute) X(cublasLtMatmulPreferenceCreate)        \
  X(cublasLtMatmulPreferenceDestroy) X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatrixLayoutCreate)  \
  X(cublasLtMatrixLayoutDestroy)

struct CublasApi {
#define LP_CUBLAS_POINTER(name) decltype(&::name) name = nullptr;
  LP_CUBLAS_FUNCTIONS(LP_CUBLAS_POINTER)
#undef LP_CUBLAS_POINTER
  // Overloaded in C++ (an inline form takes the legacy compute type): the library's own signature.
  cublasStatus_t (*cublasGemmEx)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                 const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                                 cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

// cuBLAS's name of a weight / activation element type (F32, F16, BF16).
cudaDataType_t cuda_data_type(DType t);

// Throws lp::Error naming `what` and the status if `s` is not CUBLAS_STATUS_SUCCESS.
void check_cublas(cublasStatus_t s, const char* what);

// The table, loaded once (thread-safe). Throws lp::Error naming the library and the loader's reason when
// libcublas / libcublasLt (the toolkit's major version) cannot be loaded or lacks a function.
const CublasApi& cublas_api();

}  // namespace lp::cuda
