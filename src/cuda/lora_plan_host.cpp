// build_lora_plan (cuda/step_types.h): the LoRA plan of one CUDA step, built on the host. The grouping is the
// CPU's (kernels::lora_plan_build): runs of >= kSgmvMinRun consecutive tokens of one slot at one stack level
// are read in place (SGMV), the other entries are gathered per slot (BGMV). Groups are then cut into tiles
// of <= kLoraTileRows entries, and each token's entries are listed in its stack order for the expand.
// Toolkit-free: it builds and is tested on every machine.
#include <algorithm>
#include <limits>

#include "core/check.h"
#include "cuda/step_types.h"

namespace lp::cuda {

namespace {
struct Entry {
  int32_t row, slot, level;
  float scale;
};
}  // namespace

void build_lora_plan(std::span<const int32_t> slot_of_token, std::span<const float> scale_of_token,
                     std::span<const kernels::LoraUse> more, HostLoraPlan& plan) {
  plan = HostLoraPlan{};
  plan.token_begin.push_back(0);  // (n_tokens + 1), also when empty
  LP_CHECK(slot_of_token.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
           "lora plan: {} tokens", slot_of_token.size());
  const int32_t T = static_cast<int32_t>(slot_of_token.size());
  LP_CHECK(scale_of_token.empty() || scale_of_token.size() == slot_of_token.size(),
           "lora plan: {} scales for {} tokens", scale_of_token.size(), T);

  // 1. The (token, slot, scale) pairs with their stack level: the token's first adapter, then its further
  //    ones in the order given; slot -1 and scale 0 are left out (they add nothing).
  std::vector<Entry> es;
  std::vector<int32_t> depth(T, 0);
  for (int32_t t = 0; t < T; ++t) {
    const float m = scale_of_token.empty() ? 1.f : scale_of_token[t];
    if (slot_of_token[t] >= 0 && m != 0.f) es.push_back({t, slot_of_token[t], depth[t]++, m});
  }
  for (const kernels::LoraUse& u : more) {
    LP_CHECK(u.row >= 0 && u.row < T, "lora plan: stacked adapter on row {} of {}", u.row, T);
    if (u.slot < 0 || u.scale == 0.f) continue;
    es.push_back({u.row, u.slot, depth[u.row]++, u.scale});
  }
  if (es.empty()) return;
  LP_CHECK(es.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), "lora plan: {} entries",
           es.size());
  std::stable_sort(es.begin(), es.end(), [](const Entry& a, const Entry& b) {
    return a.level != b.level ? a.level < b.level : a.row < b.row;
  });

  // 2. Groups: long runs of one slot on consecutive rows (one level) in place, the rest gathered per slot.
  std::vector<Entry> ordered;  // entries group by group
  std::vector<std::pair<int32_t, int32_t>> groups;  // [first, end) into `ordered`
  ordered.reserve(es.size());
  std::vector<Entry> loose;
  for (size_t i = 0; i < es.size();) {
    size_t j = i + 1;
    while (j < es.size() && es[j].level == es[i].level && es[j].slot == es[i].slot && es[j].row == es[j - 1].row + 1)
      ++j;
    if (j - i >= static_cast<size_t>(kernels::kSgmvMinRun)) {
      groups.emplace_back(static_cast<int32_t>(ordered.size()), static_cast<int32_t>(ordered.size() + (j - i)));
      ordered.insert(ordered.end(), es.begin() + static_cast<std::ptrdiff_t>(i),
                     es.begin() + static_cast<std::ptrdiff_t>(j));
    } else {
      loose.insert(loose.end(), es.begin() + static_cast<std::ptrdiff_t>(i), es.begin() + static_cast<std::ptrdiff_t>(j));
    }
    i = j;
  }
  std::stable_sort(loose.begin(), loose.end(), [](const Entry& a, const Entry& b) { return a.slot < b.slot; });
  for (size_t i = 0; i < loose.size();) {
    size_t j = i + 1;
    while (j < loose.size() && loose[j].slot == loose[i].slot) ++j;
    groups.emplace_back(static_cast<int32_t>(ordered.size()), static_cast<int32_t>(ordered.size() + (j - i)));
    ordered.insert(ordered.end(), loose.begin() + static_cast<std::ptrdiff_t>(i),
                   loose.begin() + static_cast<std::ptrdiff_t>(j));
    i = j;
  }

  // 3. The entry arrays, and tiles of <= kLoraTileRows entries of each group.
  const int32_t n = static_cast<int32_t>(ordered.size());
  plan.entry_row.resize(n);
  plan.entry_slot.resize(n);
  plan.entry_scale.resize(n);
  for (int32_t e = 0; e < n; ++e) {
    plan.entry_row[e] = ordered[e].row;
    plan.entry_slot[e] = ordered[e].slot;
    plan.entry_scale[e] = ordered[e].scale;
  }
  for (auto [first, end] : groups) {
    for (int32_t b = first; b < end; b += kLoraTileRows) {
      LoraTileDev tile;
      tile.slot = ordered[b].slot;
      tile.first = b;
      tile.count = std::min(kLoraTileRows, end - b);
      tile.contiguous = 1;
      for (int32_t e = b + 1; e < b + tile.count; ++e)
        if (ordered[e].row != ordered[e - 1].row + 1) tile.contiguous = 0;
      plan.tiles.push_back(tile);
    }
  }

  // 4. Per token, its entries by stack level (the order the expand adds them in).
  std::vector<int32_t> idx(n);
  for (int32_t e = 0; e < n; ++e) idx[e] = e;
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return ordered[a].row != ordered[b].row ? ordered[a].row < ordered[b].row : ordered[a].level < ordered[b].level;
  });
  plan.token_entry = idx;
  for (int32_t i = 0; i < n; ++i) {
    if (i > 0 && ordered[idx[i]].row != ordered[idx[i - 1]].row) plan.token_begin.push_back(i);
    if (i == 0 || ordered[idx[i]].row != ordered[idx[i - 1]].row) plan.token_row.push_back(ordered[idx[i]].row);
  }
  plan.token_begin.push_back(n);
  for (size_t i = 0; i + 1 < plan.token_begin.size(); ++i)
    plan.max_stack = std::max(plan.max_stack, plan.token_begin[i + 1] - plan.token_begin[i]);
}

}  // namespace lp::cuda
