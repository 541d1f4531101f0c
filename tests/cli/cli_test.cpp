// The `loraplex` binary from outside: demo-model writes a loadable HF folder with adapters; `logits --batch`
// (one forward call, mixed adapters) equals one `logits --ids` run per sequence; merge; bench --json keys.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cuda/device.h"
#include "util/test_util.h"

namespace lp::test {
namespace {

std::string bin() { return loraplex_binary().string(); }

std::vector<float> read_f32(const std::filesystem::path& p) {
  std::string s = read_file(p);
  std::vector<float> v(s.size() / 4);
  std::memcpy(v.data(), s.data(), v.size() * 4);
  return v;
}

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("cli");
    std::string out;
    ASSERT_EQ(0, run_command(bin() + " demo-model " + (dir_->path() / "m").string() +
                                 " --shape tiny --seed 2 --adapters 3 --rank 8 --mixed 2>&1",
                             &out))
        << out;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path model() { return dir_->path() / "m"; }
  static std::filesystem::path adapter(const std::string& n) { return dir_->path() / "m" / "adapters" / n; }
  static TempDir* dir_;
};
TempDir* Cli::dir_ = nullptr;

TEST_F(Cli, DemoModelHasHfLayoutAndAdapters) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(model() / f)) << f;
  for (const char* a : {"medical-qa", "legal-summary", "code-review"}) {
    EXPECT_TRUE(std::filesystem::exists(adapter(a) / "adapter_config.json")) << a;
    EXPECT_TRUE(std::filesystem::exists(adapter(a) / "adapter_model.safetensors")) << a;
  }
  auto cfg = nlohmann::json::parse(read_file(model() / "config.json"));
  EXPECT_EQ(cfg["vocab_size"], 512);
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
}

TEST_F(Cli, BatchLogitsEqualSingleRunsWithMixedAdapters) {
  struct S {
    std::string ids;
    std::string adapter;
  };
  std::vector<S> seqs = {{"1,2,3,4,5", ""}, {"9,8,7", "medical-qa"}, {"5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5,5", "legal-summary"},
                         {"42", "code-review"}, {"100,200,300,400", "medical-qa"}};
  nlohmann::json spec = nlohmann::json::array();
  for (const auto& s : seqs) {
    nlohmann::json ids = nlohmann::json::parse("[" + s.ids + "]");
    spec.push_back({{"ids", ids}, {"adapter", s.adapter.empty() ? nlohmann::json(nullptr) : nlohmann::json(adapter(s.adapter).string())}});
  }
  write_file(dir_->path() / "spec.json", spec.dump());
  std::string out;
  ASSERT_EQ(0, run_command(bin() + " logits --model " + model().string() + " --batch " + (dir_->path() / "spec.json").string() +
                               " --out-dir " + (dir_->path() / "batch").string() + " 2>&1",
                           &out))
      << out;
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::string cmd = bin() + " logits --model " + model().string() + " --ids " + seqs[i].ids + " --out " +
                      (dir_->path() / ("one" + std::to_string(i) + ".f32")).string();
    if (!seqs[i].adapter.empty()) cmd += " --adapter " + adapter(seqs[i].adapter).string();
    ASSERT_EQ(0, run_command(cmd + " 2>&1", &out)) << out;
    auto one = read_f32(dir_->path() / ("one" + std::to_string(i) + ".f32"));
    auto batched = read_f32(dir_->path() / "batch" / ("seq" + std::to_string(i) + ".f32"));
    size_t T = std::count(seqs[i].ids.begin(), seqs[i].ids.end(), ',') + 1;
    ASSERT_EQ(one.size(), T * 512);
    ASSERT_EQ(batched.size(), one.size());
    // Bit-identical even though the batch held other adapters: the max rank of the bank differs too.
    EXPECT_EQ(0, std::memcmp(one.data(), batched.data(), one.size() * 4)) << "sequence " << i;
  }
}

