#include "kernels/lora.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/dispatch.h"
#include "kernels/lora_expand.h"
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
      y[n] += acc;
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
  // 4. Expand, one parallel pass over (work, chunk of output columns): y[row] += Bᵀ[slot]ᵀ v[row], vectorized
  //    over the outputs (B is stored transposed in the slots) and added straight into each token's row, so
  //    gathered groups need no scatter step.
  const ExpandFn expand = expand_for(k);
  constexpr int64_t kColChunk = 256;
  s.items.clear();
  for (size_t i = 0; i < s.work.size(); ++i)
    for (int64_t n0 = 0; n0 < targets[s.work[i].t].w->out; n0 += kColChunk)
      s.items.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(n0));
  auto expand_item = [&](const std::pair<int32_t, int32_t>& it) {
    const LoraScratch::Work& wk = s.work[it.first];
    const LoraTarget& tg = targets[wk.t];
    const LoraWeights& w = *tg.w;
    const LoraGroup& g = plan.groups[wk.g];
    const int64_t mr = w.max_rank, out = w.out;
    ExpandArgs a;
    a.v = s.v.data() + s.v_base[wk.t] + g.first * mr;
    a.ldv = mr;
    a.T = g.count;
    a.rank = wk.rank;
    a.bt = static_cast<const char*>(w.b) + static_cast<int64_t>(g.slot) * mr * out * esz;
    a.dtype = w.dtype;
    a.out = out;
    a.y = tg.y;
    a.ldy = tg.ldy;
    a.rows = plan.rows.data() + g.first;
    expand(a, it.second, std::min<int64_t>(it.second + kColChunk, out));
  };
  pool.parallel_for(static_cast<int64_t>(s.items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) expand_item(s.items[i]);
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
