// A generation request as the engine sees it, and what flows back to the caller.
// The HTTP layer builds Requests (already tokenized, adapter named) and reads Outputs from the request's
// channel; one OpenAI "choice" is one Request (n > 1 submits n Requests with seeds seed, seed+1, ...).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/check.h"
#include "sched/constraint.h"
#include "sched/sampler.h"

namespace lp::sched {

// One more adapter stacked on a request's first (Request::more_adapters).
struct AdapterRef {
  std::string name;
  float scale = 1.f;
};

struct Request {
  std::vector<int32_t> prompt;          // token ids (already templated and tokenized)
  std::string adapter;                  // registered adapter name, "" = base model
  // Per-request adapter scale and stacking (loraplex's "adapters" body field): `adapter` runs at
  // adapter_scale, a multiplier of its alpha/r (0: the base output), and each of more_adapters (distinct,
  // registered, not `adapter`) is added on top in order, each in its own slot. Defaults: exactly the plain
  // adapter. `adapter` is the tenant (fairness, caps) and must be set when more_adapters is not empty.
  float adapter_scale = 1.f;
  std::vector<AdapterRef> more_adapters;
  SamplingParams sampling;
  int max_tokens = 16;                  // generated tokens at most (clamped to the context left)
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;  // finish ("stop") when one is generated; it is not emitted as text
  // Finish ("stop") when the text contains one; text is cut before it. Null: none. Shared by the n requests
  // of one call (a stop list is up to 16 KiB; n up to 128).
  std::shared_ptr<const std::vector<std::string>> stop;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  int logprobs = -1;                    // -1: none; k >= 0: the sampled token's logprob + top-k alternatives
  // vLLM's logits processors, applied before sampling (HTTP layer validates; ids inside the vocabulary):
  int min_tokens = 0;  // EOS and stop_token_ids are masked (and stop strings not checked) before this many
  std::shared_ptr<const std::vector<int32_t>> allowed_token_ids;  // sorted, unique; null: every token
  // Token sequences never to generate: the last token of each is masked wherever the tokens before it were
  // just generated (a one-token sequence: always). Null: none.
  std::shared_ptr<const std::vector<std::vector<int32_t>>> bad_words;
  int prompt_logprobs = -1;  // -1: none; k >= 0: each prompt token's logprob + top-k alternatives
  std::shared_ptr<const ConstraintFactory> constraint;  // structured outputs; null: free
  // vLLM's cache_salt, hashed (0: none): cached prefix blocks are shared only between requests of the same
  // adapter and the same salt, so a tenant's users can keep their prompts from probing each other's.
  uint64_t cache_salt = 0;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), best first, `logprobs` entries
  int rank = 0;  // prompt_logprobs: 1 + the tokens with a strictly higher logprob (vLLM); 0: not computed
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };

// One update of a request: the tokens and text produced since the previous update.
struct Output {
  std::vector<int32_t> tokens;
  std::string text;  // UTF-8, never a partial character
  std::vector<TokenLogprob> logprobs;  // one per token when requested
  FinishReason finish = FinishReason::kNone;
  std::string error;                    // when finish == kError
  std::optional<ErrorKind> error_kind;  // when finish == kError: how to answer (nullopt: an internal error)
  int prompt_tokens = 0;
  int completion_tokens = 0;  // total so far
  // In the update carrying the first generated token: seconds from submit() to the step that first admitted
  // the request (time in the waiting queue, vLLM's queued time); -1 in every other update.
  double queue_time_s = -1;
  // With finish kStop: what stopped it, as vLLM's stop_reason: the stop string, or the stop_token_ids entry;
  // monostate for EOS (and for every other finish).
  std::variant<std::monostate, std::string, int32_t> stop_reason;
  // In the first update when Request::prompt_logprobs >= 0: one entry per prompt token, the first empty
  // (nothing precedes it), each other the token's logprob given the tokens before it + top-k alternatives.
  std::vector<std::optional<TokenLogprob>> prompt_logprobs;
};

// The output channel of one request: the engine pushes, one consumer pops. Thread-safe.
// Dropping every reference to the channel, or calling abort(), aborts the request at the next engine step.
// A consumer that must not block (the asynchronous HTTP layer) sets a listener and pops with a zero timeout
// when it is called.
class RequestChannel {
 public:
  void push(Output out);
  // Waits up to `timeout` for the next update; nullopt on timeout.
  std::optional<Output> pop(std::chrono::milliseconds timeout);
  void abort();
  bool aborted() const { return aborted_.load(); }
  // `fn` is called after each push() and on abort(), on the pushing / aborting thread, with no lock of the
  // channel's queue held (it may pop). It must be quick and must not call set_listener(). Replaces any
  // previous listener; after set_listener(nullptr) returns, the old listener is not running and never runs
  // again, so it may reference things its owner is about to free.
  void set_listener(std::function<void()> fn);

 private:
  void notify_listener();

  std::mutex mu_;  // guards q_
  std::condition_variable cv_;
  std::deque<Output> q_;
  std::atomic<bool> aborted_{false};
  std::mutex listener_mu_;  // guards listener_ and is held while it runs
  std::function<void()> listener_;
};

}  // namespace lp::sched
