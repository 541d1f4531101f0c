// The CUDA executor (cuda::CudaModel) against the CPU: the same demo models give the same logits (BF16 within
// 1e-2, F32 within 1e-4 of the CPU and of the f64 reference), through prefill and decode steps; a mixed
// batch of adapters, scales, stacks and base rows gives each sequence what it gets alone; an adapter equals
// its merged weights; and the engine produces the CPU's greedy tokens. Skipped, saying why, without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cuda/cublas_api.h"
#include "cuda/cuda_model.h"
#include "cuda/device.h"
#include "lora/adapter.h"
#include "lora/adapter_manager.h"
#include "lora/demo_adapter.h"
#include "lora/merge.h"
#include "lora/slot_bank.h"
#include "model/demo_model.h"
#include "model/runner.h"
#include "sched/engine.h"
#include "sched/sampler.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/reference_forward.h"
#include "util/test_util.h"

namespace lp::cuda {
namespace {

using model::Runner;

#define LP_REQUIRE_GPU()                                                      \
  do {                                                                        \
    std::string why;                                                          \
    if (!lp::cuda::probe_device(0, nullptr, &why)) GTEST_SKIP() << "no CUDA device: " << why; \
  } while (0)

// Logits of every position of `ids` (rows × vocab): the first `prefill` tokens in one step, then one
// decode step per remaining token, so both kinds of step are compared.
std::vector<float> run_steps(model::Executor& m, const std::vector<int32_t>& ids, int prefill,
                             const lora::SlotBank* bank = nullptr, Runner::LoraStack lora = {}) {
  ComputePool pool(2);
  Runner r(m, pool, static_cast<int64_t>(ids.size()) + 32);
  if (bank) r.set_lora(&bank->view());
  const int seq = r.add_sequence();
  std::vector<float> out;
  Runner::Item first{seq, std::span<const int32_t>(ids.data(), prefill), true, lora};
  const auto& l = r.step({&first, 1});
  out.insert(out.end(), l.begin(), l.end());
  for (size_t i = prefill; i < ids.size(); ++i) {
    Runner::Item it{seq, std::span<const int32_t>(&ids[i], 1), false, lora};
    const auto& d = r.step({&it, 1});
    out.insert(out.end(), d.begin(), d.end());
  }
  return out;
}

// Top-1 agreement on the rows where the CPU's margin between its two best logits is clear (over 1% of the
// row's range); returns how many rows were checked.
int expect_same_argmax_where_clear(const std::vector<float>& gpu, const std::vector<float>& cpu, int V) {
  int checked = 0;
  for (size_t r = 0; r * V < cpu.size(); ++r) {
    std::span<const float> c(cpu.data() + r * V, V), g(gpu.data() + r * V, V);
    std::vector<float> s(c.begin(), c.end());
    std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<>());
    const float range = s[0] - *std::min_element(c.begin(), c.end());
    if (s[0] - s[1] <= 0.01f * range) continue;
    ++checked;
    EXPECT_EQ(sched::argmax(g), sched::argmax(c)) << "row " << r;
  }
  return checked;
}

void expect_finite(const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i) ASSERT_TRUE(std::isfinite(v[i])) << "element " << i;
}

// BF16 weights (and a BF16 KV cache, the default): both sides round each GEMM input to BF16, but sum in
// different orders and the GPU's GEMM inputs and K/V are rounded from slightly different f32 values.
TEST(GpuForward, Bf16MatchesCpuThroughPrefillAndDecode) {
  LP_REQUIRE_GPU();
  for (const char* shape : {"tiny", "small"}) {
    SCOPED_TRACE(shape);
    test::TempDir dir("gpubf16");
    model::DemoSpec spec;
    spec.shape = shape;
    spec.dtype = DType::kBF16;
    spec.seed = 7;
    model::write_demo_model(dir.path(), spec);
    auto cpu = model::Model::load(dir.path());
    auto gpu = CudaModel::load(dir.path(), {});
    EXPECT_NE(gpu->describe().find("cuda:0"), std::string::npos) << gpu->describe();
    const int V = cpu->config().vocab_size;
    auto ids = test::demo_ids(40, V, 11);
    auto want = run_steps(*cpu, ids, 29);
    auto got = run_steps(*gpu, ids, 29);
    ASSERT_EQ(got.size(), want.size());
    expect_finite(got);
    const double err = test::normalized_error(got.data(), want.data(), got.size());
    EXPECT_LT(err, 1e-2);
    std::printf("[ info ] %s BF16: GPU vs CPU normalized error %.3g\n", shape, err);
    EXPECT_GT(expect_same_argmax_where_clear(got, want, V), 0);
  }
}

