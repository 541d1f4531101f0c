#include "kernels/lora.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/dispatch.h"
#include "kernels/lora_expand.h"
#include "kernels/lora_internal.h"

namespace lp::kernels {

namespace {
struct Entry {
  int32_t row, slot, level;
  float scale;
};
}  // namespace

void lora_plan_build(std::span<const int32_t> slot, std::span<const float> scale, std::span<const LoraUse> more,
                     LoraPlan& plan, bool merge) {
  plan.rows.clear();
  plan.scale.clear();
  plan.groups.clear();
  plan.order.clear();
  const int32_t T = static_cast<int32_t>(slot.size());
  LP_CHECK(scale.empty() || static_cast<int32_t>(scale.size()) == T, "lora: {} scales for {} tokens", scale.size(), T);
  // 0. The (token, adapter) entries with their stack position, level by level, rows ascending in a level.
  std::vector<Entry> es;
  std::vector<int32_t> depth(T, 0);
  for (int32_t t = 0; t < T; ++t) {
    const float m = scale.empty() ? 1.f : scale[t];
    if (slot[t] >= 0 && m != 0.f) es.push_back({t, slot[t], depth[t]++, m});
  }
  int32_t levels = es.empty() ? 0 : 1;
  for (const LoraUse& u : more) {
    LP_CHECK(u.row >= 0 && u.row < T, "lora: stacked adapter on row {} of {}", u.row, T);
    if (u.slot < 0 || u.scale == 0.f) continue;
    es.push_back({u.row, u.slot, depth[u.row]++, u.scale});
    levels = std::max(levels, depth[u.row]);
  }
  if (levels > 1)
    std::stable_sort(es.begin(), es.end(), [](const Entry& a, const Entry& b) {
      return a.level != b.level ? a.level < b.level : a.row < b.row;
    });
  std::vector<int32_t> level_of;  // of each entry pushed
  auto push = [&](const Entry& e) {
    plan.rows.push_back(e.row);
    plan.scale.push_back(e.scale);
    level_of.push_back(e.level);
  };
  // 1. Runs of >= kSgmvMinRun entries of one level on consecutive rows with one slot are groups of their own,
  //    read in place.
  std::vector<Entry> loose;  // entries in short runs
  for (size_t i = 0; i < es.size();) {
    size_t j = i + 1;
    while (j < es.size() && es[j].level == es[i].level && es[j].slot == es[i].slot && es[j].row == es[j - 1].row + 1)
      ++j;
    if (merge && j - i >= static_cast<size_t>(kSgmvMinRun)) {
      plan.groups.push_back(LoraGroup{es[i].slot, static_cast<int32_t>(plan.rows.size()), static_cast<int32_t>(j - i), true});
      for (size_t k = i; k < j; ++k) push(es[k]);
    } else {
      loose.insert(loose.end(), es.begin() + static_cast<std::ptrdiff_t>(i), es.begin() + static_cast<std::ptrdiff_t>(j));
    }
    i = j;
  }
  if (!merge) {
    for (const Entry& e : loose) {
      plan.groups.push_back(LoraGroup{e.slot, static_cast<int32_t>(plan.rows.size()), 1, true});
      push(e);
    }
  } else {
    // 2. Loose entries grouped by slot (stable: by level, then rows ascending, within a group).
    std::stable_sort(loose.begin(), loose.end(), [](const Entry& a, const Entry& b) { return a.slot < b.slot; });
    for (size_t i = 0; i < loose.size();) {
      size_t j = i + 1;
      while (j < loose.size() && loose[j].slot == loose[i].slot) ++j;
      LoraGroup g{loose[i].slot, static_cast<int32_t>(plan.rows.size()), static_cast<int32_t>(j - i), true};
      for (size_t k = i; k < j; ++k) {
        g.contiguous &= k == i || loose[k].row == loose[k - 1].row + 1;
        push(loose[k]);
      }
      plan.groups.push_back(g);
      i = j;
    }
  }
  if (levels <= 1) return;
  // 3. Stacked: the expand order, every group's entries of level 0, then of level 1, ... (each group's entries
  //    are sorted by level, so each level is one stretch of it).
  for (int32_t L = 0; L < levels; ++L)
    for (size_t gi = 0; gi < plan.groups.size(); ++gi) {
      const LoraGroup& g = plan.groups[gi];
      int32_t b = g.first, e = g.first + g.count;
      while (b < e && level_of[b] < L) ++b;
      int32_t f = b;
      while (f < e && level_of[f] == L) ++f;
      if (f > b) plan.order.push_back(LoraRun{static_cast<int32_t>(gi), b, f - b});
    }
}

void lora_plan_build(std::span<const int32_t> slot, LoraPlan& plan, bool merge) {
  lora_plan_build(slot, {}, {}, plan, merge);
}

namespace detail {

void lora_expand_scalar(const ExpandArgs& a, int64_t n0, int64_t n1) {
  for (int64_t t = 0; t < a.T; ++t) {
    const float* v = a.v + t * a.ldv;
    float* y = a.y_row(t);
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.f;
      for (int j = 0; j < a.rank; ++j) {
        float b;
        to_f32(a.dtype, static_cast<const char*>(a.bt) + (j * a.out + n) * static_cast<int64_t>(dtype_size(a.dtype)), &b, 1);
        acc = std::fma(v[j], b, acc);
      }
      y[n] = std::fma(a.scale_of(t), acc, y[n]);
    }
  }
}

namespace {
using ExpandFn = void (*)(const ExpandArgs&, int64_t, int64_t);
ExpandFn expand_for(const IsaKernels& k) {
  switch (k.isa) {
    case Isa::kScalar: return lora_expand_scalar;
    case Isa::kAvx2: return lora_expand_avx2;
    case Isa::kAvx512:
    case Isa::kAvx512Bf16: return lora_expand_avx512;
  }
  return lora_expand_scalar;
}
}  // namespace

void lora_apply_with(const IsaKernels& k, ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx,
                     std::span<const LoraTarget> targets, LoraScratch& s) {
  if (plan.empty() || targets.empty()) return;
  const LoraWeights& w0 = *targets[0].w;
  const int64_t in = w0.in;
  const bool bf16x = k.wants_bf16_x(w0.dtype);
  for (const LoraTarget& t : targets) {
    LP_CHECK(t.w && t.w->a && t.w->b && t.w->ranks && t.w->max_rank > 0 && t.w->out > 0, "lora: bad weights");
    LP_CHECK(t.w->in == in && t.w->dtype == w0.dtype, "lora: targets must share the input and the dtype");
  }
  const int64_t R = static_cast<int64_t>(plan.rows.size());
  const int64_t ldxb = (in + 31) / 32 * 32;
  const size_t esz = dtype_size(w0.dtype);

  const size_t G = plan.groups.size();
  for (const LoraGroup& g : plan.groups)
    LP_CHECK(g.slot >= 0 && g.slot < w0.max_loras, "lora: slot {} out of range", g.slot);

  // 1. Work: every (target, group) whose slot adapts that target, and the target's v region.
  s.work.clear();
  s.v_base.resize(targets.size());
  int64_t v_total = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    const LoraWeights& w = *targets[t].w;
    s.v_base[t] = v_total;
    for (size_t gi = 0; gi < G; ++gi) {
      const int r = w.ranks[plan.groups[gi].slot];
      LP_CHECK(r >= 0 && r <= w.max_rank, "lora: rank {} > max_rank {}", r, w.max_rank);
      if (r > 0) s.work.push_back({static_cast<int32_t>(t), static_cast<int32_t>(gi), r});
    }
    v_total += R * w.max_rank;
  }
  if (s.work.empty()) return;
  if (s.v.size() < static_cast<size_t>(v_total)) s.v.resize(v_total);

