// A request inside the engine (internal to sched/): its tokens, KV blocks, adapter hold and output state.
// The Scheduler owns every Seq (in a tenant's waiting queue or in the running set) and decides; the engine
// reads and advances them. Engine thread only, except `channel`, which the caller shares.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "sched/output_text.h"
#include "sched/request.h"
#include "sched/sampler.h"

namespace lp::sched {

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
  uint64_t adapter_key = 0;      // adapter registration id for prefix-cache identity (0 = base model)
  std::vector<uint64_t> hashes;  // hashes of the full blocks of `tokens` known so far
  size_t registered = 0;         // blocks of the table registered in the prefix cache
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<OutputText> text;
  double arrived = 0;             // now_seconds() when submitted
  double first_scheduled = -1;    // when it was first admitted to the running batch (< 0: not yet)
  double adapter_wait_since = -1;  // when admission first found its adapter unavailable (< 0: not waiting)
  bool no_slot = false;            // the last admission attempt found every slot held (not just loading)
  bool first_token_sent = false;
  bool finished = false;  // set by the engine when the last output was pushed; the scheduler retires it

  const std::string& tenant() const { return req.adapter; }
};

}  // namespace lp::sched