// Without a usable device (this build machine, CI) the load fails with an lp::Error naming what is missing,
// which `serve --device cuda` reports before exiting non-zero.
TEST(GpuForward, LoadWithoutDeviceSaysWhy) {
  std::string why;
  if (probe_device(0, nullptr, &why)) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_FALSE(why.empty());
  test::TempDir dir("gpunodev");
  model::DemoSpec spec;
  model::write_demo_model(dir.path(), spec);
  try {
    CudaModel::load(dir.path(), {});
    FAIL() << "loaded without a device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

// cuBLAS is loaded on first use, not linked (cuda/cublas_api.h): the binary does not map it at start, and
// where the toolkit is installed (every build machine of this project, and the GPU machine) every function
// the backend calls resolves, device or not.
TEST(GpuForward, CublasIsLoadedOnFirstUseWithEveryFunction) {
  auto mapped = [] {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line))
      if (line.find("libcublasLt") != std::string::npos) return true;
    return false;
  };
  // Without a device no test before this one could have run a GEMM (on a GPU, the tests share a process).
  if (!probe_device(0, nullptr, nullptr)) {
    EXPECT_FALSE(mapped()) << "libcublasLt is mapped before anything asked for it";
  }
  const CublasApi& api = cublas_api();
  EXPECT_TRUE(mapped());
  EXPECT_NE(api.cublasLtMatmul, nullptr);
  EXPECT_NE(api.cublasLtMatmulAlgoGetHeuristic, nullptr);
  EXPECT_NE(api.cublasGemmEx, nullptr);
  EXPECT_NE(api.cublasCreate_v2, nullptr);
  EXPECT_STREQ(api.cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
}

// int8 at load and int4 checkpoints run on the CPU only: refused with the message that says so.
TEST(GpuForward, RefusesQuantizedWeights) {
  LP_REQUIRE_GPU();
  test::TempDir dir("gpuquant");
  model::DemoSpec spec;
  spec.shape = "small";
  model::write_demo_model(dir.path() / "f", spec);
  spec.quantization = "gptq";
  model::write_demo_model(dir.path() / "q", spec);
  model::LoadOptions int8;
  int8.quantization = model::Quantization::kInt8;
  for (auto [sub, opt] : {std::pair{"f", int8}, std::pair{"q", model::LoadOptions{}}}) {
    try {
      CudaModel::load(dir.path() / sub, opt);
      ADD_FAILURE() << sub << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("int8/int4 are CPU-only"), std::string::npos) << e.what();
    }
  }
}

struct F32Case {
  std::string arch;
  bool biases;
  nlohmann::json patch;
  std::string label;
};

