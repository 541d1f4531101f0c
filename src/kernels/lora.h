// Multi-adapter LoRA kernels: add the low-rank term of many adapters to one batch in a single fused pass.
//
// Semantics (the scalar loop; kernels/lora_reference.cpp is exactly this):
//   each token t carries a stack of (slot s, scale m) pairs, in order: its first adapter (slot[t], scale[t])
//   and then the further ones given for it (LoraUse). For each pair with s >= 0, m != 0 and r = ranks[s] > 0:
//     v[j]     = sum_k A[s][j][k] * x[t][k]          for j < r        (shrink)
//     acc[n]   = sum_j Bt[s][j][n] * v[j]            for n < out      (expand; B stored transposed, the
//                                                                        adapter's own alpha/r folded into it)
//     y[t][n]  = fma(m, acc[n], y[t][n])             one term after the other, in stack order
//   tokens with no pair (base model only) are not touched and cost nothing. m is the request's multiplier of
//   the adapter; m = 1 gives exactly the bits of y + acc, and m = 0 drops the pair (the base output).
//
// The plan groups (token, adapter) pairs by slot. A run of >= kSgmvMinRun consecutive tokens with one slot
// (a prefill segment) is its own group and is read in place (SGMV); shorter runs (decode tokens) with the
// same slot are gathered into one group (BGMV), so each distinct adapter's A and B are streamed once per step
// however many tokens, and however many stack positions, use it. Each group is a small matmul done by the
// same row kernels as the base matmul, and each term is added in the token's stack order, so results are
// batch invariant: a token gets bit-identical output whatever else is in the batch.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/dtype.h"
#include "core/thread_pool.h"

namespace lp::kernels {

// One (layer, target module) of the slot bank, all slots stacked, zero-padded to max_rank:
//   A: (max_loras, max_rank, in)    Bt: (max_loras, max_rank, out)    ranks: (max_loras), 0 = not targeted
// B is stored transposed (PEFT's lora_B is (out, r)) so the expand is vectorized over the outputs.
struct LoraWeights {
  const void* a = nullptr;
  const void* b = nullptr;
  DType dtype = DType::kF32;
  int max_loras = 0;
  int max_rank = 0;
  int64_t in = 0;
  int64_t out = 0;
  const int32_t* ranks = nullptr;
};

inline constexpr int kSgmvMinRun = 8;

// A further adapter of token `row`'s stack, after its first one (slot_of_token[row]); a token's further
// adapters are taken in the order they are listed.
struct LoraUse {
  int32_t row = 0;
  int32_t slot = -1;
  float scale = 1.f;
};

struct LoraGroup {
  int32_t slot = -1;
  int32_t first = 0;      // index of the group's first entry in LoraPlan::rows
  int32_t count = 0;      // number of (token, adapter) entries
  bool contiguous = false;  // rows[first], rows[first] + 1, ... (x read in place)
};

// A stretch of one group's entries that share a stack position (stacked plans only).
struct LoraRun {
  int32_t group = 0;
  int32_t first = 0;  // entry index, as LoraGroup::first
  int32_t count = 0;
};

// Which tokens use which slots; built once per forward step, used for every layer and module.
struct LoraPlan {
  std::vector<int32_t> rows;      // token row of each entry, group by group
  std::vector<float> scale;       // multiplier of each entry
  std::vector<LoraGroup> groups;
  // When some token has more than one adapter: every group's entries, stack position by stack position, the
  // order the expand adds them in. Empty otherwise (each row is in one group, so any order is the same).
  std::vector<LoraRun> order;
  bool empty() const { return groups.empty(); }
  bool stacked() const { return !order.empty(); }
};

// Builds the plan from one slot per token (-1 = none), each at scale 1. merge=false keeps every entry its
// own group (the "naive" per-token mode that benchmarks compare against).
void lora_plan_build(std::span<const int32_t> slot_of_token, LoraPlan& plan, bool merge = true);
// The general form: scale_of_token (empty = all 1) multiplies each token's first adapter; `more` adds
// further adapters to tokens' stacks. Pairs with scale 0 or slot -1 are left out.
void lora_plan_build(std::span<const int32_t> slot_of_token, std::span<const float> scale_of_token,
                     std::span<const LoraUse> more, LoraPlan& plan, bool merge = true);

// Scratch reused across calls (grown, never shrunk). One per caller thread.
struct LoraScratch {
  Buffer<float> xg;      // (rows, in) gathered x (f32 path only)
  Buffer<uint16_t> xb;   // (rows, ldxb) bf16 x
  Buffer<float> v;       // (rows, max_rank)
  // The per-call bookkeeping of lora_apply, kept so a call allocates nothing once warm.
  struct Work {
    int32_t t, g, rank;  // target, group, the slot's rank for that target
  };
  std::vector<Work> work;
  std::vector<std::pair<int32_t, int32_t>> items;  // (work index, first rank row or output column)
  std::vector<const float*> gx;                    // per group: its f32 x rows
  std::vector<int64_t> gld, v_base;                // per group: their stride; per target: its v offset
  std::vector<int32_t> work_of;                    // stacked plans: (target, group) -> work index, -1 none
};

// y (+)= the LoRA term for every token in the plan.   x: (T, w.in) stride ldx;  y: (T, w.out) stride ldy.
void lora_apply(ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx, const LoraWeights& w,
                float* y, int64_t ldy, LoraScratch& scratch);

// Several projections of the same input (q/k/v, or gate/up) in one pass: x is gathered and rounded once, and
// the shrinks of all targets share one parallel dispatch, the expands another.
struct LoraTarget {
  const LoraWeights* w;  // all targets share w->in and w->dtype
  float* y;              // (T, w->out) stride ldy
  int64_t ldy;
};
void lora_apply(ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx,
                std::span<const LoraTarget> targets, LoraScratch& scratch);

}  // namespace lp::kernels
