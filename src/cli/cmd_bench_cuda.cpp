// `loraplex bench --device cuda`: the CUDA executor against the device's own ceilings, measured in the same
// run (cuda/probe.h):
//   - the device-to-device copy bandwidth (bytes read + bytes written per second): a decode step reads every
//     weight once, so its bound is weight bytes per step / that rate; batch-1 decode is reported as the
//     fraction of the bound it reaches;
//   - the cuBLAS BF16 GEMM rate (8192³): prefill of --batch prompts is reported as the fraction of that rate
//     its FLOPs reach, FLOPs = B x [2 x P x (projection weights of all layers) + 2 x P(P+1) x q_dim x layers
//     (causal QKᵀ and PV) + 2 x hidden x vocab (lm_head, one row per sequence)] for B prompts of P tokens;
//   - decode at --batch B, base only; with --adapters K as well: the B sequences over K adapters (sequence b
//     on adapter b % K) and all B on one adapter, interleaved with the base run, rank --rank on all seven
//     projections: the mixed / one-adapter tokens/s ratio and the LoRA overhead of a step;
//   - the host → slot load of one adapter (lora::SlotBank on the executor's slot memory, timed around a
//     device synchronize) and, through lora::AdapterManager, a full host → slot acquire and a slot hit.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/cmd_bench.h"
#include "cli/common.h"
#include "core/check.h"
#include "core/clock.h"
#include "core/stats.h"
#include "cuda/probe.h"
#include "lora/adapter.h"
#include "lora/adapter_manager.h"
#include "lora/demo_adapter.h"
#include "lora/plan.h"
#include "model/demo_model.h"
#include "model/runner.h"
#include "sched/sampler.h"

