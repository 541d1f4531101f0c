// The fixture of tests that drive sched::Engine on the demo model: a folder with the demo tokenizer, model
// and LoRA adapters; adapter managers over it; greedy requests on ordinary-token prompts; and collecting a
// request's outputs and the engine's settled stats.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "lora/adapter_manager.h"
#include "model/model.h"
#include "sched/engine.h"
#include "text/tokenizer.h"
#include "util/test_util.h"

namespace lp::test {

// A TempDir holding the demo tokenizer (512 ids, seed 1), the "tiny" demo model (seed 4) and `adapters` demo
// adapters a0 .. a<adapters-1> under adapters/ (rank 8, mixed targets, seed 3, BF16).
class DemoModelDir {
 public:
  DemoModelDir(const std::string& tag, int adapters);
  const std::filesystem::path& path() const { return dir_.path(); }
  std::filesystem::path adapter(const std::string& name) const { return path() / "adapters" / name; }

  // Manager options that fit the adapters (rank 8, BF16) with the given slot and host-tier sizes.
  static lora::ManagerOptions manager_options(int max_loras, int max_cpu_loras);
  // Registers a0 .. a<n-1> (n <= adapters()) under their names.
  void register_adapters(lora::AdapterManager& m, int n) const;
  // A manager with manager_options(max_loras, max_cpu_loras) and every adapter registered.
  std::unique_ptr<lora::AdapterManager> manager(const model::ModelConfig& base, int max_loras,
                                                int max_cpu_loras) const;

 private:
  TempDir dir_;
  int adapters_;
};

// The gtest fixture of engine tests on the demo model: a DemoModelDir per suite (the suite's SetUpTestSuite
// calls make_dir), the model and tokenizer loaded fresh for each test, and the helpers the tests call.
class DemoEngineTest : public ::testing::Test {
 protected:
  // Everything a request's channel delivered, up to its finish (error "timeout" when nothing came for 30 s).
  struct Result {
    std::vector<int32_t> tokens;
    std::string text;
    sched::FinishReason finish = sched::FinishReason::kNone;
    std::string error;
    std::optional<ErrorKind> error_kind;
    std::variant<std::monostate, std::string, int32_t> stop_reason;
    std::vector<std::optional<sched::TokenLogprob>> prompt_logprobs;  // the last non-empty ones delivered
    std::vector<sched::TokenLogprob> logprobs;
    int outputs_with_prompt_logprobs = 0;
    bool prompt_logprobs_in_first = false;  // of the last output that carried prompt logprobs
  };

  static void make_dir(const std::string& tag, int adapters) { dir_ = new DemoModelDir(tag, adapters); }
  static void TearDownTestSuite();
  void SetUp() override;

  // DemoModelDir::manager on the loaded model.
  std::unique_ptr<lora::AdapterManager> make_manager(int max_loras, int max_cpu_loras) const;

  // `n` ordinary token ids (below 400: the demo tokenizer's specials are at the end), the same for the same
  // seed.
  static std::vector<int32_t> prompt(int n, uint64_t seed);
  // A greedy request for exactly `n` tokens (ignore_eos) on `adapter` ("" = the base model).
  static sched::Request greedy(std::vector<int32_t> prompt, int n, std::string adapter = "");
  static Result collect(const std::shared_ptr<sched::RequestChannel>& ch);
  // Stats are published after each step, a moment after the outputs of that step: waits (up to 5 s) for an
  // idle engine (nothing running or waiting, no KV in use) and returns its stats, or the last ones seen.
  static sched::EngineStats idle_stats(const sched::Engine& e);

  static DemoModelDir* dir_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<text::Tokenizer> tok_;
};

}  // namespace lp::test