  // 2. x of every group, once for all targets: rounded to bf16 straight from its rows (bf16 path), or, for
  //    the f32 kernels, read in place (contiguous groups) or gathered.
  s.gx.assign(G, nullptr);
  s.gld.assign(G, 0);
  if (bf16x) {
    if (s.xb.size() < static_cast<size_t>(R * ldxb)) s.xb.resize(R * ldxb);
    uint16_t* xb = s.xb.data();
    const int32_t* rows = plan.rows.data();
    pool.parallel_for(R, 64, [&](int64_t b, int64_t e) {  // per element: any split gives the same bits
      for (int64_t i = b; i < e;) {  // runs of consecutive token rows in one call
        int64_t j = i + 1;
        while (j < e && rows[j] == rows[j - 1] + 1) ++j;
        k.convert_x_bf16(x + rows[i] * ldx, j - i, ldx, in, xb + i * ldxb, ldxb);
        i = j;
      }
    });
  } else {
    int64_t gathered = 0;
    for (const LoraGroup& g : plan.groups)
      if (!g.contiguous) gathered += g.count;
    if (s.xg.size() < static_cast<size_t>(gathered * in)) s.xg.resize(gathered * in);
    for (size_t gi = 0, goff = 0; gi < G; ++gi) {
      const LoraGroup& g = plan.groups[gi];
      if (g.contiguous) {
        s.gx[gi] = x + plan.rows[g.first] * ldx;
        s.gld[gi] = ldx;
      } else {
        float* dst = s.xg.data() + goff * in;
        for (int32_t i = 0; i < g.count; ++i) std::copy_n(x + plan.rows[g.first + i] * ldx, in, dst + i * in);
        s.gx[gi] = dst;
        s.gld[gi] = in;
        goff += g.count;
      }
    }
  }