namespace lp::cli {

namespace {

// Probe sizes: a copy far larger than the L2 cache, and a GEMM large enough to fill the chip.
constexpr size_t kCopyBytes = size_t{1} << 30;
constexpr int64_t kGemmDim = 8192;

enum class GpuMode { kBase, kMixed, kSingle };  // no adapter; sequence b on adapter b % K; all on adapter 0


// FLOPs of prefilling B prompts of P tokens (the formula in the file comment).
double prefill_flops(const model::ModelConfig& c, int B, int P) {
  double linear = 0;  // weights of one layer's projections
  for (int p = 0; p < model::kNumProj; ++p) {
    auto [in, out] = model::proj_shape(c, static_cast<model::Proj>(p));
    linear += static_cast<double>(in) * out;
  }
  const double per_seq = 2.0 * P * linear * c.n_layers +
                         2.0 * P * (P + 1.0) * c.q_dim() * c.n_layers +
                         2.0 * static_cast<double>(c.hidden_size) * c.vocab_size;
  return B * per_seq;
}

struct LoadTimes {
  double slot_load_ms = 0;         // SlotBank::load + device synchronize (median)
  double manager_load_ms = 0;      // AdapterManager::acquire that copies host → slot + synchronize (median)
  double hit_ms = 0;               // AdapterManager::acquire of the adapter already in a slot (median)
  size_t adapter_bytes = 0;        // what one load copies
  int samples = 0;
};

// Host → slot load and slot hit of adapters `dirs[0]`, `dirs[1]` (rank `rank`, all seven projections).
LoadTimes time_adapter_loads(model::Executor& exec, const std::vector<std::string>& dirs, int rank, DType dt) {
  LP_CHECK(dirs.size() >= 2, "the load timing needs two adapters");
  const model::ModelConfig& cfg = exec.config();
  constexpr int kSamples = 21;
  LoadTimes r;
  r.samples = kSamples;
  {
    // Two slots, loaded alternately: each load copies the whole adapter into a slot the device is not using.
    lora::PackedAdapter packed =
        lora::pack_adapter(lora::load_adapter(dirs[0], lora::base_shapes(cfg)), dt, exec.slot_memory());
    r.adapter_bytes = packed.bytes();
    lora::SlotBank bank(cfg, 2, rank, dt, lora::kAllModules, exec.slot_memory());
    bank.load(0, packed);  // warm-up: first-touch costs stay out of the samples
    cuda::device_synchronize();
    std::vector<double> ms;
    for (int i = 0; i < kSamples; ++i) {
      double t0 = now_seconds();
      bank.load(1 - i % 2, packed);
      cuda::device_synchronize();
      ms.push_back((now_seconds() - t0) * 1e3);
    }
    r.slot_load_ms = median(ms);
  }
  // The manager with one slot and two host places: acquiring the adapter not in the slot evicts the other
  // (no holders) and copies host → slot inside acquire(); acquiring the one in the slot is a hit.
  lora::ManagerOptions o;
  o.max_loras = 1;
  o.max_cpu_loras = 2;
  o.max_lora_rank = rank;
  o.lora_dtype = dt;
  o.slot_memory = exec.slot_memory();
  lora::AdapterManager mgr(cfg, o);
  const std::string names[2] = {"bench-a", "bench-b"};
  for (int i = 0; i < 2; ++i) mgr.register_adapter(names[i], dirs[i]);
  auto acquire_ready = [&](const std::string& name) {
    for (int tries = 0; tries < 1000; ++tries) {
      lora::AdapterManager::Acquire a = mgr.acquire(name);
      if (a.status == lora::AdapterManager::Status::kReady) return a.slot;
      if (a.status != lora::AdapterManager::Status::kLoading)
        fail("bench: acquire of adapter {} failed (status {}): {}", name, static_cast<int>(a.status), a.error);
      mgr.wait_for_loads();
    }
    fail("bench: adapter {} never became ready", name);
  };
  for (int i = 0; i < 2; ++i) mgr.release(acquire_ready(names[i]));  // both in the host tier now
  cuda::device_synchronize();
  std::vector<double> load_ms, hit_ms;
  for (int i = 0; i < kSamples; ++i) {
    const std::string& name = names[i % 2];  // not the one in the slot: a host → slot copy
    double t0 = now_seconds();
    lora::AdapterManager::Acquire a = mgr.acquire(name);
    cuda::device_synchronize();
    load_ms.push_back((now_seconds() - t0) * 1e3);
    if (a.status != lora::AdapterManager::Status::kReady)
      fail("bench: host → slot acquire of {} answered status {}", name, static_cast<int>(a.status));
    mgr.release(a.slot);
    for (int h = 0; h < 10; ++h) {  // now in the slot: hits
      double h0 = now_seconds();
      lora::AdapterManager::Acquire b = mgr.acquire(name);
      hit_ms.push_back((now_seconds() - h0) * 1e3);
      if (b.status != lora::AdapterManager::Status::kReady || b.slot != a.slot)
        fail("bench: a slot hit of {} answered status {}, slot {}", name, static_cast<int>(b.status), b.slot);
      mgr.release(b.slot);
    }
  }
  r.manager_load_ms = median(load_ms);
  r.hit_ms = median(hit_ms);
  return r;
}

}  // namespace

void run_bench_cuda(const BenchArgs& a) {
  if (a.batch < 1 || a.prompt_len < 1 || a.gen < 1 || a.repeats < 1 || a.adapters < 0 || a.rank < 1)
    fail("--batch, --prompt-len, --gen, --repeats, --rank must be at least 1 and --adapters at least 0");
  if (a.stack > 1) fail("--stack is not measured by bench --device cuda");
  if (a.adapters == 1) fail("bench --device cuda: --adapters must be 0 or at least 2 (mixed vs one adapter)");
  auto exec = load_executor(model::Device::kCuda, a.model, a.mmap_weights, a.quant);
  const auto& cfg = exec->config();
  if (a.prompt_len + a.gen > cfg.max_model_len)
    fail("--prompt-len + --gen = {} exceeds the context length {}", a.prompt_len + a.gen, cfg.max_model_len);
  ComputePool pool(pool_threads(a.threads));

  // The ceilings first, while the device holds only the weights (the KV cache and slots come next).
  std::vector<double> bw = cuda::measure_d2d_bandwidth(kCopyBytes, 20).samples;
  std::vector<double> gemm = cuda::measure_gemm_tflops(kGemmDim, kGemmDim, kGemmDim, DType::kBF16, 10).samples;

  const int B = a.batch, K = a.adapters;
  model::Runner runner(*exec, pool, static_cast<int64_t>(a.prompt_len + a.gen + 16) * B, 16,
                       kv_cache_dtype(a.kv_cache_dtype, cfg.torch_dtype));
  const std::vector<std::vector<int32_t>> prompts = bench_prompts(B, a.prompt_len, cfg.vocab_size);

  // K synthetic adapters (PEFT layout, written and loaded like any other) in device slots.
  CliAdapters adapters;
  const std::filesystem::path tmp =
      std::filesystem::temp_directory_path() / ("loraplex-bench-cuda-" + std::to_string(::getpid()));
  struct RemoveDir {
    std::filesystem::path p;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } remove_tmp{tmp};
  const std::vector<std::string> dirs = write_bench_adapters(tmp, std::max(K, 2), a.rank, cfg);  // loads need 2
  if (K > 0) {
    adapters = load_cli_adapters(*exec, std::vector<std::string>(dirs.begin(), dirs.begin() + K), a.lora_dtype);
    runner.set_lora(&adapters.bank->view());
  }
  const DType lora_dt = lora::parse_lora_dtype(a.lora_dtype, cfg.torch_dtype);

  // Batch 1, base only: the decode step against the bandwidth bound.
  BenchTimings one;
  const std::vector<model::Runner::LoraStack> no_slot1(1);
  for (int rep = 0; rep < a.repeats; ++rep) run_cycle(*exec, runner, {prompts[0]}, a.gen, no_slot1, one);

  // Batch B: base, mixed and single-adapter runs interleaved (rotated) so drift hits each alike.
  std::vector<model::Runner::LoraStack> no_slots(B), mixed(B), single(B);
  for (int b = 0; b < B && K > 0; ++b) {
    mixed[b] = model::Runner::LoraStack(b % K);
    single[b] = model::Runner::LoraStack(0);
  }
  std::vector<GpuMode> modes = {GpuMode::kBase};
  if (K > 0) modes = {GpuMode::kBase, GpuMode::kMixed, GpuMode::kSingle};
  std::map<GpuMode, BenchTimings> t;
  for (int rep = 0; rep < a.repeats; ++rep)
    for (size_t i = 0; i < modes.size(); ++i) {
      const GpuMode m = modes[(i + rep) % modes.size()];
      run_cycle(*exec, runner, prompts, a.gen,
                m == GpuMode::kBase ? no_slots : m == GpuMode::kMixed ? mixed : single, t[m]);
    }
  const LoadTimes loads = time_adapter_loads(*exec, dirs, a.rank, lora_dt);

  // The ceilings again, after the runs: the medians take both sets of samples.
  for (double x : cuda::measure_d2d_bandwidth(kCopyBytes, 20).samples) bw.push_back(x);
  for (double x : cuda::measure_gemm_tflops(kGemmDim, kGemmDim, kGemmDim, DType::kBF16, 10).samples)
    gemm.push_back(x);
  const double bw_med = median(bw), gemm_med = median(gemm);

  const auto& w = exec->weights();
  const double step_bytes = static_cast<double>(w.bytes_per_decode_step);
  const double b1_step = median(one.steps);
  const double bound = step_bytes / bw_med;
  const double prefill_s = median(t[GpuMode::kBase].prefill);
  const double flops = prefill_flops(cfg, B, a.prompt_len);
  const double step_s = median(t[GpuMode::kBase].steps);
  nlohmann::ordered_json out = {
      {"device", exec->describe()},
      {"model", a.model},
      {"weights", bytes_by_format_text(w.bytes_by_format())},
      {"batch", B},
      {"prompt_len", a.prompt_len},
      {"gen", a.gen},
      {"repeats", a.repeats},
      {"kv_cache_dtype", dtype_name(runner.cache().shape().dtype)},
      {"d2d_bandwidth_gb_per_s", bw_med / 1e9},
      {"d2d_bandwidth_counts", "bytes read + bytes written per second of a device-to-device copy"},
      {"d2d_copy_bytes", kCopyBytes},
      {"gemm_bf16_tflops", gemm_med},
      {"gemm_shape", {kGemmDim, kGemmDim, kGemmDim}},
      {"weight_bytes_per_step", w.bytes_per_decode_step},
      {"decode_b1_step_ms", b1_step * 1e3},
      {"decode_b1_tokens_per_s", 1.0 / b1_step},
      {"decode_b1_bound_ms", bound * 1e3},
      {"decode_b1_fraction_of_bound", bound / b1_step},
      {"prefill_s", prefill_s},
      {"prefill_tokens_per_s", B * a.prompt_len / prefill_s},
      {"prefill_flops", flops},
      {"prefill_flops_formula",
       "B*(2*P*linear_params_all_layers + 2*P*(P+1)*q_dim*layers + 2*hidden*vocab), B prompts of P tokens"},
      {"prefill_tflops", flops / prefill_s / 1e12},
      {"prefill_fraction_of_gemm", flops / prefill_s / 1e12 / gemm_med},
      {"decode_step_ms", step_s * 1e3},
      {"decode_tokens_per_s", B / step_s},
      {"adapter_rank", a.rank},
      {"adapter_dtype", dtype_name(lora_dt)},
      {"adapter_bytes", loads.adapter_bytes},
      {"slot_load_ms", loads.slot_load_ms},
      {"slot_load_gb_per_s", static_cast<double>(loads.adapter_bytes) / (loads.slot_load_ms * 1e-3) / 1e9},
      {"manager_host_to_slot_ms", loads.manager_load_ms},
      {"slot_hit_ms", loads.hit_ms},
      {"load_samples", loads.samples},
  };
  if (K > 0) {
    const double mixed_s = median(t[GpuMode::kMixed].steps), single_s = median(t[GpuMode::kSingle].steps);
    out["lora_adapters"] = K;
    out["decode_step_ms_mixed"] = mixed_s * 1e3;
    out["decode_step_ms_single"] = single_s * 1e3;
    out["decode_tokens_per_s_mixed"] = B / mixed_s;
    out["decode_tokens_per_s_single"] = B / single_s;
    out["mixed_over_single_tokens_per_s"] = single_s / mixed_s;
    out["lora_overhead_mixed"] = mixed_s / step_s;
    out["lora_overhead_single"] = single_s / step_s;
    out["prefill_s_mixed"] = median(t[GpuMode::kMixed].prefill);
  }
  if (a.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model %s  %s  batch %d  prompt %d  gen %d  repeats %d\n", a.model.c_str(),
              exec->describe().c_str(), B, a.prompt_len, a.gen, a.repeats);
  std::printf("weights                   %s (%.1f MB read per decode step)\n",
              out["weights"].get<std::string>().c_str(), step_bytes / 1e6);
  std::printf("d2d copy bandwidth        %8.1f GB/s  (bytes read + written; median of %zu)\n", bw_med / 1e9,
              bw.size());
  std::printf("BF16 GEMM (cuBLAS)        %8.1f TFLOP/s  (%lldx%lldx%lld, median of %zu)\n", gemm_med,
              static_cast<long long>(kGemmDim), static_cast<long long>(kGemmDim),
              static_cast<long long>(kGemmDim), gemm.size());
  std::printf("decode batch 1            %8.1f tokens/s  (step %.3f ms; bound %.3f ms = weight bytes / d2d "
              "bandwidth; %.3f of the bound)\n",
              1.0 / b1_step, b1_step * 1e3, bound * 1e3, bound / b1_step);
  std::printf("prefill batch %-3d         %8.1f tokens/s  (%.1f TFLOP/s = %.3f of the GEMM rate; FLOPs: %s)\n",
              B, B * a.prompt_len / prefill_s, flops / prefill_s / 1e12, flops / prefill_s / 1e12 / gemm_med,
              out["prefill_flops_formula"].get<std::string>().c_str());
  std::printf("decode batch %-3d          %8.1f tokens/s  (step %.3f ms, base only)\n", B, B / step_s,
              step_s * 1e3);
  if (K > 0)
    std::printf("  over %d adapters (r%d)   %8.1f tokens/s  (step %.3f ms); all on one adapter %.1f tokens/s; "
                "mixed / one %.3f; LoRA overhead %.3f (mixed), %.3f (one)\n",
                K, a.rank, out["decode_tokens_per_s_mixed"].get<double>(),
                out["decode_step_ms_mixed"].get<double>(), out["decode_tokens_per_s_single"].get<double>(),
                out["mixed_over_single_tokens_per_s"].get<double>(), out["lora_overhead_mixed"].get<double>(),
                out["lora_overhead_single"].get<double>());
  std::printf("adapter host -> slot      %8.3f ms  (%.1f MB, %.1f GB/s; through the manager %.3f ms); slot hit "
              "%.4f ms\n",
              loads.slot_load_ms, loads.adapter_bytes / 1e6, out["slot_load_gb_per_s"].get<double>(),
              loads.manager_load_ms, loads.hit_ms);
}

}  // namespace lp::cli
