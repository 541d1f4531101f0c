// `loraplex bench`: prefill and decode throughput at batch B, against bounds measured in the same run.
//   - the memory-bandwidth bound of decode: a step reads every weight once (bound = weight bytes /
//   bandwidth);
//   - with --adapters K: the B requests are spread over K distinct adapters (request b uses adapter b % K);
//     base-only, fused (SGMV/BGMV) and naive (per token, no grouping) runs are interleaved, and the LoRA
//     overhead (step with K adapters / base-only step) is printed next to the byte bound
//     ((base bytes + K x adapter bytes) / base bytes);
//   - with --stack S > 1 as well: a fourth interleaved run in which request b stacks S adapters (b % K, then
//     (b + 1) % K, ... at scales 1, 0.5, ...), so the LoRA part of a stacked step is compared with the
//     one-adapter step measured in the same minutes.
// With --device cuda the benchmark is cmd_bench_cuda.cpp's (other bounds: the device's copy bandwidth and
// GEMM rate).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/cmd_bench.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "core/clock.h"
#include "core/stats.h"
#include "lora/adapter.h"
#include "lora/demo_adapter.h"
#include "model/demo_model.h"
#include "model/runner.h"
#include "sched/sampler.h"

namespace lp::cli {

namespace {

enum class Mode { kBase, kFused, kNaive, kStacked };  // base only; SGMV/BGMV grouped; one group per token;
                                                   // --stack adapters per request, grouped

void run_bench(const BenchArgs& a) {
  if (a.batch < 1 || a.prompt_len < 1 || a.gen < 1 || a.repeats < 1 || a.adapters < 0 || a.rank < 1 || a.stack < 1)
    fail("--batch, --prompt-len, --gen, --repeats, --rank, --stack must be at least 1 and --adapters at least 0");
  if (a.stack > 1 && a.stack > a.adapters) fail("--stack {} needs at least as many --adapters", a.stack);
  auto model = load_model(a.model, a.mmap_weights, a.quant);
  const auto& cfg = model->config();
  if (a.prompt_len + a.gen > cfg.max_model_len)
    fail("--prompt-len + --gen = {} exceeds the context length {}", a.prompt_len + a.gen, cfg.max_model_len);
  ComputePool pool(pool_threads(a.threads));
  // The machine's bandwidth drifts (shared hosts): probe it before every cycle and use the median, so the
  // roofline ratio compares numbers taken in the same minutes.
  std::vector<double> bws;

  const int B = a.batch, K = a.adapters;
  model::Runner runner(*model, pool, static_cast<int64_t>(a.prompt_len + a.gen + 16) * B, 16,
                       kv_cache_dtype(a.kv_cache_dtype, model->config().torch_dtype));
  const std::vector<std::vector<int32_t>> prompts = bench_prompts(B, a.prompt_len, cfg.vocab_size);

  // K synthetic adapters, rank R on all seven projections, written in PEFT layout and loaded like any other.
  CliAdapters adapters;
  size_t adapter_bytes = 0;
  std::filesystem::path tmp;
  if (K > 0) {
    tmp = std::filesystem::temp_directory_path() / ("loraplex-bench-" + std::to_string(::getpid()));
    adapters = load_cli_adapters(*model, write_bench_adapters(tmp, K, a.rank, cfg), a.lora_dtype);
    std::filesystem::remove_all(tmp);
    adapter_bytes = lora::slot_bytes(cfg, a.rank, adapters.bank->dtype(), lora::kAllModules);
    runner.set_lora(&adapters.bank->view());
  }
  std::vector<model::Runner::LoraStack> no_slots(B), slots(B), stacked(B);
  for (int b = 0; b < B && K > 0; ++b) {
    slots[b] = model::Runner::LoraStack(b % K);
    stacked[b] = model::Runner::LoraStack(b % K);
    for (int i = 1; i < a.stack; ++i) stacked[b].more.emplace_back((b + i) % K, 1.f / static_cast<float>(1 << i));
  }

  std::vector<Mode> modes = {Mode::kBase};
  if (K > 0) modes = {Mode::kBase, Mode::kFused, Mode::kNaive};
  if (K > 0 && a.stack > 1) modes.push_back(Mode::kStacked);
  std::map<Mode, BenchTimings> t;
  for (int rep = 0; rep < a.repeats; ++rep) {
    bws.push_back(kernels::measure_read_bandwidth(pool, size_t{512} << 20, 3));
    for (size_t i = 0; i < modes.size(); ++i) {
      Mode m = modes[(i + rep) % modes.size()];  // rotate the order so drift hits every mode alike
      model->set_lora_grouping(m != Mode::kNaive);
      run_cycle(*model, runner, prompts, a.gen, m == Mode::kBase ? no_slots : m == Mode::kStacked ? stacked : slots, t[m]);
    }
  }
  model->set_lora_grouping(true);
  bws.push_back(kernels::measure_read_bandwidth(pool, size_t{512} << 20, 3));
  const double bw = median(bws);

  const auto& w = model->weights();
  const double base_bytes = static_cast<double>(w.bytes_per_decode_step);
  double prefill_s = median(t[Mode::kBase].prefill);
  double step_s = median(t[Mode::kBase].steps);
  double bound_s = base_bytes / bw;
  int64_t rss = resident_bytes();
  // The weights as held after load (quantized ones at their quantized size): the embedding, and what a
  // decode step reads unless lm_head is the embedding itself.
  const int64_t weights_resident = kernels::mat_bytes(w.embed) +
                                   static_cast<int64_t>(w.bytes_per_decode_step) -
                                   (w.lm_head.data == w.embed.data ? kernels::mat_bytes(w.lm_head) : 0);
  int64_t kv_bytes = runner.cache().bytes();
  // What attention reads per decode step besides the weights (K and V of every cached token), averaged over
  // the steps; not part of the roofline bound, which counts weight bytes only.
  const double kv_read_bytes =
      static_cast<double>(runner.cache().shape().bytes_per_token()) * B * (a.prompt_len + (a.gen + 1) / 2.0);
  nlohmann::ordered_json out = {
      {"model", a.model},
      {"isa", kernels::isa_name()},
      {"threads", pool.size()},
      {"batch", B},
      {"prompt_len", a.prompt_len},
      {"gen", a.gen},
      {"bandwidth_gb_per_s", bw / 1e9},
      {"prefill_s", prefill_s},
      {"prefill_tokens_per_s", B * a.prompt_len / prefill_s},
      {"decode_step_ms", step_s * 1e3},
      {"decode_tokens_per_s", B / step_s},
      {"quantization", w.quantization},
      {"quantize_lm_head", a.quant.quantize_lm_head},
      {"weight_bytes_per_step", w.bytes_per_decode_step},
      {"decode_bound_ms", bound_s * 1e3},
      {"decode_roofline_ratio", bound_s / step_s},
      {"weight_bytes", w.total_bytes},
      {"kv_cache_bytes", kv_bytes},
      {"kv_cache_dtype", dtype_name(runner.cache().shape().dtype)},
      {"kv_bytes_read_per_step", kv_read_bytes},
      {"rss_bytes", rss},
      {"weight_resident_bytes", weights_resident},
      {"rss_over_weights_plus_kv",
       static_cast<double>(rss) / static_cast<double>(weights_resident + kv_bytes)},
  };
  nlohmann::ordered_json by_format = nlohmann::ordered_json::object();
  for (const auto& [format, n] : w.bytes_by_format()) by_format[format] = n;
  out["weight_bytes_by_format"] = by_format;
  if (K > 0) {
    double fused = median(t[Mode::kFused].steps), naive = median(t[Mode::kNaive].steps);
    out["lora_adapters"] = K;
    out["lora_rank"] = a.rank;
    out["lora_dtype"] = dtype_name(adapters.bank->dtype());
    out["adapter_bytes"] = adapter_bytes;
    out["decode_step_ms_lora"] = fused * 1e3;
    out["decode_step_ms_naive"] = naive * 1e3;
    out["decode_tokens_per_s_lora"] = B / fused;
    out["lora_overhead"] = fused / step_s;
    out["lora_byte_bound"] = (base_bytes + K * static_cast<double>(adapter_bytes)) / base_bytes;
    out["lora_overhead_over_byte_bound"] = (fused / step_s) / out["lora_byte_bound"].get<double>();
    out["lora_part_ms_fused"] = (fused - step_s) * 1e3;
    out["lora_part_ms_naive"] = (naive - step_s) * 1e3;
    out["lora_part_speedup_fused_vs_naive"] = (naive - step_s) / std::max(fused - step_s, 1e-9);
    out["prefill_s_lora"] = median(t[Mode::kFused].prefill);
    out["prefill_lora_over_base"] = median(t[Mode::kFused].prefill) / prefill_s;
    if (a.stack > 1) {
      const double stacked_s = median(t[Mode::kStacked].steps);
      out["lora_stack"] = a.stack;
      out["decode_step_ms_stacked"] = stacked_s * 1e3;
      out["lora_part_ms_stacked"] = (stacked_s - step_s) * 1e3;
      out["lora_part_stacked_over_fused"] = (stacked_s - step_s) / std::max(fused - step_s, 1e-9);
    }
  }
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model %s  isa %s  threads %d  batch %d  prompt %d  gen %d\n", a.model.c_str(),
              kernels::isa_name(), pool.size(), B, a.prompt_len, a.gen);
  std::printf("weights                   %8s  (quantization; streamed per step: %s)\n",
              w.quantization.c_str(), bytes_by_format_text(w.bytes_by_format()).c_str());
  std::printf("memory read bandwidth     %8.2f GB/s  (median of %zu probes between cycles)\n", bw / 1e9,
              bws.size());
  std::printf("prefill                   %8.1f tokens/s  (%.3f s for %d x %d tokens, median of %d)\n",
              B * a.prompt_len / prefill_s, prefill_s, B, a.prompt_len, a.repeats);
  std::printf("decode                    %8.1f tokens/s  (step %.2f ms, median of %zu steps)\n", B / step_s,
              step_s * 1e3, t[Mode::kBase].steps.size());
  std::printf("decode bandwidth bound    %8.2f ms/step  (%.1f MB of weights per step)\n", bound_s * 1e3,
              base_bytes / 1e6);
  std::printf("decode roofline ratio     %8.3f  (bound / measured step; 1.0 = at the bound)\n",
              bound_s / step_s);
  std::printf("KV cache                  %8s  (attention also reads %.1f MB of K/V per step on average)\n",
              std::string(dtype_name(runner.cache().shape().dtype)).c_str(), kv_read_bytes / 1e6);
  std::printf("resident memory           %8.1f MB  = %.3f x (weights %.1f MB + KV %.1f MB)\n", rss / 1e6,
              static_cast<double>(rss) / static_cast<double>(weights_resident + kv_bytes),
              weights_resident / 1e6, kv_bytes / 1e6);
  if (K > 0) {
    std::printf("LoRA: %d adapters, rank %d, %s, %.1f MB each; request b uses adapter b %% %d\n", K, a.rank,
                out["lora_dtype"].get<std::string>().c_str(), adapter_bytes / 1e6, K);
    std::printf("  decode step  base %.2f ms  fused %.2f ms  naive %.2f ms\n", step_s * 1e3,
                out["decode_step_ms_lora"].get<double>(), out["decode_step_ms_naive"].get<double>());
    std::printf("  LoRA overhead %.3f x  vs byte bound %.3f x  (ratio %.3f)\n",
                out["lora_overhead"].get<double>(), out["lora_byte_bound"].get<double>(),
                out["lora_overhead_over_byte_bound"].get<double>());
    std::printf("  LoRA part of a step: fused %.2f ms, naive %.2f ms (fused %.2f x faster)\n",
                out["lora_part_ms_fused"].get<double>(), out["lora_part_ms_naive"].get<double>(),
                out["lora_part_speedup_fused_vs_naive"].get<double>());
    std::printf("  prefill with adapters / base-only prefill: %.3f\n",
                out["prefill_lora_over_base"].get<double>());
    if (a.stack > 1)
      std::printf("  stacks of %d adapters per request: step %.2f ms, LoRA part %.2f ms = %.3f x one adapter's\n",
                  a.stack, out["decode_step_ms_stacked"].get<double>(), out["lora_part_ms_stacked"].get<double>(),
                  out["lora_part_stacked_over_fused"].get<double>());
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* c =
      app.add_subcommand("bench", "Measure prefill and decode throughput against the bandwidth bound");
  c->add_option("--model", args->model, "Model folder")->required();
  c->add_option("--batch", args->batch, "Concurrent sequences");
  c->add_option("--prompt-len", args->prompt_len, "Prompt tokens per sequence");
  c->add_option("--gen", args->gen, "Decode steps");
  c->add_option("--repeats", args->repeats, "Repetitions (medians are reported)");
  c->add_option("--adapters", args->adapters,
                "Spread the batch over K distinct synthetic adapters (0: base only)");
  c->add_option("--stack", args->stack,
                "Also time a run where each request stacks S of the K adapters (per-request stacking)");
  c->add_option("--rank", args->rank, "Adapter rank (all seven projections)");
  c->add_option("--lora-dtype", args->lora_dtype, "Adapter slot dtype: bf16 | f32 | auto");
  c->add_flag("--json", args->json, "Print one JSON object");
  c->add_option("--threads", args->threads,
                "Compute threads (default: the CPUs this process may use: affinity mask, cgroup CPU quota)");
  c->add_flag("--mmap-weights", args->mmap_weights, kMmapWeightsHelp);
  add_quant_flags(c, args->quant);
  c->add_option("--kv-cache-dtype", args->kv_cache_dtype, kKvCacheDtypeHelp)->check(dtype_flag_check());
  add_device_flag(c, args->device);
  c->callback([args] {
    if (resolve_device(args->device) == model::Device::kCuda)
      run_bench_cuda(*args);
    else
      run_bench(*args);
  });
}

std::vector<std::string> write_bench_adapters(const std::filesystem::path& dir, int n, int rank,
                                              const model::ModelConfig& cfg) {
  std::vector<std::string> dirs;
  for (int i = 0; i < n; ++i) {
    dirs.push_back((dir / ("a" + std::to_string(i))).string());
    lora::write_demo_adapter(dirs.back(), cfg, lora::demo_adapter_spec(i, rank, false, 99, DType::kBF16));
  }
  return dirs;
}

std::vector<std::vector<int32_t>> bench_prompts(int B, int len, int vocab) {
  model::DemoRng rng(7, "bench-prompts");
  std::vector<std::vector<int32_t>> prompts(B);
  for (auto& p : prompts) {
    p.resize(len);
    for (auto& id : p) id = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(vocab));
  }
  return prompts;
}

// One cycle: B prompts prefilled in one call, then `gen` decode steps of B tokens (greedy). Runner::step
// returns once the logits are on the host, so a host clock around it also times a device's work.
void run_cycle(model::Executor& m, model::Runner& runner, const std::vector<std::vector<int32_t>>& prompts,
               int gen, const std::vector<model::Runner::LoraStack>& slots, BenchTimings& t) {
  const int B = static_cast<int>(prompts.size());
  const int V = m.config().vocab_size;
  std::vector<int> seqs(B);
  std::vector<model::Runner::Item> items(B);
  std::vector<int32_t> next(B);
  for (int b = 0; b < B; ++b) {
    seqs[b] = runner.add_sequence();
    items[b] = {seqs[b], prompts[b], false, slots[b]};
  }
  double t0 = now_seconds();
  const Buffer<float>* logits = &runner.step(items);
  t.prefill.push_back(now_seconds() - t0);
  for (int g = 0; g < gen; ++g) {
    for (int b = 0; b < B; ++b)
      next[b] = sched::argmax({logits->data() + static_cast<size_t>(b) * V, static_cast<size_t>(V)});
    for (int b = 0; b < B; ++b) items[b] = {seqs[b], {&next[b], 1}, false, slots[b]};
    double s0 = now_seconds();
    logits = &runner.step(items);
    t.steps.push_back(now_seconds() - s0);
  }
  for (int s : seqs) runner.release_sequence(s);
}

}  // namespace lp::cli
