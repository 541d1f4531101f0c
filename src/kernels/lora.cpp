#include "kernels/lora.h"

#include <algorithm>

#include "core/check.h"
#include "kernels/dispatch.h"
#include "kernels/lora_internal.h"

namespace lp::kernels {

void lora_plan_build(std::span<const int32_t> slot, LoraPlan& plan, bool merge) {
  plan.rows.clear();
  plan.groups.clear();
  const int32_t T = static_cast<int32_t>(slot.size());
  // 1. Runs of >= kSgmvMinRun equal slots are groups of their own, read in place.
  std::vector<int32_t> loose;  // tokens in short runs
  for (int32_t t = 0; t < T;) {
    int32_t e = t + 1;
    while (e < T && slot[e] == slot[t]) ++e;
    if (slot[t] >= 0) {
      if (merge && e - t >= kSgmvMinRun) {
        LoraGroup g{slot[t], static_cast<int32_t>(plan.rows.size()), e - t, true};
        for (int32_t i = t; i < e; ++i) plan.rows.push_back(i);
        plan.groups.push_back(g);
      } else {
        for (int32_t i = t; i < e; ++i) loose.push_back(i);
      }
    }
    t = e;
  }
  if (!merge) {
    for (int32_t t : loose) {
      plan.groups.push_back(LoraGroup{slot[t], static_cast<int32_t>(plan.rows.size()), 1, true});
      plan.rows.push_back(t);
    }
    return;
  }
  // 2. Loose tokens grouped by slot (stable: rows ascending within a group).
  std::stable_sort(loose.begin(), loose.end(), [&](int32_t a, int32_t b) { return slot[a] < slot[b]; });
  for (size_t i = 0; i < loose.size();) {
    size_t j = i + 1;
    while (j < loose.size() && slot[loose[j]] == slot[loose[i]]) ++j;
    LoraGroup g{slot[loose[i]], static_cast<int32_t>(plan.rows.size()), static_cast<int32_t>(j - i), false};
    g.contiguous = loose[j - 1] - loose[i] == static_cast<int32_t>(j - i - 1);
    for (size_t k = i; k < j; ++k) plan.rows.push_back(loose[k]);
    plan.groups.push_back(g);
    i = j;
  }
}

namespace detail {

void lora_apply_with(const IsaKernels& k, ComputePool& pool, const LoraPlan& plan, const float* x,
                     int64_t ldx, const LoraWeights& w, float* y, int64_t ldy, LoraScratch& s) {
  if (plan.empty()) return;
  LP_CHECK(w.a && w.b && w.ranks && w.max_rank > 0 && w.in > 0 && w.out > 0, "lora: bad weights");
  const int64_t R = static_cast<int64_t>(plan.rows.size());
  const int64_t in = w.in, out = w.out, mr = w.max_rank;
  const size_t esz = dtype_size(w.dtype);
  const bool bf16x = k.wants_bf16_x(w.dtype);
  const int64_t ldxb = (in + 31) / 32 * 32, ldvb = (mr + 31) / 32 * 32;

  // Active groups (slot has this module) and where each group's x rows live.
  struct Work {
    const LoraGroup* g;
    int rank;
    const float* x;  // (count, in) stride ldx_g
    int64_t ldx_g;
  };
  std::vector<Work> work;
  work.reserve(plan.groups.size());
  int64_t gathered = 0;
  for (const LoraGroup& g : plan.groups) {
    LP_CHECK(g.slot >= 0 && g.slot < w.max_loras, "lora: slot {} out of range", g.slot);
    int r = w.ranks[g.slot];
    LP_CHECK(r >= 0 && r <= w.max_rank, "lora: rank {} > max_rank {}", r, w.max_rank);
    if (r == 0) continue;
    if (!g.contiguous) gathered += g.count;
    work.push_back({&g, r, nullptr, 0});
  }
  if (work.empty()) return;
  if (s.xg.size() < static_cast<size_t>(gathered * in)) s.xg.resize(gathered * in);
  if (s.v.size() < static_cast<size_t>(R * mr)) s.v.resize(R * mr);
  if (s.yg.size() < static_cast<size_t>(gathered * out)) s.yg.resize(gathered * out);
  if (bf16x) {
    if (s.xb.size() < static_cast<size_t>(R * ldxb)) s.xb.resize(R * ldxb);
    if (s.vb.size() < static_cast<size_t>(R * ldvb)) s.vb.resize(R * ldvb);
  }
  int64_t goff = 0;
  for (Work& wk : work) {
    const LoraGroup& g = *wk.g;
    if (g.contiguous) {
      wk.x = x + plan.rows[g.first] * ldx;
      wk.ldx_g = ldx;
    } else {
      float* dst = s.xg.data() + goff * in;
      for (int32_t i = 0; i < g.count; ++i) std::copy_n(x + plan.rows[g.first + i] * ldx, in, dst + i * in);
      wk.x = dst;
      wk.ldx_g = in;
      goff += g.count;
    }
    if (bf16x) k.convert_x_bf16(wk.x, g.count, wk.ldx_g, in, s.xb.data() + g.first * ldxb, ldxb);
  }

  // Shrink: work items (group, chunk of rank rows); v rows are the plan's row indices.
  const int64_t grain = std::max(1, k.row_grain);
  std::vector<std::pair<int32_t, int32_t>> items;  // (work index, first rank row)
  for (size_t i = 0; i < work.size(); ++i)
    for (int r0 = 0; r0 < work[i].rank; r0 += static_cast<int>(grain))
      items.emplace_back(static_cast<int32_t>(i), r0);
  auto shrink_item = [&](const std::pair<int32_t, int32_t>& it) {
    const Work& wk = work[it.first];
    const LoraGroup& g = *wk.g;
    MatmulArgs a;
    a.x = wk.x;
    a.ldx = wk.ldx_g;
    a.xb = bf16x ? s.xb.data() + g.first * ldxb : nullptr;
    a.ldxb = ldxb;
    a.T = g.count;
    a.W = MatView{static_cast<const char*>(w.a) + static_cast<int64_t>(g.slot) * mr * in * esz, w.dtype,
                  wk.rank, in, in};
    a.y = s.v.data() + g.first * mr;
    a.ldy = mr;
    k.matmul_rows(a, it.second, std::min<int64_t>(it.second + grain, wk.rank));
  };
  pool.parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) shrink_item(items[i]);
  });

  // Expand: work items (group, chunk of output rows); gathered groups write yg, then scatter-add.
  if (bf16x)
    for (const Work& wk : work)
      k.convert_x_bf16(s.v.data() + wk.g->first * mr, wk.g->count, mr, wk.rank,
                       s.vb.data() + wk.g->first * ldvb, ldvb);
  const int64_t ochunk = std::max<int64_t>(grain, 64 / grain * grain);
  items.clear();
  std::vector<int64_t> yg_off(work.size());
  int64_t yoff = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    yg_off[i] = yoff;
    if (!work[i].g->contiguous) yoff += work[i].g->count;
    for (int64_t n0 = 0; n0 < out; n0 += ochunk)
      items.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(n0));
  }
  auto expand_item = [&](const std::pair<int32_t, int32_t>& it) {
    const Work& wk = work[it.first];
    const LoraGroup& g = *wk.g;
    int64_t n0 = it.second, n1 = std::min<int64_t>(n0 + ochunk, out);
    MatmulArgs a;
    a.x = s.v.data() + g.first * mr;
    a.ldx = mr;
    a.xb = bf16x ? s.vb.data() + g.first * ldvb : nullptr;
    a.ldxb = ldvb;
    a.T = g.count;
    a.W = MatView{static_cast<const char*>(w.b) + static_cast<int64_t>(g.slot) * out * mr * esz, w.dtype, out,
                  wk.rank, mr};
    if (g.contiguous) {
      a.y = y + plan.rows[g.first] * ldy;
      a.ldy = ldy;
      a.accumulate = true;
      k.matmul_rows(a, n0, n1);
      return;
    }
    float* yg = s.yg.data() + yg_off[it.first] * out;
    a.y = yg;
    a.ldy = out;
    a.accumulate = false;
    k.matmul_rows(a, n0, n1);
    for (int32_t i = 0; i < g.count; ++i) {
      float* dst = y + plan.rows[g.first + i] * ldy;
      const float* src = yg + i * out;
      for (int64_t n = n0; n < n1; ++n) dst[n] += src[n];
    }
  };
  pool.parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) expand_item(items[i]);
  });
}

}  // namespace detail

void lora_apply(ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx, const LoraWeights& w,
                float* y, int64_t ldy, LoraScratch& scratch) {
  detail::lora_apply_with(detail::active(), pool, plan, x, ldx, w, y, ldy, scratch);
}

}  // namespace lp::kernels
