// The engine: continuous batching gives every request exactly the tokens it gets alone (greedy), through
// chunked prefill, preemption and mixed adapters; stop conditions; aborts free everything.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "lora/adapter_manager.h"
#include "lora/demo_adapter.h"
#include "model/runner.h"
#include "sched/engine.h"
#include "text/tokenizer.h"
#include "util/engine_util.h"

namespace lp::sched {
namespace {

using namespace std::chrono_literals;

class EngineTest : public test::DemoEngineTest {
 protected:
  static void SetUpTestSuite() { make_dir("engine", 6); }

  // Greedy tokens of one request run alone through the plain Runner (no engine): on `adapter` at `scale`
  // with `more` stacked on it, each in its own slot of a bank of its own.
  std::vector<int32_t> alone(const std::vector<int32_t>& prompt, int n, const std::string& adapter,
                             float scale = 1.f, const std::vector<AdapterRef>& more = {}) {
    ComputePool pool(2);
    model::Runner r(*model_, pool, 512);
    std::unique_ptr<lora::SlotBank> bank;
    model::Runner::LoraStack slot(-1);
    if (!adapter.empty()) {
      bank = std::make_unique<lora::SlotBank>(model_->config(), 1 + static_cast<int>(more.size()), 8, DType::kBF16);
      auto load = [&](int i, const std::string& name) {
        bank->load(i, lora::pack_adapter(lora::load_adapter(dir_->adapter(name), lora::base_shapes(model_->config())),
                                         DType::kBF16));
      };
      load(0, adapter);
      slot = model::Runner::LoraStack(0, scale);
      for (size_t i = 0; i < more.size(); ++i) {
        load(static_cast<int>(i) + 1, more[i].name);
        slot.more.emplace_back(static_cast<int32_t>(i) + 1, more[i].scale);
      }
      r.set_lora(&bank->view());
    }
    int s = r.add_sequence();
    std::vector<int32_t> out;
    model::Runner::Item it{s, prompt, false, slot};
    const Buffer<float>* l = &r.step({&it, 1});
    for (int i = 0; i < n; ++i) {
      out.push_back(argmax({l->data(), static_cast<size_t>(model_->config().vocab_size)}));
      if (i + 1 == n) break;
      model::Runner::Item d{s, {&out.back(), 1}, false, slot};
      l = &r.step({&d, 1});
    }
    return out;
  }

