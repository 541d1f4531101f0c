// Multi-adapter LoRA on the GPU (cuda/kernels.h; kernels/lora.h's semantics): the shrink and the expand of up
// to kMaxLoraTargets projections, each ONE launch for every adapter of the step, driven by the step's plan
// (cuda/step_types.h). No atomics: every output element has one writer, and every sum has a fixed order, so
// a token's result is bit-identical whatever else is in the batch.
//
// Shrink: a block per (tile, target, chunk of 8 rank rows). A tile is <= 16 entries of one slot; the block
// stages their x rows in shared memory 256 columns at a time, and warp w computes rank row j = 8 * chunk + w
// for all of them, reading A[slot][j] once: lane l sums k = l, l + 32, l + 64, ... (fma, ascending), then a
// butterfly over the lanes. That order depends only on `in`, never on the tile's other rows.
// Expand: a thread per (token, output column, target) adds the token's entries in stack order, each as
// y = fma(scale, sum_j Bt[j][n] * v[j], y) with j ascending.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/dev_common.cuh"
#include "cuda/kernels.h"

namespace lp::cuda {

namespace {

constexpr int kShrinkWarps = 8;  // rank rows per block
constexpr int kShrinkThreads = kShrinkWarps * 32;
constexpr int kShrinkCols = 256;  // x columns staged per step (a multiple of 32: keeps each lane's k sequence)
constexpr int kExpandThreads = 256;
static_assert(kShrinkCols % 32 == 0);
static_assert(kLoraTileRows <= 32, "the zero fill gives each lane one entry");

struct ShrinkArgs {
  LoraTargetDev t[kMaxLoraTargets];
  const int32_t* entry_row;
  const LoraTileDev* tiles;
  int32_t n_entries;
  const void* x;
  DType x_dtype;
  int64_t ldx;
  int64_t in;
  int max_rank;
  float* v;  // (n_targets, n_entries, max_rank)
};

template <DType WD>
__global__ void __launch_bounds__(kShrinkThreads) lora_shrink_kernel(ShrinkArgs a) {
  __shared__ float xs[kLoraTileRows][kShrinkCols];
  __shared__ int64_t rows[kLoraTileRows];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LoraTileDev tile = a.tiles[blockIdx.x];
  // The target by constant indices (a run-time index into a kernel parameter array can cost a local copy).
  const unsigned ti = blockIdx.y;
  const LoraTargetDev tg = ti == 0 ? a.t[0] : (ti == 1 ? a.t[1] : a.t[2]);
  // 1..kLoraTileRows by build_lora_plan's construction; clamped so a bad plan cannot write past xs / rows.
  const int count = min(tile.count, kLoraTileRows);
  const int rank = min(tg.ranks[tile.slot], a.max_rank);
  const int j0 = static_cast<int>(blockIdx.z) * kShrinkWarps;
  const int j = j0 + warp;
  float* v = a.v + static_cast<int64_t>(ti) * a.n_entries * a.max_rank;
  auto v_at = [&](int e, int jj) -> float& { return v[static_cast<int64_t>(tile.first + e) * a.max_rank + jj]; };

  // Rank rows at or above the slot's rank are 0 (and cost no reads); a block wholly above it stops here.
  if (j >= rank && j < a.max_rank && lane < count) v_at(lane, j) = 0.f;
  if (j0 >= rank) return;  // uniform for the block

  if (tid < count) rows[tid] = a.entry_row[tile.first + tid];
  const bool active = j < rank;  // uniform for the warp
  const int64_t a_row = (static_cast<int64_t>(tile.slot) * a.max_rank + (active ? j : 0)) * a.in;
  float acc[kLoraTileRows];
#pragma unroll
  for (int e = 0; e < kLoraTileRows; ++e) acc[e] = 0.f;

  for (int64_t k0 = 0; k0 < a.in; k0 += kShrinkCols) {
    const int kn = static_cast<int>(min(static_cast<int64_t>(kShrinkCols), a.in - k0));
    __syncthreads();  // rows[] written; the previous chunk's readers of xs are done
    for (int i = tid; i < count * kShrinkCols; i += kShrinkThreads) {
      const int e = i / kShrinkCols, kk = i - e * kShrinkCols;
      xs[e][kk] = kk < kn ? dev::load_any(a.x, rows[e] * a.ldx + k0 + kk, a.x_dtype) : 0.f;
    }
    __syncthreads();
    if (active) {
      for (int kk = lane; kk < kn; kk += 32) {
        const float w = dev::load<WD>(tg.a, a_row + k0 + kk);
#pragma unroll
        for (int e = 0; e < kLoraTileRows; ++e)
          if (e < count) acc[e] = fmaf(w, xs[e][kk], acc[e]);
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int e = 0; e < kLoraTileRows; ++e) {
    if (e < count) {  // uniform for the warp
      const float s = dev::warp_sum(acc[e]);
      if (lane == 0) v_at(e, j) = s;
    }
  }
}

struct ExpandArgs {
  LoraTargetDev t[kMaxLoraTargets];
  const int32_t* entry_slot;
  const float* entry_scale;
  const int32_t* token_row;
  const int32_t* token_begin;
  const int32_t* token_entry;
  int32_t n_entries;
  int max_rank;
  const float* v;
};

template <DType WD>
__global__ void __launch_bounds__(kExpandThreads) lora_expand_kernel(ExpandArgs a) {
  const unsigned ti = blockIdx.z;
  const LoraTargetDev tg = ti == 0 ? a.t[0] : (ti == 1 ? a.t[1] : a.t[2]);
  const int64_t n = static_cast<int64_t>(blockIdx.y) * kExpandThreads + threadIdx.x;
  if (n >= tg.out) return;
  const int tok = static_cast<int>(blockIdx.x);
  float* yp = tg.y + static_cast<int64_t>(a.token_row[tok]) * tg.ldy + n;
  float y = *yp;
  const int q1 = a.token_begin[tok + 1];
  for (int q = a.token_begin[tok]; q < q1; ++q) {  // the token's entries in stack order
    const int e = a.token_entry[q];
    const int s = a.entry_slot[e];
    const int rank = min(tg.ranks[s], a.max_rank);
    if (rank <= 0) continue;  // this slot does not adapt this target
    const float* ve = a.v + (static_cast<int64_t>(ti) * a.n_entries + e) * a.max_rank;
    const int64_t b0 = static_cast<int64_t>(s) * a.max_rank * tg.out + n;
    float acc = 0.f;
    for (int jj = 0; jj < rank; ++jj) acc = fmaf(dev::load<WD>(tg.b, b0 + jj * tg.out), ve[jj], acc);
    y = fmaf(a.entry_scale[e], acc, y);
  }
  *yp = y;
}

bool valid_dtype(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

// The checks both calls share; returns the largest `out` of the targets.
int64_t check_targets(std::span<const LoraTargetDev> targets, int max_rank, DType w_dtype, bool need_y,
                      const char* what) {
  LP_CHECK(!targets.empty() && targets.size() <= static_cast<size_t>(kMaxLoraTargets), "{}: {} targets (1..{})",
           what, targets.size(), kMaxLoraTargets);
  LP_CHECK(max_rank > 0 && valid_dtype(w_dtype), "{}: max_rank {}", what, max_rank);
  int64_t out_max = 0;
  for (const LoraTargetDev& t : targets) {
    LP_CHECK(t.a && t.b && t.ranks && t.out > 0, "{}: target without weights, ranks or outputs", what);
    LP_CHECK(!need_y || (t.y && t.ldy >= t.out), "{}: target y {} ldy {} out {}", what,
             static_cast<const void*>(t.y), t.ldy, t.out);
    out_max = std::max(out_max, t.out);
  }
  return out_max;
}

void check_plan(const LoraPlanDev& plan, const char* what) {
  LP_CHECK(plan.n_tiles > 0 && plan.n_tiles <= plan.n_entries, "{}: {} tiles for {} entries", what, plan.n_tiles,
           plan.n_entries);
  LP_CHECK(plan.entry_row && plan.entry_slot && plan.entry_scale && plan.tiles, "{}: plan without entries", what);
  LP_CHECK(plan.n_tokens > 0 && plan.token_row && plan.token_begin && plan.token_entry,
           "{}: plan without token lists", what);
}

}  // namespace

void lora_shrink(const LoraPlanDev& plan, const void* x, DType x_dtype, int64_t ldx, int64_t in,
                 std::span<const LoraTargetDev> targets, DType w_dtype, int max_rank, float* v,
                 cudaStream_t stream) {
  LP_CHECK(plan.n_entries >= 0, "cuda::lora_shrink: {} entries", plan.n_entries);
  if (plan.n_entries == 0) return;
  check_targets(targets, max_rank, w_dtype, false, "cuda::lora_shrink");
  check_plan(plan, "cuda::lora_shrink");
  LP_CHECK(x && v && in > 0 && ldx >= in && valid_dtype(x_dtype), "cuda::lora_shrink: x {} in {} ldx {}", x, in,
           ldx);
  ShrinkArgs args{};
  for (size_t i = 0; i < targets.size(); ++i) args.t[i] = targets[i];
  args.entry_row = plan.entry_row;
  args.tiles = plan.tiles;
  args.n_entries = plan.n_entries;
  args.x = x;
  args.x_dtype = x_dtype;
  args.ldx = ldx;
  args.in = in;
  args.max_rank = max_rank;
  args.v = v;
  const dim3 grid(static_cast<unsigned>(plan.n_tiles), static_cast<unsigned>(targets.size()),
                  static_cast<unsigned>((max_rank + kShrinkWarps - 1) / kShrinkWarps));
  LP_CHECK(grid.z <= 65535, "cuda::lora_shrink: max_rank {}", max_rank);
  visit_dtype(w_dtype, [&](auto wd) {
    lora_shrink_kernel<decltype(wd)::value><<<grid, kShrinkThreads, 0, stream>>>(args);
  });
  check_launch("cuda::lora_shrink");
}

void lora_expand(const LoraPlanDev& plan, std::span<const LoraTargetDev> targets, DType w_dtype, int max_rank,
                 const float* v, cudaStream_t stream) {
  LP_CHECK(plan.n_entries >= 0, "cuda::lora_expand: {} entries", plan.n_entries);
  if (plan.n_entries == 0) return;
  const int64_t out_max = check_targets(targets, max_rank, w_dtype, true, "cuda::lora_expand");
  check_plan(plan, "cuda::lora_expand");
  LP_CHECK(v, "cuda::lora_expand: null v");
  ExpandArgs args{};
  for (size_t i = 0; i < targets.size(); ++i) args.t[i] = targets[i];
  args.entry_slot = plan.entry_slot;
  args.entry_scale = plan.entry_scale;
  args.token_row = plan.token_row;
  args.token_begin = plan.token_begin;
  args.token_entry = plan.token_entry;
  args.n_entries = plan.n_entries;
  args.max_rank = max_rank;
  args.v = v;
  const int64_t col_blocks = (out_max + kExpandThreads - 1) / kExpandThreads;
  LP_CHECK(col_blocks <= 65535, "cuda::lora_expand: {} outputs", out_max);
  const dim3 grid(static_cast<unsigned>(plan.n_tokens), static_cast<unsigned>(col_blocks),
                  static_cast<unsigned>(targets.size()));
  visit_dtype(w_dtype, [&](auto wd) {
    lora_expand_kernel<decltype(wd)::value><<<grid, kExpandThreads, 0, stream>>>(args);
  });
  check_launch("cuda::lora_expand");
}

}  // namespace lp::cuda
