// The compute kernels of the forward pass. Each function's semantics is the scalar loop in its comment;
// the optimized variants (AVX-512 with BF16 dot products where the CPU has them, AVX2+FMA otherwise,
// chosen once at run time) must match that loop within the stated tolerance, and kernels/reference.h
// holds the plain scalar twin of each, used by the tests.
//
// Batch invariance: every kernel computes each output element with the same sequence of floating-point
// operations whatever the number of tokens T in the call and whatever the other tokens are. So a sequence
// gets bit-identical results alone or inside any batch, and a decode step gets exactly what a prefill of the
// same tokens gets. The tests check this bit-exactly.
#pragma once

#include <cstdint>
#include <span>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace lp::kernels {

// How a weight matrix stores its elements (kernels/quant.h packs and describes the quantized ones).
//   kDense: elements of MatView::dtype.
//   kQ8:    W[r][c] = (int(u8[r][c]) - 128) * row_scale[r]            symmetric int8, one f32 scale per row
//   kQ4:    W[r][c] = (nib[r][c] - zero[r][g]) * f16 scale[r][g],     g = c / group, nib and zero in 0..15
// A quantized row is padded with zeros to row_stride = cols rounded up to 64; in kQ4 each 64 columns
// [c0, c0 + 64) take 32 bytes, byte j holding column c0 + j in its low nibble and c0 + 32 + j in its high
// nibble (so one 32-byte load unpacks into the 64 bytes vpdpbusd wants in column order).
enum class WeightFormat : uint8_t { kDense, kQ8, kQ4 };

// A row-major matrix: element (r, c) at data + (r * row_stride + c) * dtype_size when dense.
// nn.Linear weights are stored [out_features][in_features], so rows = out, cols = in.
struct MatView {
  const void* data = nullptr;
  DType dtype = DType::kF32;  // kDense: the element type; quantized: the dtype the weights came from
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // in elements (quantized: cols rounded up to 64)
  WeightFormat format = WeightFormat::kDense;
  int32_t group = 0;                      // kQ4: columns per scale group, a multiple of 64 dividing row_stride
  const float* row_scale = nullptr;       // kQ8: (rows)
  const uint16_t* group_scale = nullptr;  // kQ4: (rows, row_stride / group) f16
  const uint8_t* group_zero = nullptr;    // kQ4: (rows, row_stride / group), 0..15
};

// Bytes from one row of W to the next.
int64_t row_bytes(const MatView& W);
// Bytes a matmul reads from W: its rows, plus scales and zero points when quantized.
int64_t mat_bytes(const MatView& W);

// Which instruction set the dispatcher chose ("avx512bf16", "avx512", "avx2", "scalar").
const char* isa_name();
// Whether quantized weights (kQ8, kQ4) get the integer kernels (AVX512-VNNI) rather than the scalar
// reference, which is correct but ~100x slower.
bool fast_quantized_matmul();

// y[t][n] (+)= sum_k x[t][k] * W[n][k]  (+ bias[n])      for t < T, n < W.rows, k < W.cols
//   x: (T, W.cols) f32, row stride ldx;  y: (T, W.rows) f32, row stride ldy;  bias: (W.rows) f32 or null.
//   accumulate=false overwrites y, true adds to it.
// With BF16 weights on AVX-512-BF16, x is rounded to BF16 first (so the tolerance vs the f32 reference is
// ~ 2^-8 * sum_k |x_k w_k|). With quantized W (kQ8, kQ4), x is quantized to int8 per token and per block of
// act_block(W) columns first (kernels/quant.h, quantize_activations) and the products are integer:
//   y[t][n] = sum_b sx[t][b] * s(n, b) * sum_{k in b} (q[n][k] - z(n, b)) * xq[t][k]
// with s the row scale (kQ8, z = 128 on the stored u8) or the block's group scale (kQ4). W is read once per call for all T tokens (few tokens: bandwidth-bound GEMV;
// many tokens: register-tiled GEMM). Work is split over the pool by rows of W.
//
// `next`: the matrices the next matmul on this pool will read, if known (a hint, never read here). On the
// GEMV path each thread's weight stream then runs on into the rows it will likely take there, instead of
// draining at the end of its rows and restarting cold in the next call.
void matmul(ComputePool& pool, const float* x, int64_t T, int64_t ldx, const MatView& W, const float* bias,
            float* y, int64_t ldy, bool accumulate = false, std::span<const MatView> next = {});

