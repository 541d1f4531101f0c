// `loraplex plan --model DIR --max-loras N --max-lora-rank R ...`: the LoRA server's memory plan from the
// model's config.json alone (no weights needed): bytes per slot (per target module and in total), all slots,
// the host tier at full rank, the base weights and the KV-cache tokens left in a memory budget.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "lora/plan.h"
#include "model/config.h"

namespace lp::cli {

void add_plan_command(CLI::App& app) {
  struct Args {
    std::string model;
    int max_loras = 0, max_lora_rank = 0, max_cpu_loras = 0;
    std::string lora_dtype = "auto", memory_budget, kv_cache_dtype = "auto";
    std::vector<std::string> target_modules;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("plan", "Print the LoRA memory plan of a model from its config.json");
  c->add_option("--model", args->model, "Model folder (only config.json is read)")->required();
  c->add_option("--max-loras", args->max_loras, "Adapter slots")->required();
  c->add_option("--max-lora-rank", args->max_lora_rank, "Largest adapter rank a slot holds")->required();
  c->add_option("--lora-dtype", args->lora_dtype, "bf16 | f16 | f32 | auto (= the model's torch_dtype)");
  c->add_option("--target-modules", args->target_modules,
                "Projections with slot memory (q_proj ... down_proj, or all; default all)");
  c->add_option("--max-cpu-loras", args->max_cpu_loras, "Host-tier adapters (default = --max-loras)");
  c->add_option("--memory-budget", args->memory_budget,
                "Bytes for weights + adapters + KV cache (e.g. 16GiB)");
  c->add_option("--kv-cache-dtype", args->kv_cache_dtype, kKvCacheDtypeHelp)->check(dtype_flag_check());
  c->add_flag("--json", args->json, "Print one JSON object");
  c->callback([args] {
    model::ModelConfig cfg = model::ModelConfig::from_dir(args->model);
    lora::PlanOptions o;
    o.max_loras = args->max_loras;
    o.max_lora_rank = args->max_lora_rank;
    o.lora_dtype = lora::parse_lora_dtype(args->lora_dtype, cfg.torch_dtype);
    o.modules = lora::parse_module_set(args->target_modules);
    o.max_cpu_loras = args->max_cpu_loras;
    o.kv_dtype = kv_cache_dtype(args->kv_cache_dtype, cfg.torch_dtype);
    if (!args->memory_budget.empty()) o.memory_budget = lora::parse_byte_size(args->memory_budget);
    lora::MemoryPlan p = lora::plan_memory(cfg, o);
    if (args->json)
      std::printf("%s\n", lora::plan_json(p).dump(2).c_str());
    else
      std::printf("%s", lora::plan_text(p).c_str());
  });
}

}  // namespace lp::cli
