// Engine: the one thread that owns the model, the KV cache, the adapter slots and the running batch.
// Other threads (HTTP handlers) submit requests and read their channels; nothing else touches engine state.
//
// Every step: admit waiting requests (adapter resident in a slot or its load started, KV blocks available,
// max_num_seqs / max_num_batched_tokens / max_loras limits), build one flat batch of prefill chunks and decode
// tokens of all running requests, run one forward, sample, push outputs, retire finished or aborted requests
// (freeing KV blocks and adapter holds).
//
// Per request, before its sampler (logit_bias, penalties, temperature...): its structured-output constraint,
// allowed_token_ids, bad_words and min_tokens set the logits of excluded tokens to -inf, as vLLM's logits
// processors do; logprobs stay the model's raw distribution. The constraint gets the engine's EOS ids, so EOS
// comes only where the structured output may end, also with ignore_eos; there an EOS ends the structured
// output but not the request, and only EOS may follow (vLLM samples freely after the grammar terminates; we
// keep the output valid). A constraint that allows nothing, or throws, ends its request with an internal
// error; masks that together exclude every token (e.g. a complete output before min_tokens) end it with
// kInvalid. prompt_logprobs asks the model for a logits row per prompt position (prefill chunks bounded by
// SchedulerConfig::max_prompt_logprob_rows, no prefix-cache reuse for that prompt) and keeps only each row's
// top-k, sent once in the first Output.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "sched/request.h"
#include "sched/scheduler_config.h"

namespace lp::model { class Executor; }
namespace lp::text { class Tokenizer; }
namespace lp::lora { class AdapterManager; }

namespace lp::sched {

struct EngineConfig {
  SchedulerConfig sched;               // running / batched-token / waiting limits, slot waits, tenant weights
  // KV capacity in tokens (rounded up to whole blocks). `serve` always passes the planned value
  // (lora::plan_kv_cache); 0 is a fallback for tests: min(max_num_seqs x 2048 tokens, 1 GiB).
  int64_t kv_cache_tokens = 0;
  int block_size = 16;
  std::optional<DType> kv_cache_dtype;  // KV element type; unset: the model's torch_dtype
  bool enable_prefix_caching = true;
  int threads = 0;  // compute pool (0 = ComputePool's default)
  // Testing hook: replaces kv::block_hash for prefix-cache keys (e.g. a deliberately weak one).
  std::function<uint64_t(uint64_t prev, uint64_t adapter_key, std::span<const int32_t> tokens)> block_hash;
};

// What the KV cache is, fixed at construction (for vllm:cache_config_info and the capacity gauge).
struct KvCacheInfo {
  int block_size = 0;
  int64_t num_blocks = 0;
  int64_t capacity_tokens = 0;  // num_blocks x block_size
  std::string cache_dtype_label;  // what the cache holds: "bf16" | "f16" | "f32"
  bool prefix_caching = false;
};

// A consistent snapshot for /metrics and /health (cheap; any thread).
struct EngineStats {
  int running = 0;
  int waiting = 0;
  double kv_usage = 0;  // fraction of KV blocks in use
  int64_t prompt_tokens_total = 0;
  int64_t generation_tokens_total = 0;
  int64_t preemptions_total = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t prefix_cache_queried_tokens = 0;
  std::vector<std::string> running_adapters;  // distinct adapter names in the running batch
  std::vector<std::string> waiting_adapters;  // distinct adapter names of waiting requests
  int max_loras = 0;
  KvCacheInfo kv_cache;
};

class Engine {
 public:
  // `adapters` may be null (no LoRA); its slots must live where `model` computes (ManagerOptions::slot_memory
  // = model.slot_memory()). The engine does not own the model, tokenizer or adapter manager.
  Engine(model::Executor& model, const text::Tokenizer& tokenizer, lora::AdapterManager* adapters,
         const EngineConfig& config);
  ~Engine();  // stops the thread; running requests finish with kAbort

  void start();
  // Stops admitting (submit() throws kUnavailable); waits up to timeout for in-flight requests, then aborts.
  void shutdown(std::chrono::milliseconds timeout);

  // Any thread. Validates (prompt non-empty, fits the context, adapter known to the manager) and enqueues.
  // Throws lp::Error: kInvalid (bad request, context_length_exceeded), kNotFound (unknown adapter),
  // kOverloaded (over max_waiting or max_waiting_per_adapter), kUnavailable (shutting down).
  // Later failures arrive as an Output with finish kError and error_kind: kNotFound (the adapter was
  // unregistered while the request waited), kUnavailable (no adapter slot within adapter_wait_timeout_s).
  std::shared_ptr<RequestChannel> submit(Request req);

  EngineStats stats() const;
  int64_t max_model_len() const;  // the model's context length, capped at what the whole KV cache holds

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lp::sched
