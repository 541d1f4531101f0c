// The element-wise and row-wise kernels of the forward pass (cuda/kernels.h): embedding, RMSNorm, bias, RoPE,
// SiLU·mul and the paged KV write, plus the CUDA error checks every launch goes through. Each is memory-bound
// and simple: a grid-stride loop (or a block per row) with coalesced accesses; the arithmetic is f32.
#include <cuda_runtime.h>

#include "cuda/dev_common.cuh"
#include "cuda/kernels.h"

namespace lp::cuda {

namespace {

constexpr int kThreads = 256;

// ---- embed: out[t][i] = table[ids[t]][i]; one grid-stride loop over T * D ----
template <DType TD>
__global__ void embed_kernel(const void* table, int64_t D, const int32_t* ids, int64_t T, float* out) {
  const int64_t n = T * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, c = i - t * D;
    out[i] = dev::load<TD>(table, static_cast<int64_t>(ids[t]) * D + c);
  }
}

// ---- rmsnorm: a block per output row; f32 sum of squares, thread-strided then a fixed tree ----
template <DType WD>
__global__ void rmsnorm_kernel(const float* x, const int32_t* rows, int64_t D, const void* w, float eps, void* y,
                               DType y_dtype) {
  __shared__ float partial[32];
  __shared__ float inv_rms;
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? static_cast<int64_t>(rows[r]) : r) * D;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = dev::warp_sum(ss);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = static_cast<int>(blockDim.x >> 5);
    float s = lane < n_warps ? partial[lane] : 0.f;
    s = dev::warp_sum(s);
    if (lane == 0) inv_rms = 1.f / sqrtf(s / static_cast<float>(D) + eps);
  }
  __syncthreads();
  const float k = inv_rms;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    dev::store_any(y, r * D + i, xr[i] * k * dev::load<WD>(w, i), y_dtype);
}

// ---- add_bias ----
__global__ void add_bias_kernel(float* y, int64_t T, int64_t N, int64_t ldy, const float* bias) {
  const int64_t n = T * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / N, c = i - t * N;
    y[t * ldy + c] += bias[c];
  }
}

// ---- rope: a thread per (token, head, i < half) rotates the pair (i, i + half) ----
__global__ void rope_kernel(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos,
                            const float* cos_tab, const float* sin_tab) {
  const int half = head_dim / 2;
  const int64_t n = T * n_heads * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t th = i / half;  // token * n_heads + head
    const int d = static_cast<int>(i - th * half);
    const int64_t t = th / n_heads;
    const int64_t tab = static_cast<int64_t>(pos[t]) * half + d;
    const float c = cos_tab[tab], s = sin_tab[tab];
    float* v = x + th * head_dim;
    const float a = v[d], b = v[d + half];
    v[d] = a * c - b * s;
    v[d + half] = b * c + a * s;
  }
}

// ---- silu_mul ----
__global__ void silu_mul_kernel(const float* gate, const float* up, void* out, DType out_dtype, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    dev::store_any(out, i, g / (1.f + expf(-g)) * up[i], out_dtype);
  }
}

// ---- kv_write: a thread per (token, kv head, d) writes one key and one value element ----
__global__ void kv_write_kernel(void* k, void* v, DType dtype, int block_size, int n_kv_heads, int head_dim,
                                const float* k_new, const float* v_new, const int32_t* slot, int64_t T) {
  const int64_t row = static_cast<int64_t>(n_kv_heads) * head_dim;  // elements per token
  const int64_t n = T * row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / row, gd = i - t * row;
    const int64_t g = gd / head_dim, d = gd - g * head_dim;
    const int64_t b = slot[t] / block_size, s = slot[t] % block_size;
    const int64_t dst = ((b * n_kv_heads + g) * block_size + s) * head_dim + d;
    dev::store_any(k, dst, k_new[i], dtype);
    dev::store_any(v, dst, v_new[i], dtype);
  }
}

bool valid_dtype(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

}  // namespace

