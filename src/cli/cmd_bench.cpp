// `loraplex bench`: prefill and decode throughput at batch B, against the memory-bandwidth bound measured
// in the same run (decode of a batch reads every weight once per step: bound = weight bytes / bandwidth).
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "core/clock.h"
#include "model/demo_model.h"
#include "model/runner.h"
#include "sched/sampler.h"

namespace lp::cli {

namespace {

struct BenchArgs {
  std::string model;
  int batch = 1;
  int prompt_len = 256;
  int gen = 32;
  int repeats = 3;
  bool json = false;
  int threads = 0;
};

double median(std::vector<double> v) {
  LP_CHECK(!v.empty());
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void run_bench(const BenchArgs& a) {
  if (a.batch < 1 || a.prompt_len < 1 || a.gen < 1 || a.repeats < 1)
    fail("--batch, --prompt-len, --gen and --repeats must be at least 1");
  auto model = model::Model::load(a.model);
  const auto& cfg = model->config();
  if (a.prompt_len + a.gen > cfg.max_model_len)
    fail("--prompt-len + --gen = {} exceeds the context length {}", a.prompt_len + a.gen, cfg.max_model_len);
  ComputePool pool(pool_threads(a.threads));

  // Bandwidth first, on a buffer far larger than the caches.
  double bw = kernels::measure_read_bandwidth(pool, size_t{512} << 20, 5);

  const int B = a.batch;
  const int64_t per_seq = a.prompt_len + a.gen + 16;
  model::Runner runner(*model, pool, per_seq * B);
  model::DemoRng rng(7, "bench-prompts");
  std::vector<std::vector<int32_t>> prompts(B);
  for (auto& p : prompts) {
    p.resize(a.prompt_len);
    for (auto& id : p) id = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(cfg.vocab_size));
  }

  std::vector<double> prefill_times, step_times;
  std::vector<int32_t> next(B);
  for (int rep = 0; rep < a.repeats; ++rep) {
    std::vector<int> seqs(B);
    std::vector<model::Runner::Item> items(B);
    for (int b = 0; b < B; ++b) {
      seqs[b] = runner.add_sequence();
      items[b] = {seqs[b], prompts[b], false};
    }
    double t0 = now_seconds();
    const Buffer<float>* logits = &runner.step(items);
    prefill_times.push_back(now_seconds() - t0);
    for (int g = 0; g < a.gen; ++g) {
      for (int b = 0; b < B; ++b)
        next[b] = sched::argmax({logits->data() + static_cast<size_t>(b) * cfg.vocab_size,
                                 static_cast<size_t>(cfg.vocab_size)});
      for (int b = 0; b < B; ++b) items[b] = {seqs[b], {&next[b], 1}, false};
      double s0 = now_seconds();
      logits = &runner.step(items);
      step_times.push_back(now_seconds() - s0);
    }
    for (int s : seqs) runner.release_sequence(s);
  }

  const auto& w = model->weights();
  double prefill_s = median(prefill_times);
  double step_s = median(step_times);
  double bound_s = static_cast<double>(w.bytes_per_decode_step) / bw;
  int64_t rss = resident_bytes();
  int64_t kv_bytes = runner.cache().bytes();
  nlohmann::json out = {
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
      {"weight_bytes_per_step", w.bytes_per_decode_step},
      {"decode_bound_ms", bound_s * 1e3},
      {"decode_roofline_ratio", bound_s / step_s},
      {"weight_bytes", w.total_bytes},
      {"kv_cache_bytes", kv_bytes},
      {"rss_bytes", rss},
      {"rss_over_weights_plus_kv", static_cast<double>(rss) / static_cast<double>(w.total_bytes + kv_bytes)},
  };
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model %s  isa %s  threads %d  batch %d  prompt %d  gen %d\n", a.model.c_str(),
              kernels::isa_name(), pool.size(), B, a.prompt_len, a.gen);
  std::printf("memory read bandwidth     %8.2f GB/s\n", bw / 1e9);
  std::printf("prefill                   %8.1f tokens/s  (%.3f s for %d x %d tokens, median of %d)\n",
              B * a.prompt_len / prefill_s, prefill_s, B, a.prompt_len, a.repeats);
  std::printf("decode                    %8.1f tokens/s  (step %.2f ms, median of %zu steps)\n", B / step_s,
              step_s * 1e3, step_times.size());
  std::printf("decode bandwidth bound    %8.2f ms/step  (%.1f MB of weights per step)\n", bound_s * 1e3,
              w.bytes_per_decode_step / 1e6);
  std::printf("decode roofline ratio     %8.3f  (bound / measured step; 1.0 = at the bound)\n", bound_s / step_s);
  std::printf("resident memory           %8.1f MB  = %.3f x (weights %.1f MB + KV %.1f MB)\n", rss / 1e6,
              static_cast<double>(rss) / static_cast<double>(w.total_bytes + kv_bytes), w.total_bytes / 1e6,
              kv_bytes / 1e6);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* c = app.add_subcommand("bench", "Measure prefill and decode throughput against the bandwidth bound");
  c->add_option("--model", args->model, "Model folder")->required();
  c->add_option("--batch", args->batch, "Concurrent sequences");
  c->add_option("--prompt-len", args->prompt_len, "Prompt tokens per sequence");
  c->add_option("--gen", args->gen, "Decode steps");
  c->add_option("--repeats", args->repeats, "Repetitions (medians are reported)");
  c->add_flag("--json", args->json, "Print one JSON object");
  c->add_option("--threads", args->threads, "Compute threads (default: all cores)");
  c->callback([args] { run_bench(*args); });
}

}  // namespace lp::cli