  void concurrent_mixed_adapters_equal_alone();
};

// 32 concurrent greedy requests over 6 adapters and the base model, with a small token budget (chunked
// prefill) and a KV cache too small for all of them (preemption): each gets exactly what it gets alone.
TEST_F(EngineTest, ConcurrentMixedAdaptersEqualAlone) {
  concurrent_mixed_adapters_equal_alone();
}

// The same on the base quantized to int8 at load (serve --quantization int8), adapters BF16 on top.
TEST_F(EngineTest, ConcurrentMixedAdaptersEqualAloneOnInt8Base) {
  model::LoadOptions o;
  o.quantization = model::Quantization::kInt8;
  model_ = model::Model::load(dir_->path(), o);
  ASSERT_EQ(model_->weights().quantization, "int8");
  concurrent_mixed_adapters_equal_alone();
}

void EngineTest::concurrent_mixed_adapters_equal_alone() {
  struct Job {
    std::vector<int32_t> prompt;
    std::string adapter;
    std::vector<int32_t> want;
    std::shared_ptr<RequestChannel> ch;
  };
  std::vector<Job> jobs;
  for (int i = 0; i < 32; ++i) {
    std::string ad = i % 7 == 6 ? "" : "a" + std::to_string(i % 7);
    auto p = prompt(3 + (i * 5) % 40, 100 + i);
    jobs.push_back({p, ad, alone(p, 12, ad), nullptr});  // before the engine runs: one model, one thread
  }
  auto mgr = make_manager(4, 6);
  EngineConfig cfg;
  cfg.sched.max_num_batched_tokens = 48;
  cfg.sched.max_num_seqs = 12;
  cfg.kv_cache_tokens = 16 * 24;  // 24 blocks: not enough for all at once
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  for (auto& j : jobs) j.ch = engine.submit(greedy(j.prompt, 12, j.adapter));
  for (auto& j : jobs) {
    Result r = collect(j.ch);
    ASSERT_EQ(r.finish, FinishReason::kLength) << r.error;
    EXPECT_EQ(r.tokens, j.want) << "adapter '" << j.adapter << "'";
  }
  auto st = idle_stats(engine);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.kv_usage, 0.0);
  EXPECT_GT(st.preemptions_total, 0) << "the KV cache was meant to be too small for all requests";
  EXPECT_EQ(st.generation_tokens_total, 32 * 12);
}

// Per-request scales and stacks among plain adapter and base requests, under chunked prefill, preemption
// and slot pressure (4 slots for 6 adapters, stacks of up to 3): each request gets exactly what it gets alone.
TEST_F(EngineTest, ConcurrentScaledAndStackedEqualAlone) {
  struct Job {
    Request req;
    std::vector<int32_t> want;
    std::shared_ptr<RequestChannel> ch;
  };
  std::vector<Job> jobs;
  for (int i = 0; i < 21; ++i) {
    auto p = prompt(3 + (i * 7) % 37, 300 + i);
    Request r = greedy(p, 10, i % 7 == 6 ? "" : "a" + std::to_string(i % 6));
    if (i % 3 == 1 && !r.adapter.empty()) r.adapter_scale = i % 2 ? 0.5f : -1.5f;
    if (i % 4 == 2 && !r.adapter.empty()) r.more_adapters.push_back({"a" + std::to_string((i + 1) % 6), 0.75f});
    if (i % 5 == 3 && !r.adapter.empty()) {
      r.more_adapters.push_back({"a" + std::to_string((i + 2) % 6), 1.f});
      r.more_adapters.push_back({"a" + std::to_string((i + 3) % 6), 2.f});
    }
    if (i == 7) r.adapter_scale = 0.f;  // a1 alone (no stack) at scale 0
    jobs.push_back({r, alone(p, 10, r.adapter, r.adapter_scale, r.more_adapters), nullptr});
  }
  ASSERT_TRUE(jobs[7].req.more_adapters.empty());
  ASSERT_EQ(jobs[7].want, alone(jobs[7].req.prompt, 10, "")) << "scale 0 must be the base model";
  ASSERT_NE(jobs[1].want, alone(jobs[1].req.prompt, 10, jobs[1].req.adapter)) << "scale 0.5 changed nothing";
  auto mgr = make_manager(4, 6);
  EngineConfig cfg;
  cfg.sched.max_num_batched_tokens = 48;
  cfg.sched.max_num_seqs = 10;
  cfg.kv_cache_tokens = 16 * 20;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  for (auto& j : jobs) j.ch = engine.submit(j.req);
  for (size_t i = 0; i < jobs.size(); ++i) {
    Result r = collect(jobs[i].ch);
    ASSERT_EQ(r.finish, FinishReason::kLength) << r.error;
    EXPECT_EQ(r.tokens, jobs[i].want) << "job " << i;
  }
  auto st = idle_stats(engine);
  EXPECT_EQ(st.kv_usage, 0.0);
  EXPECT_TRUE(mgr->consistency_errors().empty()) << mgr->consistency_errors();
  for (int i = 0; i < 4; ++i) EXPECT_NO_THROW(mgr->unregister_adapter("a" + std::to_string(i)));  // no hold left
}

// The prefix cache keys on the whole stack with its scales: a repeat of a stack reuses its blocks; the same
// prompt under another scale, another order, or one adapter more or less does not.
TEST_F(EngineTest, PrefixCacheKeysOnTheWholeStack) {
  auto p = prompt(50, 78);  // 3 full blocks before the last token
  auto mgr = make_manager(4, 4);
  EngineConfig cfg;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  auto run = [&](const std::string& first, float scale, std::vector<AdapterRef> more) {
    Request r = greedy(p, 4, first);
    r.adapter_scale = scale;
    r.more_adapters = more;
    auto got = collect(engine.submit(r));
    EXPECT_EQ(got.tokens, alone(p, 4, first, scale, more));
    return idle_stats(engine).prefix_cache_hit_tokens;
  };
  EXPECT_EQ(run("a1", 1.f, {}), 0);
  EXPECT_EQ(run("a1", 0.5f, {}), 0);
  EXPECT_EQ(run("a1", 1.f, {{"a2", 1.f}}), 0);
  EXPECT_EQ(run("a1", 1.f, {{"a2", 0.5f}}), 0);
  EXPECT_EQ(run("a2", 1.f, {{"a1", 1.f}}), 0);
  EXPECT_EQ(run("a1", 1.f, {{"a2", 1.f}, {"a3", 1.f}}), 0);
  EXPECT_EQ(run("a1", 1.f, {{"a2", 0.5f}}), 48);  // a repeat
  EXPECT_EQ(run("a1", 0.5f, {}), 96);
  EXPECT_EQ(run("a1", 1.f, {}), 144);
}

TEST_F(EngineTest, StackRefusals) {
  auto mgr = make_manager(2, 4);
  EngineConfig cfg;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  auto code = [&](float scale, std::vector<AdapterRef> more) {
    Request r = greedy({1, 2}, 4, "a0");
    r.adapter_scale = scale;
    r.more_adapters = std::move(more);
    try {
      engine.submit(std::move(r));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("ok");
  };
  EXPECT_EQ(code(1.f, {{"a1", 1.f}}), "ok");
  EXPECT_EQ(code(1.f, {{"a1", 1.f}, {"a2", 1.f}}), "a stack of 3 adapters needs 3 slots at once; this server has --max-loras 2");
  EXPECT_EQ(code(1.f, {{"a0", 1.f}}), "adapter `a0` appears twice in one stack");
  EXPECT_EQ(code(1.f, {{"nope", 1.f}}), "The model `nope` does not exist.");
  EXPECT_EQ(code(std::nanf(""), {}), "the adapter scale must be a finite number");
  EXPECT_EQ(code(1.f, {{"a1", INFINITY}}), "the scale of adapter `a1` must be a finite number");
}

TEST_F(EngineTest, StopStringsStopTokensAndLength) {
  EngineConfig cfg;
  Engine engine(*model_, *tok_, nullptr, cfg);
  engine.start();
  auto p = prompt(10, 7);
  Result full = collect(engine.submit(greedy(p, 24)));
  ASSERT_EQ(full.finish, FinishReason::kLength);
  ASSERT_EQ(full.tokens.size(), 24u);
  EXPECT_EQ(full.text, tok_->decode(full.tokens, true));
  // Stop token id: finishes at its first occurrence; the token is returned but not rendered.
  {
    Request r = greedy(p, 24);
    r.stop_token_ids = {full.tokens[5]};
    Result got = collect(engine.submit(r));
    EXPECT_EQ(got.finish, FinishReason::kStop);
    size_t first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[5]) - full.tokens.begin();
    EXPECT_EQ(got.tokens.size(), first + 1);
  }
  // Stop string: a piece of the full text; output is cut right before its first occurrence.
  {
    std::string piece = full.text.substr(full.text.size() / 2, 3);
    Request r = greedy(p, 24);
    r.stop = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{piece});
    Result got = collect(engine.submit(r));
    EXPECT_EQ(got.finish, FinishReason::kStop);
    EXPECT_EQ(got.text, full.text.substr(0, full.text.find(piece)));
    r.include_stop_str_in_output = true;
    got = collect(engine.submit(r));
    EXPECT_EQ(got.text, full.text.substr(0, full.text.find(piece) + piece.size()));
  }
}

