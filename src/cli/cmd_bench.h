// `loraplex bench`'s options, shared by its CPU path (cmd_bench.cpp) and its CUDA path (cmd_bench_cuda.cpp,
// `--device cuda`), which measure different things against different bounds.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cli/common.h"
#include "model/runner.h"

namespace lp::cli {

struct BenchArgs {
  std::string model;
  int batch = 1;
  int prompt_len = 256;
  int gen = 32;
  int repeats = 3;
  int adapters = 0;
  int stack = 1;
  int rank = 16;
  std::string lora_dtype = "bf16";
  bool json = false;
  int threads = 0;
  bool mmap_weights = false;
  QuantFlags quant;
  std::string kv_cache_dtype = "auto";
  std::string device = "cpu";
};

// B prompts of `len` random token ids below `vocab`, the same in every run (and for every device).
std::vector<std::vector<int32_t>> bench_prompts(int B, int len, int vocab);

// `n` synthetic adapters a0 .. a<n-1> of rank `rank` on all seven projections, written in PEFT layout under
// `dir` (loaded afterwards like any other adapter); their folders, in order.
std::vector<std::string> write_bench_adapters(const std::filesystem::path& dir, int n, int rank,
                                              const model::ModelConfig& cfg);

struct BenchTimings {
  std::vector<double> prefill, steps;  // seconds per prefill call, per decode step
};
// One cycle: the prompts prefilled in one call, then `gen` decode steps of one token per sequence, the
// sequences on `slots`; appends the times to `t`.
void run_cycle(model::Executor& m, model::Runner& runner, const std::vector<std::vector<int32_t>>& prompts,
               int gen, const std::vector<model::Runner::LoraStack>& slots, BenchTimings& t);

// The CUDA benchmark (cmd_bench_cuda.cpp): the device's copy bandwidth and BF16 GEMM rate measured in the
// same run; batch-1 decode against the bandwidth bound; prefill and decode at --batch; with --adapters K,
// the batch over K adapters vs all on one adapter vs base; host → slot load and slot-hit times.
void run_bench_cuda(const BenchArgs& a);

}  // namespace lp::cli
