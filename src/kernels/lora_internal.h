// Internal to kernels/: the LoRA kernels on an explicit ISA table (tests run every supported ISA).
#pragma once

#include "kernels/dispatch.h"
#include "kernels/lora.h"

namespace lp::kernels::detail {

void lora_apply_with(const IsaKernels& k, ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx,
                     const LoraWeights& w, float* y, int64_t ldy, LoraScratch& scratch);
void lora_apply_with(const IsaKernels& k, ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx,
                     std::span<const LoraTarget> targets, LoraScratch& scratch);

}  // namespace lp::kernels::detail

namespace lp::kernels::ref {

// The semantics loop of lora.h, in double: y[t] += m B[s] (A[s] x[t]) for each (s, m) of t's stack.
void lora_apply(const float* x, int64_t T, int64_t ldx, const int32_t* slot, const LoraWeights& w, float* y,
                int64_t ldy);
// With per-token scales of the first adapter (null = 1) and further stacked adapters, added in stack order.
void lora_apply(const float* x, int64_t T, int64_t ldx, const int32_t* slot, const float* scale,
                std::span<const LoraUse> more, const LoraWeights& w, float* y, int64_t ldy);

}  // namespace lp::kernels::ref