// F32 weights and KV cache: cuBLASLt in f32 (no TF32), so the GPU stays within 1e-4 of the CPU and of the
// independent f64 reference, for each architecture's features (q/k/v bias, all seven biases, llama3 rope).
TEST(GpuForward, F32MatchesCpuAndReference) {
  LP_REQUIRE_GPU();
  const F32Case cases[] = {
      {"llama", false, nullptr, "llama"},
      {"qwen2", false, nullptr, "qwen2 (q/k/v bias)"},
      {"llama", true, nullptr, "llama, every projection biased"},
      {"llama",
       false,
       {{"rope_scaling",
         {{"rope_type", "llama3"},
          {"factor", 8.0},
          {"low_freq_factor", 1.0},
          {"high_freq_factor", 4.0},
          {"original_max_position_embeddings", 16}}}},
       "llama3 rope"},
  };
  for (const F32Case& fc : cases) {
    SCOPED_TRACE(fc.label);
    test::TempDir dir("gpuf32");
    model::DemoSpec spec;
    spec.shape = "tiny";
    spec.dtype = DType::kF32;
    spec.arch = fc.arch;
    spec.attention_bias = spec.mlp_bias = fc.biases;
    spec.seed = 3;
    model::write_demo_model(dir.path(), spec);
    if (!fc.patch.is_null()) {
      auto p = dir.path() / "config.json";
      auto j = nlohmann::json::parse(test::read_file(p));
      j.merge_patch(fc.patch);
      test::write_file(p, j.dump(2));
    }
    auto cpu = model::Model::load(dir.path());
    auto gpu = CudaModel::load(dir.path(), {});
    auto ids = test::demo_ids(37, cpu->config().vocab_size, 5);
    auto got = run_steps(*gpu, ids, 30);
    auto want = run_steps(*cpu, ids, 30);
    auto ref = test::reference_logits(dir.path(), ids);
    ASSERT_EQ(got.size(), ref.size());
    expect_finite(got);
    EXPECT_LT(test::normalized_error(got.data(), want.data(), got.size()), 1e-4);
    EXPECT_LT(test::normalized_error(got, ref), 1e-4);
  }
}

// An adapter in a GPU slot gives the merged model's logits (F32 weights and slots), for the four mixed
// adapter specs (all modules; attention-only rsLoRA; q/v with rank and alpha patterns; MLP only).
TEST(GpuLora, AdapterEqualsMergedF32) {
  LP_REQUIRE_GPU();
  test::TempDir dir("gpumerge");
  model::DemoSpec spec;
  spec.shape = "tiny";
  spec.dtype = DType::kF32;
  spec.seed = 21;
  model::write_demo_model(dir.path() / "base", spec);
  auto gpu = CudaModel::load(dir.path() / "base", {});
  const auto& cfg = gpu->config();
  auto ids = test::demo_ids(29, cfg.vocab_size, 3);
  auto base = run_steps(*gpu, ids, 21);
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE("adapter " + std::to_string(i));
    auto ad = dir.path() / ("a" + std::to_string(i));
    lora::write_demo_adapter(ad, cfg, lora::demo_adapter_spec(i, 8, true, 5, DType::kF32));
    lora::LoraAdapter la = lora::load_adapter(ad, lora::base_shapes(cfg));
    lora::SlotBank bank(cfg, 3, 16, DType::kF32, lora::kAllModules, gpu->slot_memory());
    bank.load(2, lora::pack_adapter(la, DType::kF32, gpu->slot_memory()));
    auto got = run_steps(*gpu, ids, 21, &bank, 2);
    auto merged_dir = dir.path() / ("merged" + std::to_string(i));
    lora::merge_adapter(dir.path() / "base", ad, merged_dir);
    auto merged = CudaModel::load(merged_dir, {});
    auto want = run_steps(*merged, ids, 21);
    expect_finite(got);
    EXPECT_LT(test::normalized_error(got.data(), want.data(), got.size()), 1e-4);
    // ... and the adapter really changes the output (so the comparison can fail).
    EXPECT_GT(test::normalized_error(base.data(), want.data(), base.size()), 1e-2);
  }
}

struct MixSeq {
  std::vector<int32_t> ids;
  Runner::LoraStack lora;
};

// Rows of sequence i's logits in a step's output: all positions (prefill with want_all_logits).
double rel_err(const float* got, const std::vector<float>& want) {
  return test::normalized_error(got, want.data(), want.size());
}

