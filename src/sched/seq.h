// A request inside the engine (internal to sched/): its tokens, KV blocks, adapter hold and output state.
// The Scheduler owns every Seq (in a tenant's waiting queue or in the running set) and decides; the engine
// reads and advances them. Engine thread only, except `channel`, which the caller shares.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "sched/constraint.h"
#include "sched/output_text.h"
#include "sched/request.h"
#include "sched/sampler.h"

namespace lp::sched {

// Two 64-bit key words as one, well mixed (a multiply then a splitmix-style finalizer): prefix-cache identities
// built from registration ids, scales and salts.
inline uint64_t mix_key(uint64_t a, uint64_t b) {
  uint64_t h = a * 0x9e3779b97f4a7c15ull ^ b;
  h ^= h >> 31;
  h *= 0x7fb5d329728ea185ull;
  h ^= h >> 27;
  return h;
}

struct Seq {
  uint64_t id = 0;  // arrival order (preempted requests keep theirs)
  Request req;      // req.adapter is the tenant: "" = the base model
  std::weak_ptr<RequestChannel> channel;
  std::vector<int32_t> tokens;  // prompt + generated
  int prompt_len = 0;
  int generated = 0;
  int64_t computed = 0;  // tokens whose K/V are in the cache
  kv::SeqBlocks blocks;
  int32_t slot = -1;             // adapter slot held while running, -1 none
  std::vector<int32_t> more_slots;  // slots of req.more_adapters, held with `slot` (empty while not held)
  // Prefix-cache identity of the adapters: the registration id of a plain adapter (0 = base model), a hash
  // of every registration id and scale of a scaled or stacked one.
  uint64_t adapter_key = 0;
  std::vector<uint64_t> hashes;  // hashes of the full blocks of `tokens` known so far
  size_t registered = 0;         // blocks of the table registered in the prefix cache
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<OutputText> text;
  // Structured outputs: started on the engine thread before the first sample (null: free). With ignore_eos
  // an EOS the constraint accepted ends the structured output but not the request: constraint_ended is set
  // and from then on only EOS ids may follow (the text stays valid; EOS renders as nothing).
  std::unique_ptr<TokenConstraint> constraint;
  bool constraint_ended = false;
  // prompt_logprobs: one entry per prompt token (entry 0 stays empty), filled as prefill chunks run, sent
  // whole in the first Output and then cleared. Entry j comes from the logits at position j - 1.
  std::vector<std::optional<TokenLogprob>> prompt_lp;
  int prompt_lp_next = 0;  // the next entry to compute; prompt_len once done (or when none were asked)
  bool prompt_lp_sent = false;
  double arrived = 0;             // now_seconds() when submitted
  double first_scheduled = -1;    // when it was first admitted to the running batch (< 0: not yet)
  double adapter_wait_since = -1;  // when admission first found its adapter unavailable (< 0: not waiting)
  bool no_slot = false;            // the last admission attempt found every slot held (not just loading)
  bool first_token_sent = false;
  bool finished = false;  // set by the engine when the last output was pushed; the scheduler retires it

  const std::string& tenant() const { return req.adapter; }
  // Who may share this sequence's cached prefix blocks: the adapter registration, and the salt when there is
  // one (mixed in with a splitmix finalizer; unsalted keys are small registration ids).
  uint64_t prefix_key() const { return req.cache_salt == 0 ? adapter_key : mix_key(adapter_key, req.cache_salt); }
  // Still needs a logits row for some prompt positions (prompt_logprobs): its prefill chunks are bounded by
  // SchedulerConfig::max_prompt_logprob_rows and it adopts no cached prefix.
  bool needs_prompt_rows() const { return req.prompt_logprobs >= 0 && prompt_lp_next < prompt_len; }
};

}  // namespace lp::sched