TEST_F(EngineTest, AbortFreesKvAndAdapterHolds) {
  auto mgr = make_manager(2, 2);
  EngineConfig cfg;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  {
    auto ch = engine.submit(greedy(prompt(20, 1), 400, "a1"));
    auto first = ch->pop(10s);
    ASSERT_TRUE(first.has_value());
    ch->abort();
    Result r = collect(ch);
    EXPECT_EQ(r.finish, FinishReason::kAbort);
  }
  {
    auto ch = engine.submit(greedy(prompt(20, 2), 400, "a2"));
    ch.reset();  // the client went away before its first token
  }
  auto st = idle_stats(engine);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.kv_usage, 0.0);
  // Both slots are free again: two other adapters can run at the same time.
  auto c3 = engine.submit(greedy(prompt(5, 3), 4, "a3"));
  auto c4 = engine.submit(greedy(prompt(5, 4), 4, "a4"));
  EXPECT_EQ(collect(c3).finish, FinishReason::kLength);
  EXPECT_EQ(collect(c4).finish, FinishReason::kLength);
}

// A repeated prompt reuses the cached full blocks (and gets the same tokens); the same prompt under another
// adapter does not (two adapters never share KV) and still gets exactly its own output.
TEST_F(EngineTest, PrefixCacheReusesBlocksPerAdapter) {
  auto p = prompt(50, 77);  // 3 full blocks of 16 before the last token
  auto want_base = alone(p, 6, "");
  auto want_a1 = alone(p, 6, "a1");
  auto mgr = make_manager(2, 2);
  EngineConfig cfg;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  EXPECT_EQ(collect(engine.submit(greedy(p, 6))).tokens, want_base);
  auto st0 = idle_stats(engine);
  EXPECT_EQ(st0.prefix_cache_hit_tokens, 0);
  EXPECT_EQ(collect(engine.submit(greedy(p, 6))).tokens, want_base);
  auto st1 = idle_stats(engine);
  EXPECT_EQ(st1.prefix_cache_hit_tokens, 48);
  EXPECT_EQ(collect(engine.submit(greedy(p, 6, "a1"))).tokens, want_a1);
  auto st2 = idle_stats(engine);
  EXPECT_EQ(st2.prefix_cache_hit_tokens, 48) << "an adapter must not reuse the base model's KV";
  EXPECT_EQ(collect(engine.submit(greedy(p, 6, "a1"))).tokens, want_a1);
  EXPECT_EQ(idle_stats(engine).prefix_cache_hit_tokens, 96);
  // Registered again from the same folder (as after retraining in place): the old KV must not be reused.
  mgr->unregister_adapter("a1");
  mgr->register_adapter("a1", dir_->adapter("a1"));
  EXPECT_EQ(collect(engine.submit(greedy(p, 6, "a1"))).tokens, want_a1);
  EXPECT_EQ(idle_stats(engine).prefix_cache_hit_tokens, 96) << "KV of an earlier registration was reused";
  EXPECT_EQ(collect(engine.submit(greedy(p, 6, "a1"))).tokens, want_a1);
  EXPECT_EQ(idle_stats(engine).prefix_cache_hit_tokens, 144);
}

