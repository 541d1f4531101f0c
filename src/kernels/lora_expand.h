// Internal to kernels/: the LoRA expand over a transposed B, per ISA.
//   for t < T, n in [n0, n1):  acc = 0;  for j < rank: acc = fma(v[t][j], bt[j][n], acc)
//                              y[rows[t]][n] = fma(scale[t], acc, y[rows[t]][n])
//   rows names each token's row of y, so gathered tokens are written in place. scale is the request's
//   multiplier of that adapter (null: 1); fma(1, acc, y) rounds exactly like y + acc, so an unscaled token
//   gets the bits it got before per-request scales existed.
// bt: (rank, out) rows of length `out` (a slot's Bᵀ, scale folded), in its dtype; v: (T, ldv) f32.
// Vectorized over n (no horizontal sums), so a rank-16 expand costs 16 FMAs per 16 outputs. Every ISA does the
// same fused multiply-adds in the same order, so the result does not depend on the batch or the split.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace lp::kernels::detail {

struct ExpandArgs {
  float* y_row(int64_t t) const { return y + rows[t] * ldy; }
  float scale_of(int64_t t) const { return scale ? scale[t] : 1.f; }

  const float* v = nullptr;  // (T, ldv)
  int64_t ldv = 0;
  int64_t T = 0;
  int rank = 0;
  const void* bt = nullptr;  // (rank, out)
  DType dtype = DType::kF32;
  int64_t out = 0;
  float* y = nullptr;  // rows of length >= n1, stride ldy
  int64_t ldy = 0;
  const int32_t* rows = nullptr;  // (T) row of y for each token
  const float* scale = nullptr;   // (T) multiplier of each token's term; null = all 1
};

void lora_expand_scalar(const ExpandArgs& a, int64_t n0, int64_t n1);
void lora_expand_avx2(const ExpandArgs& a, int64_t n0, int64_t n1);
void lora_expand_avx512(const ExpandArgs& a, int64_t n0, int64_t n1);

}  // namespace lp::kernels::detail
