// Batch: one flat list of tokens from many sequences, the unit of a forward step.
// Each sequence contributes a contiguous run of rows (a prefill chunk, or one decode token), so prefill and
// decode of different sequences mix freely in one call. The caller (scheduler, CLI) has already reserved KV
// blocks for every new token; `slot` says where each token's K/V goes.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/lora.h"

namespace lp::model {

struct Batch {
  std::vector<int32_t> tokens;     // (T) token ids
  std::vector<int32_t> positions;  // (T) position of each token in its sequence
  std::vector<int32_t> slots;      // (T) KV cache slot: block * block_size + offset
  std::vector<kernels::AttnSeq> seqs;  // one per sequence, rows [q_begin, q_begin + q_len)
  std::vector<int32_t> logit_rows;     // rows whose logits are wanted, in output order
  std::vector<int32_t> lora_slots;     // (T) adapter slot of each token, -1 = base model; empty = all -1
  // A request's own adapter scales and stacks (kernels/lora.h): (T) multiplier of lora_slots[t], empty = all
  // 1; and the further adapters of tokens that stack several, in each token's stack order.
  std::vector<float> lora_scales;
  std::vector<kernels::LoraUse> lora_more;

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  void clear() {
    tokens.clear();
    positions.clear();
    slots.clear();
    seqs.clear();
    logit_rows.clear();
    lora_slots.clear();
    lora_scales.clear();
    lora_more.clear();
  }
};

}  // namespace lp::model