// With a deliberately weak hash (every block collides), the prefix cache still never hands a request KV that
// another prompt computed: a hit needs the block's tokens, adapter and preceding block to be equal.
TEST_F(EngineTest, PrefixCacheVerifiesTokensNotJustHashes) {
  auto p1 = prompt(50, 91), p2 = prompt(50, 92);
  ASSERT_NE(std::vector<int32_t>(p1.begin(), p1.begin() + 16), std::vector<int32_t>(p2.begin(), p2.begin() + 16));
  auto want1 = alone(p1, 6, ""), want2 = alone(p2, 6, "");
  ASSERT_NE(want1, want2) << "the check needs prompts whose outputs differ";
  EngineConfig cfg;
  cfg.block_hash = [](uint64_t, uint64_t, std::span<const int32_t>) { return uint64_t{7}; };
  Engine engine(*model_, *tok_, nullptr, cfg);
  engine.start();
  EXPECT_EQ(collect(engine.submit(greedy(p1, 6))).tokens, want1);
  EXPECT_EQ(collect(engine.submit(greedy(p2, 6))).tokens, want2) << "p2 reused p1's KV through a hash collision";
  EXPECT_EQ(idle_stats(engine).prefix_cache_hit_tokens, 0);
  // The same prompt again finds its first block (the later ones collide with it and were not indexed).
  EXPECT_EQ(collect(engine.submit(greedy(p1, 6))).tokens, want1);
  EXPECT_EQ(idle_stats(engine).prefix_cache_hit_tokens, 16);
}

// A tenant flooding the queue does not delay another tenant's first token by its backlog: admission is
// round-robin across tenants. With one running slot, B's single request is admitted right after the request
// running when it arrives, before A's backlog.
TEST_F(EngineTest, AdmissionIsRoundRobinAcrossTenants) {
  auto mgr = make_manager(2, 2);
  EngineConfig cfg;
  cfg.sched.max_num_seqs = 1;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  std::vector<std::shared_ptr<RequestChannel>> a;
  for (int i = 0; i < 6; ++i) a.push_back(engine.submit(greedy(prompt(8, 200 + i), 4, "a1")));
  auto b = engine.submit(greedy(prompt(8, 300), 4));  // the base model
  engine.start();
  // Order of completion: record when each finished relative to the others.
  std::vector<std::string> order;
  std::vector<bool> done(7, false);
  auto all = a;
  all.push_back(b);
  std::vector<Result> res(7);
  while (order.size() < 7) {
    for (int i = 0; i < 7; ++i) {
      if (done[i]) continue;
      auto o = all[i]->pop(1ms);
      if (o && o->finish != FinishReason::kNone) {
        done[i] = true;
        order.push_back(i == 6 ? "b" : "a");
        res[i].finish = o->finish;
      }
    }
  }
  const auto pos = std::find(order.begin(), order.end(), "b") - order.begin();
  EXPECT_LE(pos, 1) << "the base request must not wait behind a's backlog";
}

