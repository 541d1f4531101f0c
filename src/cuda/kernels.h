// The CUDA kernels of the forward pass (launch wrappers; the kernels are in the .cu files beside this).
// Each function's semantics is its CPU twin's in kernels/kernels.h or kernels/lora.h, which the GPU tests
// compare against the scalar references of kernels/reference.h over awkward shapes. All pointers are device
// pointers unless a parameter says "host"; every launch goes on `stream` and returns without waiting.
// Element types: weights and the KV cache in their dtype (F32, BF16, F16); the residual stream, q/k/v and
// the projections' outputs in f32; the inputs of a GEMM ("act") in the weights' dtype, so cuBLASLt reads them
// directly (the CPU rounds a BF16 matmul's input to BF16 the same way).
#pragma once

#include <cstdint>
#include <span>

#include <cuda_runtime_api.h>

#include "core/dtype.h"
#include "cuda/check.h"
#include "cuda/step_types.h"

namespace lp::cuda {

// out[t][:] = float(table[ids[t]][:])       table: (vocab, D) in table_dtype; out: (T, D) f32
void embed(const void* table, DType table_dtype, int64_t D, const int32_t* ids, int64_t T, float* out,
           cudaStream_t stream);

// y[r][i] = x[row(r)][i] / sqrt(mean_i(x[row(r)][i]^2) + eps) * w[i]   for r < R
//   row(r) = rows[r] when rows != nullptr (the final norm of the rows that want logits), else r.
//   x: f32 (., D); w: (D) in w_dtype; y: (R, D) in y_dtype (F32, BF16, F16; rounded once, to nearest even).
void rmsnorm(const float* x, const int32_t* rows, int64_t R, int64_t D, const void* w, DType w_dtype, float eps,
             void* y, DType y_dtype, cudaStream_t stream);

// y[t][n] += bias[n]     y: (T, N) f32 with row stride ldy; bias (N) f32
void add_bias(float* y, int64_t T, int64_t N, int64_t ldy, const float* bias, cudaStream_t stream);

// Rotary embedding in place, kernels::rope's convention ("rotate half"); x: (T, n_heads, head_dim) f32,
// pos (T), cos_tab / sin_tab: (max_pos, head_dim / 2) f32 (the CPU model's tables, uploaded).
void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab, cudaStream_t stream);

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i], written in out_dtype      gate, up: (n) f32
void silu_mul(const float* gate, const float* up, void* out, DType out_dtype, int64_t n, cudaStream_t stream);

// One layer's paged KV cache, kernels::PagedKV's layout: k[block][kv_head][slot_in_block][head_dim].
struct PagedKvDev {
  void* k = nullptr;
  void* v = nullptr;
  DType dtype = DType::kBF16;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
};

// kernels::kv_write: token t's key and value (n_kv_heads, head_dim) f32 go to cache slot slot[t]
// (block * block_size + offset), rounded to the cache dtype (nearest even).
void kv_write(const PagedKvDev& cache, const float* k_new, const float* v_new, const int32_t* slot, int64_t T,
              cudaStream_t stream);

// kernels::attention: causal GQA over the paged cache; query row q_begin + i sits at position
// ctx_len - q_len + i and attends to positions 0..that of its own sequence only (it reads only its own
// blocks). q: (T, n_heads, head_dim) f32; out: (T, n_heads, head_dim) in out_dtype. `seqs` and `seqs_host`
// hold the same entries (the host copy sizes the grid without a device round trip). Softmax in f32 (online,
// over key tiles of 32 from position 0). A row's result is bitwise independent of the rest of the batch, so
// a decode step gets the bits the same row gets in a prefill chunk. head_dim <= 256, n_heads / n_kv_heads
// <= 32; q_len <= ctx_len. Token ids, positions, slots and block tables are not range-checked on the
// device: the host that builds them checks them.
void attention(const PagedKvDev& cache, const float* q, std::span<const AttnSeqDev> seqs_host,
               const AttnSeqDev* seqs, const int32_t* block_tables, int n_heads, float scale, void* out,
               DType out_dtype, cudaStream_t stream);

// ---- Multi-adapter LoRA (kernels/lora.h's semantics) ----
//
// The plan of a step (cuda/step_types.h: built on the host from the same Batch fields as the CPU's, and
// uploaded once per step); LoraPlanDev holds the device copies of a HostLoraPlan's arrays.
struct LoraPlanDev {
  const int32_t* entry_row = nullptr;    // (n_entries) token row
  const int32_t* entry_slot = nullptr;   // (n_entries) slot (>= 0, < max_loras)
  const float* entry_scale = nullptr;    // (n_entries) the request's multiplier (never 0)
  const LoraTileDev* tiles = nullptr;    // (n_tiles)
  int32_t n_entries = 0;
  int32_t n_tiles = 0;
  // Per token with any entry, its entries in stack order (the expand adds them one after the other):
  const int32_t* token_row = nullptr;    // (n_tokens)
  const int32_t* token_begin = nullptr;  // (n_tokens + 1) into token_entry
  const int32_t* token_entry = nullptr;  // entry indices
  int32_t n_tokens = 0;
  int32_t max_stack = 0;                 // the longest stack (1 when no token stacks adapters)
};

// One (layer, module) of the device slot bank, kernels::LoraWeights' layout: A (max_loras, max_rank, in),
// Bt (max_loras, max_rank, out) in the slot dtype; ranks (max_loras) on the device, 0 = not adapted.
struct LoraTargetDev {
  const void* a = nullptr;
  const void* b = nullptr;
  const int32_t* ranks = nullptr;
  int64_t out = 0;
  float* y = nullptr;  // (T, out) f32, row stride ldy
  int64_t ldy = 0;
};

inline constexpr int kMaxLoraTargets = 3;  // q/k/v share one launch, gate/up another

// Shrink of up to kMaxLoraTargets projections sharing the input x, in ONE launch:
//   v[target][e][j] = sum_k A[slot(e)][j][k] * x[entry_row[e]][k]        j < ranks[slot(e)] (0 above it)
// x: (T, in) in x_dtype, row stride ldx; A in w_dtype; v: (n_targets, n_entries, max_rank) f32. Each v element
// is reduced in a fixed order that depends only on `in` (never on the tile or the batch).
void lora_shrink(const LoraPlanDev& plan, const void* x, DType x_dtype, int64_t ldx, int64_t in,
                 std::span<const LoraTargetDev> targets, DType w_dtype, int max_rank, float* v,
                 cudaStream_t stream);
// Expand, ONE launch for the same targets: for each token, for each of its entries e in stack order:
//   y[row][n] = fma(scale(e), sum_j Bt[slot(e)][j][n] * v[target][e][j], y[row][n])     j < ranks[slot(e)]
// (j ascending), so a token's result does not depend on the other tokens and no two threads write one element.
void lora_expand(const LoraPlanDev& plan, std::span<const LoraTargetDev> targets, DType w_dtype, int max_rank,
                 const float* v, cudaStream_t stream);

}  // namespace lp::cuda
