// Int4 checkpoints as people have them (AWQ GEMM; GPTQ v1 and gptq_v2), unpacked once at load into the
// kernels' kQ4 layout (kernels/kernels.h). The packed layouts, as AutoAWQ / AutoGPTQ write them and vLLM
// reads them, for W[n][k] = (q[n][k] - z[n][g]) * s[n][g] (n an output feature, k an input, g = k's group):
//   AWQ   qweight [in, out/8] I32:  nibble i (bits 4i..4i+3) of qweight[k][j] is q[8j + kAwqOrder[i]][k]
//         qzeros  [G, out/8]  I32:  nibble i of qzeros[g][j] is z[8j + kAwqOrder[i]][g]
//   GPTQ  qweight [in/8, out] I32:  nibble j of qweight[i][n] is q[n][8i + j]
//         qzeros  [G, out/8]  I32:  nibble j of qzeros[g][c] is z[8c + j][g] - 1 (v1) or z (gptq_v2)
//         g_idx   [in]        I32:  g of input k (optional; k / group_size when absent)
//   both  scales  [G, out]    F16:  s[n][g] = scales[g][n]
// with G = ceil(in / group_size), or 1 for group_size -1.
#pragma once

#include <cstdint>
#include <string>

#include "io/safetensors.h"
#include "kernels/quant.h"
#include "model/config.h"

namespace lp::model {

// AWQ's interleaving of 8 output columns in one int32 (nibble i holds column kAwqOrder[i]).
inline constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// The kQ4 group for a checkpoint's groups of `group_size` input columns (-1: the whole row) over `in`
// columns: group_size itself when it divides the padded row, else 64 (each 64-column block then carries
// its checkpoint group's scale and zero; same values, more scale bytes), or the padded row for -1.
int32_t kq4_group(int64_t in, int group_size);

// Reads projection `base` ("model.layers.3.self_attn.q_proj"), of `in` input and `out` output features, of
// an AWQ or GPTQ checkpoint (q.method set) and repacks it as kQ4. Every tensor's dtype and shape are checked
// against (in, out, q); a missing tensor, a wrong shape or dtype, a zero point outside 0..15, or a g_idx
// that mixes groups inside a 64-column block (desc_act's permutation) is an lp::Error naming the tensor.
// The file pages of qweight are given back afterwards (TensorSet::drop_resident).
kernels::QuantMatrix load_checkpoint_q4(const io::TensorSet& ts, const std::string& base, int64_t in,
                                        int64_t out, const CheckpointQuant& q);

}  // namespace lp::model
