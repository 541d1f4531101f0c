// How big the KV cache is: the one planning function `serve` (which passes the result to the engine as
// EngineConfig::kv_cache_tokens) and `plan` (which prints it) share, so both give the same numbers for the
// same flags and the same machine. In order of precedence:
//   --kv-cache-tokens N   exactly N tokens (rounded up to whole blocks), whatever the memory;
//   --kv-cache-memory S   S bytes of KV cache (whole blocks that fit in S);
//   default               kKvMemoryShare (90%) of the memory left after the weights, the adapter slots and
//   the
//                         host tier, where the memory is plan's --memory-budget if given, else what the
//                         kernel says this process may still take (io::read_memory_available: MemAvailable
//                         and the cgroup limits), measured before the weights are loaded so that they are
//                         subtracted once; at most max_num_seqs x max_model_len tokens (more is never used
//                         by running sequences). When the memory cannot be read at all: kKvFallbackBytes.
// Why 90%: the rest is for what the plan does not count (activations and logits of a step, HTTP buffers,
// tokenizer and allocator overhead, page cache the kernel would rather keep), the same share vLLM leaves
// with its default --gpu-memory-utilization 0.9.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "lora/plan.h"
#include "model/config.h"

namespace lp::lora {

inline constexpr double kKvMemoryShare = 0.9;
// Without any memory figure: vLLM's CPU default KV space (VLLM_CPU_KVCACHE_SPACE, 4 GiB).
inline constexpr int64_t kKvFallbackBytes = int64_t{4} << 30;

struct KvPlanOptions {
  int64_t kv_cache_tokens = 0;  // --kv-cache-tokens (> 0: exact; wins over everything)
  int64_t kv_cache_memory = 0;  // --kv-cache-memory in bytes (> 0: wins over the share)
  int64_t memory_budget = 0;    // plan's --memory-budget (> 0: plan in this much memory instead of measuring)
  std::optional<int64_t> memory_available;  // measured (io::read_memory_available().bytes); nullopt: unknown
  std::string memory_source;                // where memory_available came from, for the printout
  double share = kKvMemoryShare;
  int max_num_seqs = 64;
  int64_t max_model_len = 0;  // the context cap (--max-model-len or the model's); 0: the model's
  int block_size = 16;
  std::optional<DType> kv_dtype;  // unset: the model's torch_dtype (as the engine)
  // The base weights' bytes as loaded (WeightPlan::resident_bytes: less under --quantization int8);
  // unset: base_param_count x bytes(torch_dtype).
  std::optional<int64_t> weights_bytes;
  // Where the weights, slots and KV cache live: "cpu" (host memory, with the host tier), or "cuda" (device
  // memory: memory_available / memory_budget are the device's, and the host tier, in pinned host memory,
  // is shown but takes none of it).
  std::string device = "cpu";
};

struct KvPlan {
  int64_t weights_bytes = 0;  // KvPlanOptions::weights_bytes, else as MemoryPlan::base_bytes
  int64_t slots_bytes = 0;    // 0 without LoRA
  int64_t host_bytes = 0;
  std::string device = "cpu";  // KvPlanOptions::device
  int64_t memory_bytes = -1;  // the memory planned in; -1 when it was not needed or not known
  std::string memory_source;
  int64_t left_bytes = 0;  // memory − weights − slots − host (cuda: the host tier not counted); 0 if no memory
  DType kv_dtype = DType::kBF16;
  int block_size = 16;
  int64_t kv_bytes_per_token = 0;
  int64_t kv_blocks = 0;
  int64_t kv_tokens = 0;  // kv_blocks x block_size: the capacity the engine gets
  int64_t kv_bytes = 0;   // kv_tokens x kv_bytes_per_token
  std::string sized_by;   // "--kv-cache-tokens", "--kv-cache-memory", "90% of the memory left", ...
  bool capped = false;    // the share would give more than max_num_seqs x max_model_len tokens
  std::string problem;    // non-empty when kv_blocks == 0: why (serve refuses to start with it)
};

// `lora`: the LoRA memory plan (nullptr when LoRA is off: no slots, no host tier). Throws lp::Error for
// negative flags or a share outside (0, 1].
KvPlan plan_kv_cache(const model::ModelConfig& config, const MemoryPlan* lora, const KvPlanOptions& options);

// The plan in a few lines (what serve logs and plan prints): weights, slots, host tier, memory, KV cache.
std::string kv_plan_text(const KvPlan& plan);
// memory_bytes, memory_source, weights_bytes, kv_tokens, kv_blocks, kv_bytes, kv_block_size, kv_sized_by, ...
nlohmann::json kv_plan_json(const KvPlan& plan);

}  // namespace lp::lora
