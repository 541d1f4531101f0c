// Plain scalar twins of the kernels in kernels.h, written to be obviously right rather than fast: one loop
// per formula, double accumulation, no threading. The tests compare every optimized kernel against these,
// and the "scalar" ISA uses them directly. Cost: about 1 GFLOP/s; never use on a hot path.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace lp::kernels::ref {

// Element (r, c) of W as float.
float mat_at(const MatView& W, int64_t r, int64_t c);

// Dense W: a double dot product per element. Quantized W: x quantized (quantize_acts), then
// matmul_quant, so the semantics stated in kernels.h for matmul.
void matmul(const float* x, int64_t T, int64_t ldx, const MatView& W, const float* bias, float* y,
            int64_t ldy, bool accumulate);
// Tokens [t0, t1) of x (row stride ldx, K columns) quantized into q (see QuantActs in quant.h).
void quantize_acts(const float* x, int64_t t0, int64_t t1, int64_t ldx, int64_t K, const QuantActs& q);
// Rows [n0, n1) of y (all T tokens) for a quantized W from activations quantized for it: the exact integer
// dot of each block, scaled and summed in double.
void matmul_quant(const QuantActs& xa, int64_t T, const MatView& W, int64_t n0, int64_t n1, const float* bias,
                  float* y, int64_t ldy, bool accumulate);
void rmsnorm(const float* x, int64_t T, int64_t D, const void* w, DType w_dtype, float eps, float* y);
void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab);
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);
void softmax(float* x, int64_t n);
int64_t argmax(const float* x, int64_t n);
void embed(const MatView& table, const int32_t* ids, int64_t T, float* out);
void kv_write(const PagedKV& cache, const float* k_new, const float* v_new, const int32_t* slot, int64_t T);
// One query of one head: out = softmax(scale * q.K[j]) . V[j] over positions j < n_keys of kv head g.
void attention_query(const PagedKV& cache, const int32_t* block_table, int32_t n_keys, int g, float scale,
                     const float* q, float* out);
void attention(const float* q, const PagedKV& cache, std::span<const AttnSeq> seqs, int n_heads, float scale,
               float* out);

}  // namespace lp::kernels::ref