  // 3. Shrink, one parallel pass over (work, chunk of rank rows): v[t][row] = A[slot] x[row].
  const int64_t grain = k.row_grain;
  s.items.clear();
  for (size_t i = 0; i < s.work.size(); ++i)
    for (int r0 = 0; r0 < s.work[i].rank; r0 += static_cast<int>(grain)) s.items.emplace_back(static_cast<int32_t>(i), r0);
  auto shrink_item = [&](const std::pair<int32_t, int32_t>& it) {
    const LoraScratch::Work& wk = s.work[it.first];
    const LoraWeights& w = *targets[wk.t].w;
    const LoraGroup& g = plan.groups[wk.g];
    const int64_t mr = w.max_rank;
    MatmulArgs a;
    a.x = s.gx[wk.g];
    a.ldx = s.gld[wk.g];
    a.xb = bf16x ? s.xb.data() + g.first * ldxb : nullptr;
    a.ldxb = ldxb;
    a.T = g.count;
    a.W = MatView{static_cast<const char*>(w.a) + static_cast<int64_t>(g.slot) * mr * in * esz, w.dtype, wk.rank, in, in};
    a.y = s.v.data() + s.v_base[wk.t] + g.first * mr;
    a.ldy = mr;
    k.matmul_rows(a, it.second, std::min<int64_t>(it.second + grain, wk.rank));
  };
  pool.parallel_for(static_cast<int64_t>(s.items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) shrink_item(s.items[i]);
  });
  // 4. Expand: y[row] += scale * Bᵀ[slot]ᵀ v[row], vectorized over the outputs (B is stored transposed in the
  //    slots) and added straight into each token's row, so gathered groups need no scatter step.
  const ExpandFn expand = expand_for(k);
  constexpr int64_t kColChunk = 256;
  auto expand_range = [&](const LoraScratch::Work& wk, int32_t first, int32_t count, int64_t n0, int64_t n1) {
    const LoraTarget& tg = targets[wk.t];
    const LoraWeights& w = *tg.w;
    const LoraGroup& g = plan.groups[wk.g];
    const int64_t mr = w.max_rank, out = w.out;
    ExpandArgs a;
    a.v = s.v.data() + s.v_base[wk.t] + first * mr;
    a.ldv = mr;
    a.T = count;
    a.rank = wk.rank;
    a.bt = static_cast<const char*>(w.b) + static_cast<int64_t>(g.slot) * mr * out * esz;
    a.dtype = w.dtype;
    a.out = out;
    a.y = tg.y;
    a.ldy = tg.ldy;
    a.rows = plan.rows.data() + first;
    a.scale = plan.scale.data() + first;
    expand(a, n0, n1);
  };
  s.items.clear();
  if (!plan.stacked()) {
    // Every row is in one group: one parallel pass over (work, chunk of output columns).
    for (size_t i = 0; i < s.work.size(); ++i)
      for (int64_t n0 = 0; n0 < targets[s.work[i].t].w->out; n0 += kColChunk)
        s.items.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(n0));
    pool.parallel_for(static_cast<int64_t>(s.items.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const LoraScratch::Work& wk = s.work[s.items[i].first];
        const LoraGroup& g = plan.groups[wk.g];
        const int64_t n0 = s.items[i].second;
        expand_range(wk, g.first, g.count, n0, std::min<int64_t>(n0 + kColChunk, targets[wk.t].w->out));
      }
    });
    return;
  }
  // A row may be in several groups: one item per (target, chunk of output columns) adds every term of its
  // columns in the plan's order (stack position by stack position), so no two items write one element and
  // each token's terms are added in its stack order. A slot's Bᵀ columns, read again at the next stack
  // position, are still in this core's cache.
  s.work_of.assign(targets.size() * G, -1);
  for (size_t i = 0; i < s.work.size(); ++i) s.work_of[s.work[i].t * G + s.work[i].g] = static_cast<int32_t>(i);
  for (size_t t = 0; t < targets.size(); ++t)
    for (int64_t n0 = 0; n0 < targets[t].w->out; n0 += kColChunk)
      s.items.emplace_back(static_cast<int32_t>(t), static_cast<int32_t>(n0));
  pool.parallel_for(static_cast<int64_t>(s.items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const size_t t = static_cast<size_t>(s.items[i].first);
      const int64_t n0 = s.items[i].second, n1 = std::min<int64_t>(n0 + kColChunk, targets[t].w->out);
      for (const LoraRun& run : plan.order) {
        const int32_t wi = s.work_of[t * G + static_cast<size_t>(run.group)];
        if (wi >= 0) expand_range(s.work[wi], run.first, run.count, n0, n1);
      }
    }
  });
}

void lora_apply_with(const IsaKernels& k, ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx,
                     const LoraWeights& w, float* y, int64_t ldy, LoraScratch& scratch) {
  LoraTarget t{&w, y, ldy};
  lora_apply_with(k, pool, plan, x, ldx, std::span<const LoraTarget>(&t, 1), scratch);
}

}  // namespace detail

void lora_apply(ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx, const LoraWeights& w,
                float* y, int64_t ldy, LoraScratch& scratch) {
  detail::lora_apply_with(detail::active(), pool, plan, x, ldx, w, y, ldy, scratch);
}

void lora_apply(ComputePool& pool, const LoraPlan& plan, const float* x, int64_t ldx,
                std::span<const LoraTarget> targets, LoraScratch& scratch) {
  detail::lora_apply_with(detail::active(), pool, plan, x, ldx, targets, scratch);
}

}  // namespace lp::kernels
