#include "lora/kv_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "kv/kv_cache.h"

namespace lp::lora {

KvPlan plan_kv_cache(const model::ModelConfig& c, const MemoryPlan* lora, const KvPlanOptions& o) {
  if (o.kv_cache_tokens < 0) fail("--kv-cache-tokens must not be negative (got {})", o.kv_cache_tokens);
  if (o.kv_cache_memory < 0) fail("--kv-cache-memory must not be negative (got {})", o.kv_cache_memory);
  if (o.memory_budget < 0) fail("--memory-budget must not be negative (got {})", o.memory_budget);
  if (!(o.share > 0 && o.share <= 1)) fail("the KV memory share must be in (0, 1] (got {})", o.share);
  if (o.max_num_seqs < 1) fail("--max-num-seqs must be at least 1 (got {})", o.max_num_seqs);
  LP_CHECK(o.block_size > 0);
  KvPlan p;
  p.weights_bytes =
      o.weights_bytes.value_or(base_param_count(c) * static_cast<int64_t>(dtype_size(c.torch_dtype)));
  if (lora) {
    p.slots_bytes = lora->slots_bytes;
    p.host_bytes = lora->host_bytes;
  }
  p.kv_dtype = o.kv_dtype.value_or(c.torch_dtype);
  p.block_size = o.block_size;
  p.kv_bytes_per_token =
      kv::KvShape{c.n_layers, c.n_kv_heads, c.head_dim, o.block_size, p.kv_dtype}.bytes_per_token();
  const int64_t block_bytes = p.kv_bytes_per_token * o.block_size;
  LP_CHECK(o.device == "cpu" || o.device == "cuda", "device '{}'", o.device);
  p.device = o.device;
  const bool host_apart = o.device != "cpu";  // the host tier is host memory, the rest device memory
  const int64_t fixed = p.weights_bytes + p.slots_bytes + (host_apart ? 0 : p.host_bytes);

  if (o.kv_cache_tokens > 0) {
    p.sized_by = "--kv-cache-tokens";
    p.kv_blocks = (o.kv_cache_tokens + o.block_size - 1) / o.block_size;
  } else if (o.kv_cache_memory > 0) {
    p.sized_by = "--kv-cache-memory";
    p.kv_blocks = o.kv_cache_memory / block_bytes;
    if (p.kv_blocks == 0)
      p.problem = fmt::format("--kv-cache-memory {} bytes holds no KV block ({} bytes for {} tokens)",
                              o.kv_cache_memory, block_bytes, o.block_size);
  } else {
    int64_t target = 0;
    if (o.memory_budget > 0 || o.memory_available) {
      p.memory_bytes = o.memory_budget > 0 ? o.memory_budget : *o.memory_available;
      p.memory_source = o.memory_budget > 0 ? "--memory-budget" : o.memory_source;
      p.left_bytes = p.memory_bytes - fixed;
      target = p.left_bytes > 0
                   ? static_cast<int64_t>(std::floor(static_cast<double>(p.left_bytes) * o.share))
                   : 0;
      p.sized_by = fmt::format("{:g}% of the memory left", o.share * 100);
      if (p.left_bytes <= 0)
        p.problem = fmt::format(
            "no memory left for the KV cache: weights {} + adapter slots {}{} exceed the {} available "
            "({}); give --kv-cache-memory or --kv-cache-tokens, or lower --max-loras{}",
            format_bytes(p.weights_bytes), format_bytes(p.slots_bytes),
            host_apart ? "" : " + host tier " + format_bytes(p.host_bytes), format_bytes(p.memory_bytes),
            p.memory_source, host_apart ? " / --max-lora-rank" : " / --max-cpu-loras");
    } else {
      p.memory_source = o.memory_source;
      target = kKvFallbackBytes;
      p.sized_by = "the 4 GiB default (the memory could not be read)";
    }
    p.kv_blocks = target / block_bytes;
    // More than every running sequence at full context is never used by them (only by the prefix cache).
    const int64_t max_len =
        o.max_model_len > 0 ? std::min(o.max_model_len, c.max_model_len) : c.max_model_len;
    const int64_t cap = int64_t{o.max_num_seqs} * ((max_len + o.block_size - 1) / o.block_size);
    if (p.kv_blocks > cap) {
      p.kv_blocks = cap;
      p.capped = true;
    }
    if (p.kv_blocks == 0 && p.problem.empty())
      p.problem = fmt::format("the memory left ({}) holds no KV block ({} bytes); give --kv-cache-memory",
                              format_bytes(std::max<int64_t>(0, p.left_bytes)), block_bytes);
  }
  LP_CHECK(p.kv_blocks <= INT32_MAX, "KV cache of {} blocks", p.kv_blocks);
  p.kv_tokens = p.kv_blocks * o.block_size;
  p.kv_bytes = p.kv_tokens * p.kv_bytes_per_token;
  return p;
}

std::string kv_plan_text(const KvPlan& p) {
  std::string s = p.device == "cpu" ? "memory plan:\n"
                                     : fmt::format("memory plan (--device {}: weights, adapter slots and KV cache "
                                                   "in device memory; the host tier in pinned host memory):\n",
                                                   p.device);
  auto row = [&](const std::string& label, int64_t bytes) {
    s += fmt::format("  {:<38} {:>14}  {}\n", label, bytes, format_bytes(bytes));
  };
  row("weights", p.weights_bytes);
  row("adapter slots", p.slots_bytes);
  row("host tier", p.host_bytes);
  if (p.memory_bytes >= 0) {
    row("memory (" + p.memory_source + ")", p.memory_bytes);
    row("memory left", p.left_bytes);
  } else if (!p.memory_source.empty()) {
    s += fmt::format("  {:<38} {:>14}  {}\n", "memory", "-", p.memory_source);
  }
  row(fmt::format("KV cache ({}, {} per token)", dtype_name(p.kv_dtype), p.kv_bytes_per_token), p.kv_bytes);
  s += fmt::format("  {:<38} {:>14}  in {} blocks of {}, sized by {}{}\n", "KV cache tokens", p.kv_tokens,
                   p.kv_blocks, p.block_size, p.sized_by,
                   p.capped ? " (capped at max_num_seqs x max_model_len)" : "");
  if (!p.problem.empty()) s += fmt::format("  NO KV CACHE: {}\n", p.problem);
  return s;
}

nlohmann::json kv_plan_json(const KvPlan& p) {
  return {
      {"device", p.device},
      {"weights_bytes", p.weights_bytes},
      {"memory_bytes", p.memory_bytes},
      {"memory_source", p.memory_source},
      {"memory_left_bytes", p.left_bytes},
      {"kv_dtype", dtype_name(p.kv_dtype)},
      {"kv_bytes_per_token", p.kv_bytes_per_token},
      {"kv_block_size", p.block_size},
      {"kv_blocks", p.kv_blocks},
      {"kv_tokens", p.kv_tokens},
      {"kv_bytes", p.kv_bytes},
      {"kv_sized_by", p.sized_by},
      {"kv_capped", p.capped},
      {"kv_problem", p.problem},
  };
}

}  // namespace lp::lora
