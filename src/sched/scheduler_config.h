// The scheduler's limits and tenant weights (sched/scheduler.h says what each does). Its own header so that
// EngineConfig can carry it without pulling the scheduler's internals into engine.h.
#pragma once

#include <map>
#include <string>

namespace lp::sched {

struct SchedulerConfig {
  int max_num_seqs = 64;              // running requests at most
  int max_num_batched_tokens = 2048;  // tokens in one step at most (prefill chunks are cut to fit)
  int max_waiting = 1024;             // waiting requests in all (0: no cap); over it submit() is kOverloaded
  int max_waiting_per_adapter = 0;    // waiting requests of one tenant (0: no cap); likewise
  double adapter_wait_timeout_s = 30;  // a request without an adapter slot this long: kUnavailable
  double slot_fairness_s = 2;          // after this long without a slot, other unpinned adapters wait
  // Prompt positions whose logits one step computes for prompt_logprobs, over all requests: the logits
  // buffer holds rows x vocab floats (128 x 152k x 4 B = 78 MB), so a prompt_logprobs request's prefill goes
  // in chunks of at most this many tokens, and waits for a later step when another one used them up.
  int max_prompt_logprob_rows = 128;
  std::map<std::string, double> weights;  // tenant -> admission weight (default 1; "" = the base model)
};

}  // namespace lp::sched