// Several matmuls of the same x (q/k/v, gate/up) in ONE parallel dispatch: x is rounded once, and the rows
// of all outputs are split over the pool together. Each output gets exactly what matmul() gives it.
struct MatmulOut {
  MatView W;                    // all share W.cols
  const float* bias = nullptr;  // (W.rows) or null
  float* y = nullptr;           // (T, W.rows) stride ldy
  int64_t ldy = 0;
  bool accumulate = false;
};
void matmul_multi(ComputePool& pool, const float* x, int64_t T, int64_t ldx, std::span<const MatmulOut> outs,
                  std::span<const MatView> next = {});

// y[t][i] = x[t][i] / sqrt(mean_i(x[t][i]^2) + eps) * w[i]        x, y: (T, D) f32; w: (D) in w_dtype
// (y may alias x)
void rmsnorm(ComputePool& pool, const float* x, int64_t T, int64_t D, const void* w, DType w_dtype, float eps,
             float* y);

// Rotary embedding, Hugging Face "rotate half" convention, in place on x: (T, n_heads, head_dim) f32.
//   for i < head_dim/2:  c = cos_tab[pos[t]][i], s = sin_tab[pos[t]][i]
//     a = x[t][h][i], b = x[t][h][i + head_dim/2]
//     x[t][h][i] = a*c - b*s;   x[t][h][i + head_dim/2] = b*c + a*s
//   cos_tab/sin_tab: (max_pos, head_dim/2) f32, built by the model from inv_freq (llama3 scaling included).
void rope(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
          const float* sin_tab);

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i]     for i < n   (out may alias gate or up)
void silu_mul(ComputePool& pool, const float* gate, const float* up, float* out, int64_t n);

// y[i] += x[i]  for i < n
void add_inplace(float* y, const float* x, int64_t n);

// In-place numerically stable softmax over x[0..n).
void softmax(float* x, int64_t n);

// The scalar loop  best = 0; for i in [1, n): if (x[i] > x[best]) best = i;  i.e. the first index of the
// largest value (NaN never wins; -0 and +0 tie). n >= 1. Greedy decoding calls it on every logits row.
int64_t argmax(const float* x, int64_t n);

// out[t][:] = float(table[ids[t]][:])     table: (vocab, D) in its dtype; out: (T, D) f32
void embed(const MatView& table, const int32_t* ids, int64_t T, float* out);

// Paged KV cache of one layer, elements of `dtype` (F32, or BF16 / F16 to halve the bytes attention reads).
// Block b holds block_size consecutive token positions of one sequence:
//   k[b][h][s][d] is element ((b * n_kv_heads + h) * block_size + s) * head_dim + d of k   (v likewise)
struct PagedKV {
  void* k = nullptr;
  void* v = nullptr;
  int block_size = 16;
  int n_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF32;
};

// Writes the new tokens' keys and values into the cache, rounded to the cache's dtype (round to nearest
// even, as core/dtype.h's from_f32).
//   k_new, v_new: (T, n_kv_heads, head_dim);  slot[t] = block * block_size + offset where token t goes.
void kv_write(const PagedKV& cache, const float* k_new, const float* v_new, const int32_t* slot, int64_t T);

// One sequence's part of a flat batch, for attention.
struct AttnSeq {
  int32_t q_begin = 0;  // first row of this sequence's queries in q/out
  int32_t q_len = 0;    // number of new tokens (prefill chunk length, or 1 for decode)
  int32_t ctx_len = 0;  // tokens in the cache for this sequence, the new ones included (already written)
  const int32_t* block_table = nullptr;  // (ceil(ctx_len / block_size)) physical block ids
};

// Causal grouped-query attention over the paged cache. Query row r = q_begin + i of a sequence sits at
// position p = ctx_len - q_len + i and attends to positions 0..p of its own sequence only:
//   for each head h (kv head g = h / (n_heads / n_kv_heads)):
//     s[j] = scale * dot(q[r][h], float(K[j][g]))   for j <= p      (K[j] read through block_table)
//     a = softmax(s);   out[r][h] = sum_j a[j] * V[j][g]
// q, out: (T, n_heads, head_dim) f32. Work is split over (sequence, head, query block).
void attention(ComputePool& pool, const float* q, const PagedKV& cache, std::span<const AttnSeq> seqs,
               int n_heads, float scale, float* out);

// Reads `bytes` of memory with all pool threads, repeatedly and with two prefetch patterns, and returns the
// best read bandwidth in bytes per second (used by `loraplex bench` for the roofline).
double measure_read_bandwidth(ComputePool& pool, size_t bytes, int repeats);

}  // namespace lp::kernels
