// `loraplex plan --model DIR [--max-loras N --max-lora-rank R ...]`: the server's memory plan from the
// model's config.json alone (no weights needed): bytes per slot (per target module and in total), all slots,
// the host tier at full rank, the base weights, and the KV cache sized exactly as `serve` sizes it for the
// same flags (lora/kv_plan.h: --kv-cache-tokens, --kv-cache-memory, else a share of the memory measured now,
// or of --memory-budget; with --device cuda, of the device's memory). With --quantization int8 the weights are counted as loaded (lora::plan_weights):
// bytes per format, bytes a decode step reads, and the smaller weights leave more room for the KV cache.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "lora/kv_plan.h"
#include "lora/plan.h"
#include "model/config.h"

namespace lp::cli {

void add_plan_command(CLI::App& app) {
  struct Args {
    std::string model;
    int max_loras = 0, max_lora_rank = 16, max_cpu_loras = 0;
    std::string lora_dtype = "auto", memory_budget;
    std::vector<std::string> target_modules;
    KvFlags kv;
    QuantFlags quant;
    std::string device = "cpu";
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("plan", "Print the server's memory plan of a model from its config.json");
  c->add_option("--model", args->model, "Model folder (only config.json is read)")->required();
  c->add_option("--max-loras", args->max_loras,
                "Adapter slots (default: 0, no LoRA, as serve without LoRA flags)");
  c->add_option("--max-lora-rank", args->max_lora_rank,
                "Largest adapter rank a slot holds (default 16, as serve)");
  c->add_option("--lora-dtype", args->lora_dtype, "bf16 | f16 | f32 | auto (= the model's torch_dtype)");
  c->add_option("--target-modules", args->target_modules,
                "Projections with slot memory (q_proj ... down_proj, or all; default all)");
  c->add_option("--max-cpu-loras", args->max_cpu_loras, "Host-tier adapters (default = --max-loras)");
  c->add_option("--memory-budget", args->memory_budget,
                "Plan in this much memory (e.g. 32GiB) instead of what this machine has free now");
  c->add_option("--kv-cache-dtype", args->kv.kv_cache_dtype, kKvCacheDtypeHelp)->check(dtype_flag_check());
  c->add_option("--kv-cache-tokens", args->kv.kv_cache_tokens, kKvCacheTokensHelp);
  c->add_option("--kv-cache-memory", args->kv.kv_cache_memory, kKvCacheMemoryHelp);
  c->add_option("--max-num-seqs", args->kv.max_num_seqs,
                "Running requests at most (as serve; caps the KV cache)");
  c->add_option("--max-model-len", args->kv.max_model_len, "Context length cap (default: the model's)");
  add_quant_flags(c, args->quant);
  c->add_option("--device", args->device,
                "Plan for: cpu | cuda (device memory; no GPU needed here with --memory-budget) | auto")
      ->capture_default_str();
  c->add_flag("--json", args->json, "Print one JSON object");
  c->callback([args] {
    check_quantization_flag(args->quant.quantization);
    model::ModelConfig cfg = model::ModelConfig::from_dir(args->model);
    const model::LoadOptions load = load_options(args->quant, cfg);
    const lora::WeightPlan weights = lora::plan_weights(cfg, load);
    std::optional<lora::MemoryPlan> p;
    if (args->max_loras > 0 || args->max_cpu_loras > 0) {
      lora::PlanOptions o;
      o.max_loras = args->max_loras;
      o.max_lora_rank = args->max_lora_rank;
      o.lora_dtype = lora::parse_lora_dtype(args->lora_dtype, cfg.torch_dtype);
      o.modules = lora::parse_module_set(args->target_modules);
      o.max_cpu_loras = args->max_cpu_loras;
      o.kv_dtype = kv_cache_dtype(args->kv.kv_cache_dtype, cfg.torch_dtype);
      p = lora::plan_memory(cfg, o);
    }
    lora::KvPlanOptions ko = kv_plan_options(args->kv, cfg.torch_dtype);
    // cuda is planned whether or not this machine has the device (an operator plans for the GPU host).
    const model::Device device = args->device == "cuda" ? model::Device::kCuda : resolve_device(args->device);
    check_device_supports(device, load, cfg);
    plan_on_device(ko, device);
    if (!args->memory_budget.empty()) ko.memory_budget = lora::parse_byte_size(args->memory_budget);
    ko.weights_bytes = weights.resident_bytes;
    lora::KvPlan kv = lora::plan_kv_cache(cfg, p ? &*p : nullptr, ko);
    if (args->json) {
      nlohmann::json j = p ? lora::plan_json(*p) : nlohmann::json::object();
      j.update(lora::kv_plan_json(kv));
      j.update(lora::weight_plan_json(weights));
      if (!args->memory_budget.empty()) j["memory_budget"] = ko.memory_budget;
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s", lora::weight_plan_text(weights).c_str());
      if (p) std::printf("%s", lora::plan_text(*p).c_str());
      std::printf("%s", lora::kv_plan_text(kv).c_str());
    }
  });
}

}  // namespace lp::cli