// A mixed batch — 4 BF16 adapters of ranks 16/8/4/16 and different targets, a scaled and a stacked request,
// and base rows — gives each sequence what it gets alone, in one prefill step and in a step that mixes the
// prefill of some sequences with the decode of others. Not bitwise: cuBLASLt picks its GEMM algorithm (and
// so its reduction order) by the number of rows T, which differs between a sequence alone and the batch;
// within 1e-3. Each sequence alone also matches the CPU (1e-2), so the LoRA terms themselves are right.
TEST(GpuLora, MixedBatchEqualsSolo) {
  LP_REQUIRE_GPU();
  test::TempDir dir("gpumix");
  model::DemoSpec spec;
  spec.shape = "small";
  spec.dtype = DType::kBF16;
  spec.seed = 21;
  model::write_demo_model(dir.path() / "base", spec);
  auto gpu = CudaModel::load(dir.path() / "base", {});
  auto cpu = model::Model::load(dir.path() / "base");
  const auto& cfg = gpu->config();
  const int V = cfg.vocab_size;
  lora::SlotBank gbank(cfg, 4, 16, DType::kBF16, lora::kAllModules, gpu->slot_memory());
  lora::SlotBank cbank(cfg, 4, 16, DType::kBF16);
  for (int i = 0; i < 4; ++i) {
    auto ad = dir.path() / ("a" + std::to_string(i));
    lora::write_demo_adapter(ad, cfg, lora::demo_adapter_spec(i, 16, true, 5, DType::kBF16));
    lora::LoraAdapter la = lora::load_adapter(ad, lora::base_shapes(cfg));
    gbank.load(i, lora::pack_adapter(la, DType::kBF16, gpu->slot_memory()));
    cbank.load(i, lora::pack_adapter(la, DType::kBF16));
  }
  std::vector<MixSeq> seqs;
  const int slots[] = {0, -1, 1, 2, 3, -1, 2, 0};
  for (int i = 0; i < 8; ++i) seqs.push_back({test::demo_ids(5 + 4 * i, V, 50 + i), slots[i]});
  seqs.push_back({test::demo_ids(11, V, 70), Runner::LoraStack(1, 0.5f)});
  seqs.push_back({test::demo_ids(14, V, 71), Runner::LoraStack(2, 1.f, {{0, 1.5f}, {3, -0.5f}})});

  auto all_logits = [&](model::Executor& m, const lora::SlotBank& bank, const MixSeq& s) {
    ComputePool pool(2);
    Runner r(m, pool, 256);
    r.set_lora(&bank.view());
    Runner::Item it{r.add_sequence(), s.ids, true, s.lora};
    const auto& l = r.step({&it, 1});
    return std::vector<float>(l.begin(), l.end());
  };
  std::vector<std::vector<float>> solo;
  for (size_t i = 0; i < seqs.size(); ++i) {
    solo.push_back(all_logits(*gpu, gbank, seqs[i]));
    expect_finite(solo.back());
    auto c = all_logits(*cpu, cbank, seqs[i]);
    EXPECT_LT(rel_err(solo.back().data(), c), 1e-2) << "seq " << i << " alone, GPU vs CPU";
  }
  ComputePool pool(2);
  {  // all in one prefill step
    Runner r(*gpu, pool, 1024);
    r.set_lora(&gbank.view());
    std::vector<Runner::Item> items;
    for (const auto& s : seqs) items.push_back({r.add_sequence(), s.ids, true, s.lora});
    const auto& l = r.step(items);
    size_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      EXPECT_LT(rel_err(l.data() + row * V, solo[i]), 1e-3) << "prefill seq " << i;
      row += seqs[i].ids.size();
    }
  }
  {  // odd sequences prefilled alone but for their last token; then one step: their decode + the others' prefill
    Runner r(*gpu, pool, 1024);
    r.set_lora(&gbank.view());
    std::vector<int> ids_of(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      ids_of[i] = r.add_sequence();
      if (i % 2 == 1) {
        Runner::Item it{ids_of[i], std::span<const int32_t>(seqs[i].ids.data(), seqs[i].ids.size() - 1), false,
                        seqs[i].lora};
        r.step({&it, 1});
      }
    }
    std::vector<Runner::Item> items;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (i % 2 == 1)
        items.push_back({ids_of[i], std::span<const int32_t>(&seqs[i].ids.back(), 1), false, seqs[i].lora});
      else
        items.push_back({ids_of[i], seqs[i].ids, false, seqs[i].lora});  // last row's logits only
    }
    const auto& l = r.step(items);
    for (size_t i = 0; i < seqs.size(); ++i) {
      std::vector<float> last(solo[i].end() - V, solo[i].end());
      EXPECT_LT(rel_err(l.data() + i * V, last), 1e-3) << (i % 2 ? "decode" : "prefill") << " seq " << i;
    }
  }
}

