#include "util/engine_util.h"

#include <chrono>
#include <thread>

#include "core/check.h"
#include "lora/demo_adapter.h"
#include "model/demo_model.h"
#include "text/demo_tokenizer.h"

namespace lp::test {

using namespace std::chrono_literals;

DemoModelDir::DemoModelDir(const std::string& tag, int adapters) : dir_(tag), adapters_(adapters) {
  text::write_demo_tokenizer(path(), 512, 1);
  model::DemoSpec spec;
  spec.shape = "tiny";
  spec.seed = 4;
  model::write_demo_model(path(), spec);
  auto cfg = model::ModelConfig::from_dir(path());
  for (int i = 0; i < adapters; ++i)
    lora::write_demo_adapter(adapter("a" + std::to_string(i)), cfg,
                             lora::demo_adapter_spec(i, 8, true, 3, DType::kBF16));
}

lora::ManagerOptions DemoModelDir::manager_options(int max_loras, int max_cpu_loras) {
  lora::ManagerOptions o;
  o.max_loras = max_loras;
  o.max_cpu_loras = max_cpu_loras;
  o.max_lora_rank = 8;
  o.lora_dtype = DType::kBF16;
  return o;
}

void DemoModelDir::register_adapters(lora::AdapterManager& m, int n) const {
  LP_CHECK(n <= adapters_);
  for (int i = 0; i < n; ++i) m.register_adapter("a" + std::to_string(i), adapter("a" + std::to_string(i)));
}

std::unique_ptr<lora::AdapterManager> DemoModelDir::manager(const model::ModelConfig& base, int max_loras,
                                                            int max_cpu_loras) const {
  auto m = std::make_unique<lora::AdapterManager>(base, manager_options(max_loras, max_cpu_loras));
  register_adapters(*m, adapters_);
  return m;
}

DemoModelDir* DemoEngineTest::dir_ = nullptr;

void DemoEngineTest::TearDownTestSuite() {
  delete dir_;
  dir_ = nullptr;
}

void DemoEngineTest::SetUp() {
  model_ = model::Model::load(dir_->path());
  tok_ = std::make_unique<text::Tokenizer>(text::Tokenizer::from_dir(dir_->path()));
}

std::unique_ptr<lora::AdapterManager> DemoEngineTest::make_manager(int max_loras, int max_cpu_loras) const {
  return dir_->manager(model_->config(), max_loras, max_cpu_loras);
}

std::vector<int32_t> DemoEngineTest::prompt(int n, uint64_t seed) {
  model::DemoRng rng(seed, "p");
  std::vector<int32_t> p(n);
  for (auto& t : p) t = static_cast<int32_t>(rng.next() % 400);
  return p;
}

sched::Request DemoEngineTest::greedy(std::vector<int32_t> prompt, int n, std::string adapter) {
  sched::Request r;
  r.prompt = std::move(prompt);
  r.max_tokens = n;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  r.adapter = std::move(adapter);
  return r;
}

DemoEngineTest::Result DemoEngineTest::collect(const std::shared_ptr<sched::RequestChannel>& ch) {
  Result r;
  for (bool first = true;; first = false) {
    auto o = ch->pop(30s);
    if (!o) {
      r.error = "timeout";
      return r;
    }
    r.tokens.insert(r.tokens.end(), o->tokens.begin(), o->tokens.end());
    r.text += o->text;
    r.logprobs.insert(r.logprobs.end(), o->logprobs.begin(), o->logprobs.end());
    if (!o->prompt_logprobs.empty()) {
      ++r.outputs_with_prompt_logprobs;
      r.prompt_logprobs_in_first = first;
      r.prompt_logprobs = o->prompt_logprobs;
    }
    if (o->finish != sched::FinishReason::kNone) {
      r.finish = o->finish;
      r.error = o->error;
      r.error_kind = o->error_kind;
      r.stop_reason = o->stop_reason;
      return r;
    }
  }
}

sched::EngineStats DemoEngineTest::idle_stats(const sched::Engine& e) {
  for (int i = 0; i < 500; ++i) {
    auto st = e.stats();
    if (st.running == 0 && st.waiting == 0 && st.kv_usage == 0.0) return st;
    std::this_thread::sleep_for(10ms);
  }
  return e.stats();
}

}  // namespace lp::test