// A request whose adapter cannot be had (here: its disk load hangs) never delays requests that need no slot,
// and is answered with kUnavailable once it has waited adapter_wait_timeout_s; an adapter unregistered while
// its request waits answers kNotFound.
TEST_F(EngineTest, AdapterWaitsAreBoundedAndNeverBlockTheBase) {
  std::atomic<bool> disk_back{false};
  lora::ManagerOptions o = test::DemoModelDir::manager_options(2, 2);
  o.on_load = [&](const std::string& name) {
    while (name == "a2" && !disk_back.load()) std::this_thread::sleep_for(5ms);
  };
  auto mgr = std::make_unique<lora::AdapterManager>(model_->config(), o);
  // a0 and a1 fill the host tier at registration; a2, a3 start on disk. a1 is pinned (kept in a slot): when
  // the engine starts a3's load before the unregister below, that load waits in the one loader's queue behind
  // a2's and takes a host place meanwhile, which would otherwise push a1 back to disk, behind a2's load too.
  mgr->register_adapter("a0", dir_->adapter("a0"));
  mgr->register_adapter("a1", dir_->adapter("a1"), /*pinned=*/true);
  mgr->register_adapter("a2", dir_->adapter("a2"));
  mgr->register_adapter("a3", dir_->adapter("a3"));
  // The bound the other requests must beat; TSan runs the engine many times slower (0.5 s flaked there).
#ifdef LP_SANITIZED_BUILD
  constexpr double kWaitS = 2.0;
#else
  constexpr double kWaitS = 0.5;
#endif
  EngineConfig cfg;
  cfg.sched.adapter_wait_timeout_s = kWaitS;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  auto waiter = engine.submit(greedy(prompt(8, 401), 4, "a2"));
  auto doomed = engine.submit(greedy(prompt(8, 402), 4, "a3"));
  mgr->unregister_adapter("a3");
  auto t0 = std::chrono::steady_clock::now();
  Result base = collect(engine.submit(greedy(prompt(8, 403), 4)));
  EXPECT_EQ(base.finish, FinishReason::kLength) << base.error;
  Result other = collect(engine.submit(greedy(prompt(8, 404), 4, "a1")));
  EXPECT_EQ(other.finish, FinishReason::kLength) << other.error;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), kWaitS)
      << "requests that need no slot, or have one, waited for a2's load";
  auto last_of = [](const std::shared_ptr<RequestChannel>& ch) {
    std::optional<Output> o;
    while (!o || o->finish == FinishReason::kNone) {
      o = ch->pop(10s);
      if (!o) return Output{};
    }
    return *o;
  };
  Output d = last_of(doomed);
  EXPECT_EQ(d.finish, FinishReason::kError);
  EXPECT_EQ(d.error_kind, ErrorKind::kNotFound) << d.error;
  Output w = last_of(waiter);
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(w.finish, FinishReason::kError);
  EXPECT_EQ(w.error_kind, ErrorKind::kUnavailable) << w.error;
  EXPECT_NE(w.error.find("--adapter-wait-timeout"), std::string::npos) << w.error;
  EXPECT_LT(waited, 5.0);
  disk_back = true;
  auto st = idle_stats(engine);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.running, 0);
}

// shutdown() lets an accepted request finish even when it comes right after the submit, before the engine
// has published stats that show it (the drain is judged on the engine thread, not from a step-old snapshot).
TEST_F(EngineTest, ShutdownRightAfterSubmitLetsTheRequestFinish) {
  for (int i = 0; i < 5; ++i) {
    EngineConfig cfg;
    Engine engine(*model_, *tok_, nullptr, cfg);
    engine.start();
    idle_stats(engine);  // the published stats say idle; the request below is newer than them
    auto ch = engine.submit(greedy(prompt(8, 500 + i), 20));
    engine.shutdown(10s);
    Result r = collect(ch);
    EXPECT_EQ(r.finish, FinishReason::kLength) << "aborted by a shutdown that should have drained it";
    EXPECT_EQ(r.tokens.size(), 20u);
  }
}

