// `loraplex generate`: greedy or sampled generation for one prompt (ids or text); prints the tokens (and the
// text when the model folder has a tokenizer) and the prefill / decode speed.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "core/clock.h"
#include "model/runner.h"
#include "sched/sampler.h"
#include "text/tokenizer.h"

namespace lp::cli {

namespace {

struct GenerateArgs {
  std::string model;
  std::string ids;
  std::string prompt;
  int n = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int top_k = -1;
  float min_p = 0.0f;
  int64_t seed = 0;
  bool ignore_eos = false;
  std::string adapter;
  std::string lora_dtype = "auto";
  int threads = 0;
  bool mmap_weights = false;
  std::string device = "cpu";
  QuantFlags quant;
  std::string kv_cache_dtype = "auto";
};

void run_generate(const GenerateArgs& a) {
  if (a.ids.empty() == a.prompt.empty()) fail("give exactly one of --ids or --prompt");
  if (a.n < 1) fail("-n must be at least 1");
  auto model = load_executor(resolve_device(a.device), a.model, a.mmap_weights, a.quant);
  const auto& cfg = model->config();
  std::optional<text::Tokenizer> tok;
  if (std::filesystem::exists(std::filesystem::path(a.model) / "tokenizer.json"))
    tok.emplace(text::Tokenizer::from_dir(a.model));
  std::vector<int32_t> prompt;
  if (!a.prompt.empty()) {
    if (!tok) fail("--prompt needs a tokenizer.json in {}", a.model);
    prompt = tok->encode(a.prompt, /*add_special_tokens=*/true);
    if (prompt.empty()) fail("the prompt encodes to no tokens");
  } else {
    prompt = parse_ids(a.ids);
  }
  for (int32_t id : prompt)
    if (id >= cfg.vocab_size) fail("token id {} is out of range for vocab size {}", id, cfg.vocab_size);

  ComputePool pool(pool_threads(a.threads));
  model::Runner runner(*model, pool, static_cast<int64_t>(prompt.size()) + a.n + 16, 16,
                       kv_cache_dtype(a.kv_cache_dtype, model->config().torch_dtype));
  sched::SamplingParams sp;
  sp.temperature = a.temperature;
  sp.top_p = a.top_p;
  sp.top_k = a.top_k;
  sp.min_p = a.min_p;
  sp.seed = a.seed;
  sched::Sampler sampler(sp);
  CliAdapters adapters = load_cli_adapters(
      *model, a.adapter.empty() ? std::vector<std::string>{} : std::vector{a.adapter}, a.lora_dtype);
  int32_t slot = -1;
  if (adapters.bank) {
    runner.set_lora(&adapters.bank->view());
    slot = 0;
  }
  int seq = runner.add_sequence();
  std::vector<int32_t> out;
  std::vector<float> row(cfg.vocab_size);

  double t0 = now_seconds();
  model::Runner::Item item{seq, prompt, false, slot};
  const Buffer<float>* logits = &runner.step({&item, 1});
  double t_prefill = now_seconds() - t0;
  double t1 = now_seconds();
  for (int i = 0; i < a.n; ++i) {
    std::copy_n(logits->data(), cfg.vocab_size, row.begin());
    int32_t next = sampler.sample(row, prompt);
    sampler.accept(next);
    out.push_back(next);
    bool eos = std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), next) != cfg.eos_token_ids.end();
    if ((eos && !a.ignore_eos) || i + 1 == a.n) break;
    if (runner.length(seq) + 1 > cfg.max_model_len) break;
    model::Runner::Item d{seq, {&out.back(), 1}, false, slot};
    logits = &runner.step({&d, 1});
  }
  double t_decode = now_seconds() - t1;

  std::printf("tokens:");
  for (int32_t t : out) std::printf(" %d", t);
  std::printf("\n");
  if (tok) std::printf("text: %s\n", tok->decode(out, /*skip_special_tokens=*/false).c_str());
  std::printf("prefill: %zu tokens in %.3f s (%.1f tokens/s); decode: %zu tokens in %.3f s (%.1f tokens/s)\n",
              prompt.size(), t_prefill, prompt.size() / t_prefill, out.size(), t_decode,
              out.size() > 1 ? (out.size() - 1) / t_decode : 0.0);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* c = app.add_subcommand("generate", "Generate tokens for one prompt");
  c->add_option("--model", args->model, "Model folder")->required();
  c->add_option("--ids", args->ids, "Prompt token ids, comma-separated");
  c->add_option("--prompt", args->prompt, "Prompt text (needs tokenizer.json)");
  c->add_option("-n,--max-tokens", args->n, "Tokens to generate");
  c->add_option("--temperature", args->temperature, "0 = greedy");
  c->add_option("--top-p", args->top_p, "Nucleus sampling");
  c->add_option("--top-k", args->top_k, "Top-k sampling (-1 = off)");
  c->add_option("--min-p", args->min_p, "Min-p sampling");
  c->add_option("--seed", args->seed, "Sampling seed");
  c->add_flag("--ignore-eos", args->ignore_eos, "Keep generating after EOS");
  c->add_option("--adapter", args->adapter, "PEFT LoRA adapter folder");
  c->add_option("--lora-dtype", args->lora_dtype, "Adapter slot dtype: bf16 | f32 | auto");
  c->add_option("--threads", args->threads,
                "Compute threads (default: the CPUs this process may use: affinity mask, cgroup CPU quota)");
  c->add_flag("--mmap-weights", args->mmap_weights, kMmapWeightsHelp);
  add_quant_flags(c, args->quant);
  add_device_flag(c, args->device);
  c->add_option("--kv-cache-dtype", args->kv_cache_dtype, kKvCacheDtypeHelp)->check(dtype_flag_check());
  c->callback([args] { run_generate(*args); });
}

}  // namespace lp::cli