// `logits --batch` entries with "adapters" (stacks with scales): a one-entry stack at scale 1 is "adapter" bit
// for bit; a stack in a batch equals the same stack alone bit for bit; and it is the base with the stack
// merged by `loraplex merge --adapter A --adapter B --scale ..` (BF16 weights: much closer to that merged
// model than the base or either adapter alone is).
TEST_F(Cli, BatchLogitsWithStacksAndScales) {
  const std::string ids = "7,3,9,1,4,4,2,8,6,5";
  const std::string med = adapter("medical-qa").string(), legal = adapter("legal-summary").string();
  nlohmann::json stack = {{{"adapter", med}, {"scale", 0.5}}, {{"adapter", legal}, {"scale", -1.5}}};
  nlohmann::json ids_j = nlohmann::json::parse("[" + ids + "]");
  nlohmann::json spec = nlohmann::json::array({{{"ids", ids_j}, {"adapters", stack}},
                                               {{"ids", {5, 6, 7}}, {"adapter", legal}},
                                               {{"ids", ids_j}, {"adapters", {{{"adapter", med}}}}},
                                               {{"ids", ids_j}, {"adapter", med}},
                                               {{"ids", {1, 2}}, {"adapter", nullptr}}});
  nlohmann::json alone = nlohmann::json::array({{{"ids", ids_j}, {"adapters", stack}}});
  write_file(dir_->path() / "stack_spec.json", spec.dump());
  write_file(dir_->path() / "stack_alone.json", alone.dump());
  std::string out;
  auto logits = [&](const std::string& args) {
    ASSERT_EQ(0, run_command(bin() + " logits --model " + args + " 2>&1", &out)) << out;
  };
  logits(model().string() + " --batch " + (dir_->path() / "stack_spec.json").string() + " --out-dir " +
         (dir_->path() / "stack_batch").string());
  logits(model().string() + " --batch " + (dir_->path() / "stack_alone.json").string() + " --out-dir " +
         (dir_->path() / "stack_alone").string());
  auto batched = read_f32(dir_->path() / "stack_batch" / "seq0.f32");
  auto solo = read_f32(dir_->path() / "stack_alone" / "seq0.f32");
  ASSERT_EQ(batched.size(), 10u * 512);
  EXPECT_EQ(0, std::memcmp(batched.data(), solo.data(), solo.size() * 4));
  auto one_stack = read_f32(dir_->path() / "stack_batch" / "seq2.f32");
  auto plain = read_f32(dir_->path() / "stack_batch" / "seq3.f32");
  EXPECT_EQ(0, std::memcmp(one_stack.data(), plain.data(), plain.size() * 4));

  auto merged = dir_->path() / "merged_stack";
  ASSERT_EQ(0, run_command(bin() + " merge --model " + model().string() + " --adapter " + med + " --scale 0.5 --adapter " +
                               legal + " --scale -1.5 --out " + merged.string() + " 2>&1",
                           &out))
      << out;
  logits(merged.string() + " --ids " + ids + " --out " + (dir_->path() / "merged_stack.f32").string());
  logits(model().string() + " --ids " + ids + " --out " + (dir_->path() / "stack_base.f32").string());
  auto want = read_f32(dir_->path() / "merged_stack.f32");
  auto base = read_f32(dir_->path() / "stack_base.f32");
  auto err = [&](const std::vector<float>& a) {
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      num += (a[i] - want[i]) * double(a[i] - want[i]);
      den += want[i] * double(want[i]);
    }
    return std::sqrt(num / den);
  };
  EXPECT_LT(err(batched), 0.25 * err(base)) << err(batched) << " vs base " << err(base);
  EXPECT_LT(err(batched), 0.25 * err(plain)) << err(batched) << " vs medical-qa alone " << err(plain);

  nlohmann::json bad = nlohmann::json::array({{{"ids", {1}}, {"adapters", {{{"adapter", med}}, {{"adapter", med}}}}}});
  write_file(dir_->path() / "stack_bad.json", bad.dump());
  EXPECT_EQ(1, run_command(bin() + " logits --model " + model().string() + " --batch " +
                               (dir_->path() / "stack_bad.json").string() + " --out-dir /tmp 2>&1",
                           &out));
  EXPECT_NE(out.find("stacked twice"), std::string::npos) << out;
}

