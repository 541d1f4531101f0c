// cuda::build_lora_plan (cuda/step_types.h) against a brute-force expectation: every token's stack of
// (slot, scale) pairs, computed directly from the inputs, must come out of the plan exactly once each, in
// stack order, in tiles of one slot and <= kLoraTileRows entries. Runs on every machine (no toolkit needed).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "cuda/step_types.h"

namespace lp::cuda {
namespace {

using Pair = std::pair<int32_t, float>;  // (slot, scale)

// The stacks the plan must reproduce: the token's first adapter, then its LoraUse entries in order, without
// slot -1 or scale 0.
std::vector<std::vector<Pair>> expected_stacks(const std::vector<int32_t>& slot, const std::vector<float>& scale,
                                               const std::vector<kernels::LoraUse>& more) {
  std::vector<std::vector<Pair>> st(slot.size());
  for (size_t t = 0; t < slot.size(); ++t) {
    const float m = scale.empty() ? 1.f : scale[t];
    if (slot[t] >= 0 && m != 0.f) st[t].emplace_back(slot[t], m);
  }
  for (const auto& u : more)
    if (u.slot >= 0 && u.scale != 0.f) st[u.row].emplace_back(u.slot, u.scale);
  return st;
}

void check_plan(const std::vector<int32_t>& slot, const std::vector<float>& scale,
                const std::vector<kernels::LoraUse>& more, const HostLoraPlan& p) {
  const auto st = expected_stacks(slot, scale, more);
  size_t total = 0, longest = 0;
  for (const auto& s : st) {
    total += s.size();
    longest = std::max(longest, s.size());
  }
  const size_t n = p.entry_row.size();
  ASSERT_EQ(n, total);
  ASSERT_EQ(p.entry_slot.size(), n);
  ASSERT_EQ(p.entry_scale.size(), n);
  EXPECT_EQ(p.empty(), total == 0);
  EXPECT_EQ(p.max_stack, static_cast<int32_t>(longest));
  for (size_t e = 0; e < n; ++e) {
    EXPECT_GE(p.entry_slot[e], 0);
    EXPECT_NE(p.entry_scale[e], 0.f);
    ASSERT_GE(p.entry_row[e], 0);
    ASSERT_LT(p.entry_row[e], static_cast<int32_t>(slot.size()));
  }

  // Tiles: each entry in exactly one tile, one slot per tile, 1..kLoraTileRows entries, contiguous = true rows.
  std::vector<int> in_tile(n, 0);
  for (const LoraTileDev& t : p.tiles) {
    ASSERT_GE(t.count, 1);
    ASSERT_LE(t.count, kLoraTileRows);
    ASSERT_GE(t.first, 0);
    ASSERT_LE(static_cast<size_t>(t.first + t.count), n);
    for (int32_t e = t.first; e < t.first + t.count; ++e) {
      ++in_tile[e];
      EXPECT_EQ(p.entry_slot[e], t.slot) << "entry " << e;
      if (t.contiguous && e > t.first) {
        EXPECT_EQ(p.entry_row[e], p.entry_row[e - 1] + 1) << "entry " << e;
      }
    }
  }
  for (size_t e = 0; e < n; ++e) EXPECT_EQ(in_tile[e], 1) << "entry " << e;

  // Token lists: ascending rows, exactly the tokens with a non-empty stack, each entry once, in stack order.
  ASSERT_EQ(p.token_begin.size(), p.token_row.size() + 1);
  ASSERT_EQ(p.token_entry.size(), n);
  EXPECT_EQ(p.token_begin.front(), 0);
  EXPECT_EQ(p.token_begin.back(), static_cast<int32_t>(n));
  std::vector<int> listed(n, 0);
  std::map<int32_t, std::vector<Pair>> got;
  for (size_t i = 0; i < p.token_row.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(p.token_row[i - 1], p.token_row[i]);
    }
    ASSERT_LE(p.token_begin[i], p.token_begin[i + 1]);
    for (int32_t q = p.token_begin[i]; q < p.token_begin[i + 1]; ++q) {
      const int32_t e = p.token_entry[q];
      ASSERT_GE(e, 0);
      ASSERT_LT(static_cast<size_t>(e), n);
      ++listed[e];
      EXPECT_EQ(p.entry_row[e], p.token_row[i]);
      got[p.token_row[i]].emplace_back(p.entry_slot[e], p.entry_scale[e]);
    }
  }
  for (size_t e = 0; e < n; ++e) EXPECT_EQ(listed[e], 1) << "entry " << e;
  for (size_t t = 0; t < st.size(); ++t) {
    auto it = got.find(static_cast<int32_t>(t));
    if (st[t].empty()) {
      EXPECT_TRUE(it == got.end()) << "token " << t << " has no adapter but is listed";
    } else {
      ASSERT_TRUE(it != got.end()) << "token " << t;
      EXPECT_EQ(it->second, st[t]) << "token " << t;
    }
  }
}

TEST(LoraPlan, RandomBatchesMatchBruteForce) {
  std::mt19937 rng(1234);
  const float scales[] = {1.f, 0.5f, 2.f, -1.f, 0.f};
  for (int iter = 0; iter < 400; ++iter) {
    const int T = static_cast<int>(rng() % 90);
    const int n_slots = 1 + static_cast<int>(rng() % 6);
    std::vector<int32_t> slot(T);
    // Segments: prefill-like runs of one slot (long, SGMV) mixed with single decode tokens.
    for (int t = 0; t < T;) {
      const int len = rng() % 3 == 0 ? 1 + static_cast<int>(rng() % 40) : 1;
      const int32_t s = static_cast<int32_t>(rng() % (n_slots + 1)) - 1;  // -1 .. n_slots - 1
      for (int i = 0; i < len && t < T; ++i) slot[t++] = s;
    }
    std::vector<float> scale;
    if (rng() % 2)
      for (int t = 0; t < T; ++t) scale.push_back(rng() % 4 == 0 ? scales[rng() % 5] : 1.f);
    std::vector<kernels::LoraUse> more;
    if (T > 0 && rng() % 2) {
      const int n_more = static_cast<int>(rng() % (2 * T + 1));
      for (int i = 0; i < n_more; ++i)
        more.push_back({static_cast<int32_t>(rng() % T), static_cast<int32_t>(rng() % (n_slots + 1)) - 1,
                        scales[rng() % 5]});
    }
    HostLoraPlan plan;
    plan.entry_row = {7, 7};  // stale contents must be replaced
    build_lora_plan(slot, scale, more, plan);
    SCOPED_TRACE("iteration " + std::to_string(iter));
    check_plan(slot, scale, more, plan);
    if (HasFatalFailure()) return;
  }
}

TEST(LoraPlan, PrefillSegmentBecomesContiguousTiles) {
  std::vector<int32_t> slot(3, -1);  // 3 base tokens, then 40 prefill tokens of slot 2, then a decode token
  slot.insert(slot.end(), 40, 2);
  slot.push_back(2);
  slot[43] = 5;
  HostLoraPlan plan;
  build_lora_plan(slot, {}, {}, plan);
  check_plan(slot, {}, {}, plan);
  int contiguous_entries = 0;
  for (const LoraTileDev& t : plan.tiles) {
    if (t.slot == 2) {
      EXPECT_TRUE(t.contiguous);
      EXPECT_EQ(plan.entry_row[t.first], 3 + contiguous_entries);
      contiguous_entries += t.count;
    }
  }
  EXPECT_EQ(contiguous_entries, 40);
  EXPECT_EQ(plan.tiles.size(), 4u);  // 16 + 16 + 8 of slot 2, 1 of slot 5
  EXPECT_EQ(plan.max_stack, 1);
}

TEST(LoraPlan, DecodeTokensOfOneSlotShareTiles) {
  // 40 decode tokens alternating two slots: gathered per slot, 16 to a tile.
  std::vector<int32_t> slot(40);
  for (int t = 0; t < 40; ++t) slot[t] = t % 2;
  HostLoraPlan plan;
  build_lora_plan(slot, {}, {}, plan);
  check_plan(slot, {}, {}, plan);
  EXPECT_EQ(plan.tiles.size(), 4u);  // 20 entries per slot: 16 + 4, twice
  for (const LoraTileDev& t : plan.tiles) EXPECT_FALSE(t.contiguous);
}

TEST(LoraPlan, StackedAdaptersKeepStackOrder) {
  const std::vector<int32_t> slot = {0, -1, 1};
  const std::vector<float> scale = {0.5f, 1.f, 0.f};  // token 2's first adapter is dropped (scale 0)
  const std::vector<kernels::LoraUse> more = {{0, 3, 2.f}, {1, 0, 1.f}, {0, 0, -1.f}, {2, 4, 1.f}, {1, -1, 1.f}};
  HostLoraPlan plan;
  build_lora_plan(slot, scale, more, plan);
  check_plan(slot, scale, more, plan);
  EXPECT_EQ(plan.max_stack, 3);
  EXPECT_EQ(plan.token_row, (std::vector<int32_t>{0, 1, 2}));
}

TEST(LoraPlan, NoAdaptersGiveAnEmptyPlan) {
  HostLoraPlan plan;
  build_lora_plan(std::vector<int32_t>{-1, -1}, std::vector<float>{1.f, 1.f}, {}, plan);
  EXPECT_TRUE(plan.empty());
  EXPECT_TRUE(plan.tiles.empty());
  EXPECT_TRUE(plan.token_row.empty());
  EXPECT_EQ(plan.token_begin, std::vector<int32_t>{0});
  EXPECT_EQ(plan.max_stack, 0);
  build_lora_plan({}, {}, {}, plan);
  EXPECT_TRUE(plan.empty());
}

TEST(LoraPlanDeathTest, RejectsInconsistentInputs) {
  HostLoraPlan plan;
  const std::vector<int32_t> slot = {0, 1};
  EXPECT_DEATH(build_lora_plan(slot, std::vector<float>{1.f}, {}, plan), "1 scales for 2 tokens");
  const std::vector<kernels::LoraUse> bad = {{2, 0, 1.f}};
  EXPECT_DEATH(build_lora_plan(slot, {}, bad, plan), "stacked adapter on row 2 of 2");
}

}  // namespace
}  // namespace lp::cuda