// The context is capped at what the whole KV cache holds: a request asking for more than that finishes at
// the cap (it would otherwise preempt itself forever and block everyone behind it).
TEST_F(EngineTest, ContextIsCappedByTheKvCache) {
  EngineConfig cfg;
  cfg.kv_cache_tokens = 4 * 16;  // 4 blocks; the tiny model allows 1024 positions
  Engine engine(*model_, *tok_, nullptr, cfg);
  EXPECT_EQ(engine.max_model_len(), 64);
  engine.start();
  Result r = collect(engine.submit(greedy(prompt(10, 5), 1000)));
  EXPECT_EQ(r.finish, FinishReason::kLength) << r.error;
  EXPECT_EQ(r.tokens.size(), 54u);
  Result after = collect(engine.submit(greedy(prompt(10, 6), 3)));  // the engine still serves
  EXPECT_EQ(after.tokens.size(), 3u) << after.error;
  try {
    engine.submit(greedy(prompt(64, 7), 4));
    ADD_FAILURE() << "a 64-token prompt cannot fit a 64-token context";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("maximum context length is 64"), std::string::npos) << e.what();
  }
}

TEST_F(EngineTest, SubmitRefusals) {
  EngineConfig cfg;
  cfg.sched.max_waiting = 2;
  Engine engine(*model_, *tok_, nullptr, cfg);
  auto code = [&](Request r) {
    try {
      engine.submit(std::move(r));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("ok");
  };
  EXPECT_EQ(code(greedy({}, 4)), "the prompt is empty");
  EXPECT_NE(code(greedy(std::vector<int32_t>(1024, 5), 4)).find("maximum context length is 1024"), std::string::npos);
  EXPECT_EQ(code(greedy({1, 2}, 4, "nope")), "The model `nope` does not exist.");
  EXPECT_NE(code(greedy({1, 99999}, 4)).find("out of range"), std::string::npos);
  // Not started: the queue fills up.
  EXPECT_EQ(code(greedy({1, 2}, 4)), "ok");
  EXPECT_EQ(code(greedy({1, 2}, 4)), "ok");
  EXPECT_NE(code(greedy({1, 2}, 4)).find("too many waiting requests"), std::string::npos);
  try {
    engine.submit(greedy({1, 2}, 4));
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOverloaded) << "a full queue is a 429, not a 503";
  }
}

}  // namespace
}  // namespace lp::sched

namespace lp::sched {
namespace {

// The first update of a request carries its time in the waiting queue (vLLM's queued time, for
// vllm:request_queue_time_seconds), every later one -1. With one running slot the second request waits for
// the whole of the first, so it waited longer, and no longer than the test saw until its first token.
TEST_F(EngineTest, QueueTimeComesWithTheFirstToken) {
  EngineConfig cfg;
  cfg.sched.max_num_seqs = 1;
  Engine engine(*model_, *tok_, nullptr, cfg);
  const auto t0 = std::chrono::steady_clock::now();
  auto first = engine.submit(greedy(prompt(8, 400), 8));
  auto second = engine.submit(greedy(prompt(8, 401), 8));
  engine.start();
  auto queue_times = [](const std::shared_ptr<RequestChannel>& ch, double* seen_first_s,
                        std::chrono::steady_clock::time_point t0) {
    std::vector<double> q;
    for (;;) {
      auto o = ch->pop(30s);
      if (!o) break;
      if (q.empty()) *seen_first_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      q.push_back(o->queue_time_s);
      if (o->finish != FinishReason::kNone) break;
    }
    return q;
  };
  double seen1 = 0, seen2 = 0;
  const auto q1 = queue_times(first, &seen1, t0);
  const auto q2 = queue_times(second, &seen2, t0);
  ASSERT_EQ(q1.size(), 8u);
  ASSERT_EQ(q2.size(), 8u);
  for (size_t i = 1; i < 8; ++i) {
    EXPECT_EQ(q1[i], -1);
    EXPECT_EQ(q2[i], -1);
  }
  EXPECT_GE(q1[0], 0);
  EXPECT_GT(q2[0], q1[0]);
  EXPECT_LE(q2[0], seen2);
}

}  // namespace
}  // namespace lp::sched
