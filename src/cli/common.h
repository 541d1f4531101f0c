// Small helpers shared by the CLI subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "lora/kv_plan.h"
#include "lora/slot_bank.h"
#include "model/model.h"

namespace lp::cli {

// "1,2,3" → {1, 2, 3}; throws lp::Error on anything else.
std::vector<int32_t> parse_ids(const std::string& s);
// Resident set size of this process in bytes (from /proc/self/status), 0 if unknown.
int64_t resident_bytes();
// Threads for the compute pool: `requested` if > 0, else LORAPLEX_THREADS, else the CPUs this process may
// use (io::read_cpu_available: the affinity mask and the cgroup CPU quota), and why, for the start-up log.
struct PoolThreads {
  int threads;
  std::string why;  // "--threads", "LORAPLEX_THREADS" or io::cpu_plan_text
};
PoolThreads pool_threads_plan(int requested);
int pool_threads(int requested);
// --quantization / -q (vLLM's flag) and --quantize-lm-head, which serve, bench, logits, generate and plan
// share. int8: weight-only at load (model/weights.h). AWQ / GPTQ int4 checkpoints are detected from
// config.json and need no flag; as in vLLM, `awq` / `gptq` may be given and must then match the checkpoint.
struct QuantFlags {
  std::string quantization = "none";
  bool quantize_lm_head = false;
};
void add_quant_flags(CLI::App* command, QuantFlags& flags);
// Throws lp::Error unless --quantization is none, int8, awq or gptq (no file read: a typo fails fast).
void check_quantization_flag(const std::string& value);
// The load options for these flags and the model's config: awq / gptq must name the checkpoint's
// quantization_config, int8 needs a float checkpoint; lp::Error naming the flag and config.json otherwise.
model::LoadOptions load_options(const QuantFlags& quant, const model::ModelConfig& config,
                                bool mmap_weights = false);
// The model in `dir`, its streamed weights copied into huge pages unless `mmap_weights` (--mmap-weights),
// quantized as the flags say.
std::unique_ptr<model::Model> load_model(const std::string& dir, bool mmap_weights,
                                         const QuantFlags& quant = {});
// --device cpu|cuda|auto (serve, bench, logits, generate, plan). auto = cuda when a CUDA device is usable,
// else cpu. cuda without one throws lp::Error naming what is missing (cuda::probe_device's reason).
inline constexpr const char* kDeviceHelp =
    "Where the model runs: cpu | cuda | auto (= cuda when a CUDA device is usable, else cpu)";
void add_device_flag(CLI::App* command, std::string& device);
model::Device resolve_device(const std::string& flag);
// Throws lp::Error when `device` cannot run these weights: the CUDA backend runs dense F32 / BF16 / F16
// weights only (no --quantization int8, no AWQ / GPTQ checkpoint).
void check_device_supports(model::Device device, const model::LoadOptions& load, const model::ModelConfig& config);
// Plans the KV cache in `device`'s memory: for cuda, the device's free memory now (before the weights are
// uploaded, as the host's is measured before a CPU load) or, with no usable device here, none (plan then
// needs --memory-budget or a --kv-cache-* flag to size it; the reason is the memory source).
void plan_on_device(lora::KvPlanOptions& options, model::Device device);
// The executor for `device`: the CPU model (load_model) or the CUDA backend (weights uploaded to device 0;
// dense F32 / BF16 / F16 weights only there).
std::unique_ptr<model::Executor> load_executor(model::Device device, const std::string& dir, bool mmap_weights,
                                               const QuantFlags& quant = {});
// The same from load options already made (serve's, with its progress callback).
std::unique_ptr<model::Executor> load_executor(model::Device device, const std::string& dir,
                                               const model::LoadOptions& load);
// "int8 12.0 MiB, BF16 4.0 MiB": ModelWeights::bytes_by_format on one line.
std::string bytes_by_format_text(const std::vector<std::pair<std::string, size_t>>& by_format);
inline constexpr const char* kMmapWeightsHelp =
    "Read the weights in place from the mapped files (default: copy them into huge-page memory)";
// --kv-cache-dtype: the KV cache's element type (vLLM's flag; "auto" = the model's torch_dtype).
inline constexpr const char* kKvCacheDtypeHelp =
    "KV-cache dtype: auto (= the model's torch_dtype) | bf16 | f16 | f32";
inline DType kv_cache_dtype(const std::string& flag, DType torch_dtype) {
  return parse_dtype_flag(flag, torch_dtype, "--kv-cache-dtype");
}

// The KV-cache sizing flags `serve` and `plan` share (lora/kv_plan.h has the rules).
inline constexpr const char* kKvCacheTokensHelp =
    "KV-cache capacity in tokens, exactly (rounded up to whole blocks of 16); wins over --kv-cache-memory "
    "(default: sized from memory, see --kv-cache-memory)";
inline constexpr const char* kKvCacheMemoryHelp =
    "KV-cache size in bytes, e.g. 8GiB, 512MiB, 500MB or plain bytes (default: 90% of the memory left after "
    "the weights, adapter slots and host tier, from MemAvailable and the cgroup limit; at most max_num_seqs "
    "x "
    "max_model_len tokens)";
struct KvFlags {
  int64_t kv_cache_tokens = 0;
  std::string kv_cache_memory;  // "" = from memory
  int max_num_seqs = 64;
  int64_t max_model_len = 0;  // 0 = the model's
  std::string kv_cache_dtype = "auto";
};
// The planner's options from the flags, with the memory this process may take measured now (so call it
// before the weights are loaded). Throws lp::Error for a malformed or zero --kv-cache-memory.
lora::KvPlanOptions kv_plan_options(const KvFlags& flags, DType torch_dtype);

// Adapters given on the command line (distinct folders), loaded into a slot bank of exactly that many
// slots. `lora_dtype`: bf16 | f16 | f32 | auto (= the base model's dtype).
struct CliAdapters {
  std::unique_ptr<lora::SlotBank> bank;
  std::map<std::string, int> slot_of;  // folder → slot
};
// With an executor, the slots live where it computes (Executor::slot_memory()).
CliAdapters load_cli_adapters(model::Executor& m, const std::vector<std::string>& dirs,
                              const std::string& lora_dtype);

}  // namespace lp::cli
