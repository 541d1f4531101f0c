// The per-step metadata the CUDA forward builds on the host and uploads once per step: plain structs and the
// host-side LoRA plan builder, free of any CUDA header, so they build and are tested on every machine
// (tests/cuda/lora_plan_test.cpp) while the kernels that read them (cuda/kernels.h) need the toolkit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/lora.h"

namespace lp::cuda {

// One sequence of a step for attention (kernels::AttnSeq with its block table flattened into one array).
struct AttnSeqDev {
  int32_t q_begin = 0;      // first query row in q / out
  int32_t q_len = 0;        // new tokens (prefill chunk, or 1 for decode)
  int32_t ctx_len = 0;      // tokens in the cache, the new ones included (already written)
  int32_t table_begin = 0;  // index of its first block id in `block_tables`
};

// LoRA: entries are (token row, slot, scale) pairs; a tile is up to kLoraTileRows entries of ONE slot — a
// piece of a prefill segment (SGMV: rows consecutive) or a gathered set of decode tokens (BGMV) — so a launch
// reads each adapter's A once per tile, whatever the mix of adapters.
inline constexpr int kLoraTileRows = 16;

struct LoraTileDev {
  int32_t slot = -1;
  int32_t first = 0;  // entries [first, first + count)
  int32_t count = 0;  // 1..kLoraTileRows
  int32_t contiguous = 0;  // rows of the entries are rows[first], rows[first] + 1, ... (a prefill segment)
};

// The host form of one step's LoRA plan (cuda/kernels.h's LoraPlanDev points at device copies of these).
struct HostLoraPlan {
  std::vector<int32_t> entry_row;    // (n_entries) token row of each entry
  std::vector<int32_t> entry_slot;   // (n_entries) its slot (its tile's; the expand reads it per entry)
  std::vector<float> entry_scale;    // (n_entries) never 0
  std::vector<LoraTileDev> tiles;    // every entry in exactly one tile; a tile's entries share one slot
  std::vector<int32_t> token_row;    // tokens with any entry, ascending
  std::vector<int32_t> token_begin;  // (token_row.size() + 1) into token_entry
  std::vector<int32_t> token_entry;  // each token's entries in its stack order
  int32_t max_stack = 0;
  bool empty() const { return entry_row.empty(); }
};

// kernels::lora_plan_build's inputs (Batch::lora_slots, lora_scales, lora_more), the same pairs: a token's
// first adapter (slot_of_token[t] at scale_of_token[t], or 1 when empty), then its LoraUse entries in order;
// pairs with slot -1 or scale 0 left out. Runs of >= kernels::kSgmvMinRun consecutive tokens of one slot
// become contiguous tiles (SGMV); other entries are gathered per slot (BGMV). Throws lp::Error (LP_CHECK) on
// inconsistent sizes or rows out of range.
void build_lora_plan(std::span<const int32_t> slot_of_token, std::span<const float> scale_of_token,
                     std::span<const kernels::LoraUse> more, HostLoraPlan& plan);

}  // namespace lp::cuda