TEST_F(Cli, MergedModelGeneratesLikeTheAdapter) {
  std::string out, merged_out, adapter_out;
  auto merged = dir_->path() / "merged";
  ASSERT_EQ(0, run_command(bin() + " merge --model " + model().string() + " --adapter " + adapter("medical-qa").string() +
                               " --out " + merged.string() + " 2>&1",
                           &out))
      << out;
  ASSERT_EQ(0, run_command(bin() + " generate --model " + merged.string() + " --ids 3,1,4,1,5 -n 8 --ignore-eos", &merged_out));
  ASSERT_EQ(0, run_command(bin() + " generate --model " + model().string() + " --ids 3,1,4,1,5 -n 8 --ignore-eos --lora-dtype f32 --adapter " +
                               adapter("medical-qa").string(),
                           &adapter_out));
  auto tokens = [](const std::string& s) { return s.substr(0, s.find('\n')); };
  // BF16 merged weights vs f32 LoRA slots: greedy tokens agree on this tiny model (logits are compared at
  // 1e-4 in the F32 test in tests/lora).
  EXPECT_EQ(tokens(merged_out), tokens(adapter_out));
  EXPECT_EQ(tokens(merged_out).rfind("tokens:", 0), 0u) << merged_out;
}

TEST_F(Cli, BenchJsonHasTheRooflineKeys) {
  std::string out;
  ASSERT_EQ(0, run_command(bin() + " bench --model " + model().string() +
                               " --batch 2 --prompt-len 8 --gen 4 --repeats 1 --adapters 2 --rank 8 --json",
                           &out))
      << out;
  auto j = nlohmann::json::parse(out);
  for (const char* k : {"prefill_tokens_per_s", "decode_tokens_per_s", "decode_roofline_ratio", "bandwidth_gb_per_s",
                        "lora_overhead", "lora_byte_bound", "lora_part_speedup_fused_vs_naive"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_GT(j["bandwidth_gb_per_s"].get<double>(), 0.1);
}

TEST_F(Cli, BadInputGivesAClearErrorAndExitCode1) {
  std::string out;
  EXPECT_EQ(1, run_command(bin() + " logits --model " + model().string() + " --ids 1,x,3 --out /dev/null 2>&1", &out));
  EXPECT_NE(out.find("invalid token id 'x'"), std::string::npos) << out;
  EXPECT_EQ(1, run_command(bin() + " generate --model /nonexistent -n 1 --ids 1 2>&1", &out));
  EXPECT_NE(out.find("config.json"), std::string::npos) << out;
  EXPECT_EQ(1, run_command(bin() + " logits --model " + model().string() + " --ids 1,99999 --out /dev/null 2>&1", &out));
  EXPECT_NE(out.find("out of range"), std::string::npos) << out;
}

// --device: without a usable CUDA device (this machine, CI), `cuda` fails at once on every command with a
// message naming what is missing, `auto` runs on the CPU (the same logits as the default), and the plan
// for a GPU host is still available (device memory from --memory-budget; the host tier apart).
// With a device (the GPU machine), `auto` must pick it instead.
TEST_F(Cli, DeviceFlagSaysWhyThereIsNoCudaDeviceAndAutoFallsBack) {
  std::string out, why;
  const bool have_gpu = cuda::probe_device(0, nullptr, &why);
  const std::string m = model().string();
  if (!have_gpu) {
    for (const std::string& cmd : {" serve " + m + " --port 0", " generate --model " + m + " -n 1 --ids 1",
                                  " logits --model " + m + " --ids 1,2 --out /dev/null"}) {
      EXPECT_EQ(1, run_command(bin() + cmd + " --device cuda 2>&1", &out)) << cmd << "\n" << out;
      EXPECT_NE(out.find("--device cuda: "), std::string::npos) << out;
      EXPECT_NE(out.find(why), std::string::npos) << "the reason (" << why << ") is missing: " << out;
    }
  }
  EXPECT_EQ(1, run_command(bin() + " generate --model " + m + " -n 1 --ids 1 --device gpu 2>&1", &out));
  EXPECT_NE(out.find("--device must be cpu, cuda or auto (got 'gpu')"), std::string::npos) << out;
  EXPECT_EQ(1, run_command(bin() + " plan --model " + m + " --device cuda -q int8 2>&1", &out));
  EXPECT_NE(out.find("--quantization int8 is CPU-only"), std::string::npos) << out;

  ASSERT_EQ(0, run_command(bin() + " logits --model " + m + " --ids 7,3,11 --out " +
                               (dir_->path() / "dev_cpu.f32").string() + " 2>&1", &out)) << out;
  ASSERT_EQ(0, run_command(bin() + " logits --model " + m + " --ids 7,3,11 --device auto --out " +
                               (dir_->path() / "dev_auto.f32").string() + " 2>&1", &out)) << out;
  if (!have_gpu) {
    EXPECT_NE(out.find("--device auto: cpu"), std::string::npos) << out;
    auto cpu = read_f32(dir_->path() / "dev_cpu.f32"), autod = read_f32(dir_->path() / "dev_auto.f32");
    ASSERT_EQ(cpu.size(), 3u * 512);
    EXPECT_EQ(0, std::memcmp(cpu.data(), autod.data(), cpu.size() * 4));
  } else {
    EXPECT_EQ(out.find("--device auto: cpu"), std::string::npos) << "a GPU is here, auto took the CPU: " << out;
  }

  ASSERT_EQ(0, run_command(bin() + " plan --model " + m +
                               " --device cuda --max-loras 4 --memory-budget 1GiB --json 2>&1", &out)) << out;
  auto plan = nlohmann::json::parse(out);
  EXPECT_EQ(plan["device"], "cuda");
  EXPECT_EQ(plan["memory_bytes"], int64_t{1} << 30);
  // Device memory holds the weights and the slots; the host tier is host memory, not subtracted.
  EXPECT_EQ(plan["memory_left_bytes"].get<int64_t>(),
            (int64_t{1} << 30) - plan["weights_bytes"].get<int64_t>() - plan["slots_bytes"].get<int64_t>());
  ASSERT_EQ(0, run_command(bin() + " plan --model " + m + " --max-loras 4 --memory-budget 1GiB --json 2>&1", &out));
  auto cpu_plan = nlohmann::json::parse(out);
  EXPECT_EQ(cpu_plan["device"], "cpu");
  EXPECT_EQ(cpu_plan["memory_left_bytes"].get<int64_t>(),
            plan["memory_left_bytes"].get<int64_t>() - cpu_plan["host_bytes"].get<int64_t>());
}

// --quantization int8 is accepted by plan, logits and generate and changes the logits (a flag that did
// nothing would fail here); a batch is still bit-identical to single runs on the quantized base, adapters
// included. A bad value names the flag and what it accepts.
TEST_F(Cli, QuantizationInt8IsAcceptedAndChangesTheLogits) {
  std::string out;
  ASSERT_EQ(
      0, run_command(bin() + " plan --model " + model().string() + " --quantization int8 --json 2>&1", &out))
      << out;
  auto plan = nlohmann::json::parse(out);
  EXPECT_EQ(plan["quantization"], "int8");
  EXPECT_GT(plan["weight_bytes_by_format"]["int8"].get<int64_t>(), 0);

  const std::string ids = "7,3,11,200,5,5,9";
  auto logits = [&](const std::string& flags, const std::string& name) {
    std::string o;
    const auto path = dir_->path() / name;
    EXPECT_EQ(0, run_command(bin() + " logits --model " + model().string() + " --ids " + ids + " --out " +
                                 path.string() + " " + flags + " 2>&1",
                             &o))
        << o;
    return read_f32(path);
  };
  auto base = logits("", "q_none.f32");
  auto q8 = logits("--quantization int8", "q_int8.f32");
  auto q8_short = logits("-q int8", "q_int8_short.f32");
  auto q8_head = logits("--quantization int8 --quantize-lm-head", "q_int8_head.f32");
  ASSERT_EQ(base.size(), 7u * 512);
  ASSERT_EQ(q8.size(), base.size());
  ASSERT_EQ(q8_head.size(), base.size());
  EXPECT_NE(0, std::memcmp(base.data(), q8.data(), base.size() * 4)) << "--quantization int8 did nothing";
  EXPECT_NE(0, std::memcmp(q8.data(), q8_head.data(), q8.size() * 4)) << "--quantize-lm-head did nothing";
  EXPECT_EQ(0, std::memcmp(q8.data(), q8_short.data(), q8.size() * 4));
  // Close to the unquantized logits all the same: int8 per-channel error is small on this model.
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    ASSERT_TRUE(std::isfinite(q8[i]));
    max_abs = std::max(max_abs, std::abs(static_cast<double>(base[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(base[i]) - q8[i]));
  }
  EXPECT_LT(max_diff, 0.1 * max_abs);

  // Batch (mixed adapters) == single runs, on the int8 base.
  nlohmann::json spec = nlohmann::json::array();
  spec.push_back({{"ids", nlohmann::json::parse("[" + ids + "]")}, {"adapter", nullptr}});
  spec.push_back({{"ids", {4, 4, 2}}, {"adapter", adapter("legal-summary").string()}});
  write_file(dir_->path() / "qspec.json", spec.dump());
  ASSERT_EQ(0, run_command(bin() + " logits --model " + model().string() + " -q int8 --batch " +
                               (dir_->path() / "qspec.json").string() + " --out-dir " +
                               (dir_->path() / "qbatch").string() + " 2>&1",
                           &out))
      << out;
  auto b0 = read_f32(dir_->path() / "qbatch" / "seq0.f32");
  ASSERT_EQ(b0.size(), q8.size());
  EXPECT_EQ(0, std::memcmp(b0.data(), q8.data(), q8.size() * 4));
  ASSERT_EQ(0, run_command(bin() + " logits --model " + model().string() + " -q int8 --ids 4,4,2 --adapter " +
                               adapter("legal-summary").string() + " --out " +
                               (dir_->path() / "q_one1.f32").string() + " 2>&1",
                           &out))
      << out;
  auto one1 = read_f32(dir_->path() / "q_one1.f32");
  auto b1 = read_f32(dir_->path() / "qbatch" / "seq1.f32");
  ASSERT_EQ(b1.size(), one1.size());
  EXPECT_EQ(0, std::memcmp(b1.data(), one1.data(), one1.size() * 4));

  ASSERT_EQ(0, run_command(bin() + " generate --model " + model().string() +
                               " --quantization int8 --ids 3,1,4 -n 4 --ignore-eos 2>&1",
                           &out))
      << out;
  EXPECT_NE(out.find("tokens:"), std::string::npos) << out;

  ASSERT_EQ(0, run_command(bin() + " bench --model " + model().string() +
                               " -q int8 --batch 1 --prompt-len 4 --gen 2 --repeats 1 --json",
                           &out))
      << out;
  auto bench = nlohmann::json::parse(out);
  EXPECT_EQ(bench["quantization"], "int8");
  EXPECT_EQ(bench["weight_bytes_by_format"]["int8"], plan["weight_bytes_by_format"]["int8"]);
  EXPECT_EQ(bench["weight_bytes_per_step"], plan["decode_step_bytes"]);

  for (const char* cmd :
       {" logits --ids 1,2 --out /dev/null", " generate --ids 1,2 -n 1", " plan", " bench --gen 1"}) {
    EXPECT_EQ(1,
              run_command(bin() + cmd + " --model " + model().string() + " --quantization int9 2>&1", &out))
        << cmd;
    EXPECT_NE(out.find("--quantization int9: expected none, int8, awq or gptq"), std::string::npos)
        << cmd << ": " << out;
  }
}

// Merging into a quantized base would requantize W + s·B·A: refused, saying why, and nothing is written.
TEST_F(Cli, MergeOnAQuantizedBaseIsRefused) {
  std::string out;
  const auto out_dir = dir_->path() / "merged-q";
  EXPECT_EQ(1, run_command(bin() + " merge --model " + model().string() + " --adapter " +
                               adapter("medical-qa").string() + " --out " + out_dir.string() +
                               " --quantization int8 2>&1",
                           &out));
  EXPECT_NE(out.find("merge --quantization int8 is refused"), std::string::npos) << out;
  EXPECT_NE(out.find("requantize"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(out_dir));

  // An AWQ checkpoint (quantization_config in config.json): the same folder otherwise.
  const auto awq = dir_->path() / "awq-base";
  std::filesystem::create_directories(awq);
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(model() / f, awq / f, std::filesystem::copy_options::overwrite_existing);
  auto cfg = nlohmann::json::parse(read_file(model() / "config.json"));
  cfg["quantization_config"] = {
      {"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"version", "gemm"}};
  write_file(awq / "config.json", cfg.dump(2));
  EXPECT_EQ(1, run_command(bin() + " merge --model " + awq.string() + " --adapter " +
                               adapter("medical-qa").string() + " --out " + out_dir.string() + " 2>&1",
                           &out));
  EXPECT_NE(out.find("it is a quantized checkpoint (awq"), std::string::npos) << out;
  EXPECT_NE(out.find("requantize"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(out_dir));
}

// An AWQ checkpoint runs as such without a flag; --quantization awq confirms it, gptq or int8 on it and awq
// on a float model are refused naming config.json; merge refuses it.
TEST_F(Cli, Int4CheckpointIsDetectedAndTheFlagMustMatchIt) {
  std::string out;
  const auto awq = dir_->path() / "awq";
  ASSERT_EQ(
      0, run_command(bin() + " demo-model " + awq.string() + " --shape small --quantization awq 2>&1", &out))
      << out;
  auto plan = [&](const std::filesystem::path& m, const std::string& flags, std::string* o) {
    return run_command(bin() + " plan --model " + m.string() + " --json " + flags + " 2>&1", o);
  };
  ASSERT_EQ(0, plan(awq, "", &out)) << out;
  auto detected = nlohmann::json::parse(out);
  EXPECT_EQ(detected["quantization"], "awq");
  EXPECT_GT(detected["weight_bytes_by_format"]["int4"].get<int64_t>(), 0);
  ASSERT_EQ(0, plan(awq, "--quantization awq", &out)) << out;
  auto named = nlohmann::json::parse(out);
  for (auto* j : {&named, &detected})  // the free memory moves between the two runs
    for (const char* k : {"memory_bytes", "memory_left_bytes"}) j->erase(k);
  EXPECT_EQ(named, detected);

  EXPECT_EQ(1, plan(awq, "--quantization gptq", &out));
  EXPECT_NE(out.find("--quantization gptq: config.json's quantization_config says awq"), std::string::npos)
      << out;
  EXPECT_EQ(1, plan(awq, "-q int8", &out));
  EXPECT_NE(out.find("--quantization int8: config.json's quantization_config says awq"), std::string::npos)
      << out;
  EXPECT_EQ(1, plan(model(), "-q awq", &out));
  EXPECT_NE(out.find("--quantization awq: config.json has no quantization_config"), std::string::npos) << out;
  EXPECT_EQ(1,
            run_command(bin() + " logits --model " + awq.string() + " -q int8 --ids 1,2 --out /dev/null 2>&1",
                        &out));
  EXPECT_NE(out.find("says awq"), std::string::npos) << out;

  ASSERT_EQ(0, run_command(
                   bin() + " generate --model " + awq.string() + " -q awq --ids 3,1,4 -n 3 --ignore-eos 2>&1",
                   &out))
      << out;
  EXPECT_NE(out.find("tokens:"), std::string::npos) << out;

  EXPECT_EQ(1, run_command(bin() + " merge --model " + awq.string() + " --adapter " +
                               adapter("medical-qa").string() + " --out " +
                               (dir_->path() / "merged-awq").string() + " 2>&1",
                           &out));
  EXPECT_NE(out.find("it is a quantized checkpoint (awq"), std::string::npos) << out;
}

}  // namespace
}  // namespace lp::test