sched::Request greedy(std::vector<int32_t> prompt, int n, std::string adapter) {
  sched::Request r;
  r.prompt = std::move(prompt);
  r.max_tokens = n;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  r.adapter = std::move(adapter);
  return r;
}

// The tokens a request's channel delivered up to its finish; empty on a timeout or an error.
std::vector<int32_t> collect(const std::shared_ptr<sched::RequestChannel>& ch) {
  std::vector<int32_t> out;
  for (;;) {
    auto o = ch->pop(std::chrono::seconds(60));
    if (!o) {
      ADD_FAILURE() << "no output for 60 s";
      return {};
    }
    out.insert(out.end(), o->tokens.begin(), o->tokens.end());
    if (o->finish != sched::FinishReason::kNone) {
      EXPECT_EQ(o->finish, sched::FinishReason::kLength) << o->error;
      return out;
    }
  }
}

// sched::Engine on the CudaModel, with its adapter slots in device memory, produces the CPU engine's greedy
// tokens for concurrent base and adapter requests. F32 weights, slots and KV cache, so that no near-tie in
// a BF16 model can flip a token between the two backends.
TEST(GpuEngine, GreedyTokensEqualCpu) {
  LP_REQUIRE_GPU();
  test::TempDir dir("gpueng");
  text::write_demo_tokenizer(dir.path(), 512, 1);
  model::DemoSpec spec;
  spec.shape = "tiny";
  spec.dtype = DType::kF32;
  spec.seed = 4;
  model::write_demo_model(dir.path(), spec);
  const auto cfg = model::ModelConfig::from_dir(dir.path());
  for (int i = 0; i < 2; ++i)
    lora::write_demo_adapter(dir.path() / "adapters" / ("a" + std::to_string(i)), cfg,
                             lora::demo_adapter_spec(i, 8, true, 3, DType::kF32));
  auto tok = text::Tokenizer::from_dir(dir.path());
  struct Job {
    std::vector<int32_t> prompt;
    std::string adapter;
  };
  const std::vector<Job> jobs = {{test::demo_ids(7, 400, 1), ""},
                                 {test::demo_ids(19, 400, 2), "a0"},
                                 {test::demo_ids(12, 400, 3), "a1"},
                                 {test::demo_ids(5, 400, 4), "a0"},
                                 {test::demo_ids(19, 400, 2), ""}};  // request 1's prompt on the base
  auto run = [&](model::Executor& m) {
    lora::ManagerOptions o;
    o.max_loras = 2;
    o.max_cpu_loras = 2;
    o.max_lora_rank = 8;
    o.lora_dtype = DType::kF32;
    o.slot_memory = m.slot_memory();
    lora::AdapterManager mgr(m.config(), o);
    for (int i = 0; i < 2; ++i)
      mgr.register_adapter("a" + std::to_string(i), dir.path() / "adapters" / ("a" + std::to_string(i)));
    sched::EngineConfig ec;
    ec.kv_cache_tokens = 16 * 32;
    ec.threads = 2;
    sched::Engine engine(m, tok, &mgr, ec);
    engine.start();
    std::vector<std::shared_ptr<sched::RequestChannel>> chs;
    for (const Job& j : jobs) chs.push_back(engine.submit(greedy(j.prompt, 10, j.adapter)));
    std::vector<std::vector<int32_t>> out;
    for (auto& ch : chs) out.push_back(collect(ch));
    engine.shutdown(std::chrono::seconds(5));
    return out;
  };
  auto cpu = model::Model::load(dir.path());
  auto want = run(*cpu);
  auto gpu = CudaModel::load(dir.path(), {});
  auto got = run(*gpu);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(want[i].size(), 10u);
    EXPECT_EQ(got[i], want[i]) << "request " << i << " (adapter '" << jobs[i].adapter << "')";
  }
  EXPECT_NE(want[1], want[4]) << "the adapter must change the tokens for this comparison to mean anything";
}

}  // namespace
}  // namespace lp::cuda
