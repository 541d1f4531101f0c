// Small helpers shared by the CLI subcommands.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "lora/slot_bank.h"
#include "model/model.h"

namespace lp::cli {

// "1,2,3" → {1, 2, 3}; throws lp::Error on anything else.
std::vector<int32_t> parse_ids(const std::string& s);
// Resident set size of this process in bytes (from /proc/self/status), 0 if unknown.
int64_t resident_bytes();
// Threads for the compute pool: `requested` if > 0, else LORAPLEX_THREADS, else all cores.
int pool_threads(int requested);
// The model in `dir`, its streamed weights copied into huge pages unless `mmap_weights` (--mmap-weights).
std::unique_ptr<model::Model> load_model(const std::string& dir, bool mmap_weights);
inline constexpr const char* kMmapWeightsHelp =
    "Read the weights in place from the mapped files (default: copy them into huge-page memory)";
// --kv-cache-dtype: the KV cache's element type (vLLM's flag; "auto" = the model's torch_dtype).
inline constexpr const char* kKvCacheDtypeHelp =
    "KV-cache dtype: auto (= the model's torch_dtype) | bf16 | f16 | f32";
inline DType kv_cache_dtype(const std::string& flag, DType torch_dtype) {
  return parse_dtype_flag(flag, torch_dtype, "--kv-cache-dtype");
}

// Adapters given on the command line (distinct folders), loaded into a slot bank of exactly that many
// slots. `lora_dtype`: bf16 | f16 | f32 | auto (= the base model's dtype).
struct CliAdapters {
  std::unique_ptr<lora::SlotBank> bank;
  std::map<std::string, int> slot_of;  // folder → slot
};
CliAdapters load_cli_adapters(const model::Model& m, const std::vector<std::string>& dirs,
                              const std::string& lora_dtype);

}  // namespace lp::cli