void embed(const void* table, DType table_dtype, int64_t D, const int32_t* ids, int64_t T, float* out,
           cudaStream_t stream) {
  LP_CHECK(T >= 0 && D > 0 && valid_dtype(table_dtype), "cuda::embed: T {} D {}", T, D);
  if (T == 0) return;
  LP_CHECK(table && ids && out, "cuda::embed: null pointer");
  const unsigned grid = dev::grid_for(T * D, kThreads);
  visit_dtype(table_dtype, [&](auto td) {
    embed_kernel<decltype(td)::value><<<grid, kThreads, 0, stream>>>(table, D, ids, T, out);
  });
  check_launch("cuda::embed");
}

void rmsnorm(const float* x, const int32_t* rows, int64_t R, int64_t D, const void* w, DType w_dtype, float eps,
             void* y, DType y_dtype, cudaStream_t stream) {
  LP_CHECK(R >= 0 && D > 0 && valid_dtype(w_dtype) && valid_dtype(y_dtype), "cuda::rmsnorm: R {} D {}", R, D);
  if (R == 0) return;
  LP_CHECK(x && w && y, "cuda::rmsnorm: null pointer");
  LP_CHECK(R <= 0x7fffffff, "cuda::rmsnorm: {} rows", R);
  visit_dtype(w_dtype, [&](auto wd) {
    rmsnorm_kernel<decltype(wd)::value>
        <<<static_cast<unsigned>(R), kThreads, 0, stream>>>(x, rows, D, w, eps, y, y_dtype);
  });
  check_launch("cuda::rmsnorm");
}

void add_bias(float* y, int64_t T, int64_t N, int64_t ldy, const float* bias, cudaStream_t stream) {
  LP_CHECK(T >= 0 && N > 0 && ldy >= N, "cuda::add_bias: T {} N {} ldy {}", T, N, ldy);
  if (T == 0) return;
  LP_CHECK(y && bias, "cuda::add_bias: null pointer");
  add_bias_kernel<<<dev::grid_for(T * N, kThreads), kThreads, 0, stream>>>(y, T, N, ldy, bias);
  check_launch("cuda::add_bias");
}

void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab, cudaStream_t stream) {
  LP_CHECK(T >= 0 && n_heads > 0 && head_dim > 0 && head_dim % 2 == 0, "cuda::rope: T {} heads {} head_dim {}", T, n_heads, head_dim);
  if (T == 0) return;
  LP_CHECK(x && pos && cos_tab && sin_tab, "cuda::rope: null pointer");
  const int64_t n = T * n_heads * (head_dim / 2);
  rope_kernel<<<dev::grid_for(n, kThreads), kThreads, 0, stream>>>(x, T, n_heads, head_dim, pos, cos_tab,
                                                                    sin_tab);
  check_launch("cuda::rope");
}

void silu_mul(const float* gate, const float* up, void* out, DType out_dtype, int64_t n, cudaStream_t stream) {
  LP_CHECK(n >= 0 && valid_dtype(out_dtype), "cuda::silu_mul: n {}", n);
  if (n == 0) return;
  LP_CHECK(gate && up && out, "cuda::silu_mul: null pointer");
  silu_mul_kernel<<<dev::grid_for(n, kThreads), kThreads, 0, stream>>>(gate, up, out, out_dtype, n);
  check_launch("cuda::silu_mul");
}

void kv_write(const PagedKvDev& cache, const float* k_new, const float* v_new, const int32_t* slot, int64_t T,
              cudaStream_t stream) {
  LP_CHECK(T >= 0 && cache.block_size > 0 && cache.n_kv_heads > 0 && cache.head_dim > 0 &&
               valid_dtype(cache.dtype),
           "cuda::kv_write: T {} block_size {} kv heads {} head_dim {}", T, cache.block_size,
           cache.n_kv_heads, cache.head_dim);
  if (T == 0) return;
  LP_CHECK(cache.k && cache.v && k_new && v_new && slot, "cuda::kv_write: null pointer");
  const int64_t n = T * cache.n_kv_heads * cache.head_dim;
  kv_write_kernel<<<dev::grid_for(n, kThreads), kThreads, 0, stream>>>(
      cache.k, cache.v, cache.dtype, cache.block_size, cache.n_kv_heads, cache.head_dim, k_new, v_new, slot, T);
  check_launch("cuda::kv_write");
}

}  // namespace lp::cuda
