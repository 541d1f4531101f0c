// Device-side helpers shared by the kernels' .cu files: element loads and stores in the three dtypes (stores
// round to nearest even, as core/dtype.h's from_f32), warp reductions, and the host-side dtype dispatch that
// turns a run-time DType into a kernel template argument. Included only by .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/check.h"
#include "core/dtype.h"

namespace lp::cuda::dev {

inline constexpr unsigned kFullMask = 0xffffffffu;

// Element i of an array of dtype D, as float.
template <DType D>
__device__ __forceinline__ float load(const void* p, int64_t i) {
  if constexpr (D == DType::kF32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (D == DType::kBF16) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  } else {
    return __half2float(static_cast<const __half*>(p)[i]);
  }
}

// The same with the dtype known only at run time (one uniform branch; for loads off the hot loops).
__device__ __forceinline__ float load_any(const void* p, int64_t i, DType d) {
  switch (d) {
    case DType::kBF16: return load<DType::kBF16>(p, i);
    case DType::kF16: return load<DType::kF16>(p, i);
    case DType::kF32: break;
  }
  return load<DType::kF32>(p, i);
}

// p[i] = v rounded to dtype d (nearest even).
__device__ __forceinline__ void store_any(void* p, int64_t i, float v, DType d) {
  switch (d) {
    case DType::kBF16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      return;
    case DType::kF16:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      return;
    case DType::kF32:
      break;
  }
  static_cast<float*>(p)[i] = v;
}

// Butterfly reductions over the 32 lanes of a full warp: a fixed order, every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

// Blocks of a 1-D grid-stride launch over n elements with `threads` per block (capped: each thread then
// loops; the grid's x dimension allows 2^31 - 1 blocks, far more than the cap).
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

}  // namespace lp::cuda::dev
