// The engine's vLLM request fields: token constraints (structured outputs), allowed_token_ids, bad_words,
// min_tokens, stop_reason and prompt_logprobs. Expectations come from outside the code under test: a test
// constraint, free greedy runs, the tokenizer's decode, and prompt-prefix runs with the existing logprobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <variant>

#include "lora/adapter_manager.h"
#include "model/model.h"
#include "sched/engine.h"
#include "text/tokenizer.h"
#include "util/engine_util.h"

namespace lp::sched {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A structured output for tests: `len` tokens whose ids are multiples of 3 (never EOS), then only EOS. With
// dead_at >= 0, mask() finds no token allowed once that many tokens were accepted.
class Mod3Constraint : public TokenConstraint {
 public:
  Mod3Constraint(int len, int dead_at) : len_(len), dead_at_(dead_at) {}
  bool mask(std::span<float> logits, std::span<const int32_t> eos) override {
    if (n_ == dead_at_) return false;
    for (size_t t = 0; t < logits.size(); ++t) {
      const bool is_eos = std::find(eos.begin(), eos.end(), static_cast<int32_t>(t)) != eos.end();
      const bool ok = n_ < len_ ? t % 3 == 0 && !is_eos : is_eos;
      if (!ok) logits[t] = -kInf;
    }
    return true;
  }
  void accept(int32_t) override { ++n_; }
  bool complete() const override { return n_ >= len_; }

 private:
  int len_, dead_at_, n_ = 0;
};

class Mod3Factory : public ConstraintFactory {
 public:
  explicit Mod3Factory(int len, int dead_at = -1) : len_(len), dead_at_(dead_at) {}
  std::unique_ptr<TokenConstraint> start() const override {
    return std::make_unique<Mod3Constraint>(len_, dead_at_);
  }

 private:
  int len_, dead_at_;
};

// A constraint whose code fails (throws) on its third mask.
class ThrowingConstraint : public TokenConstraint {
 public:
  bool mask(std::span<float>, std::span<const int32_t>) override {
    if (++n_ == 3) throw std::runtime_error("schema state lost");
    return true;
  }
  void accept(int32_t) override {}
  bool complete() const override { return false; }

 private:
  int n_ = 0;
};
class ThrowingFactory : public ConstraintFactory {
 public:
  std::unique_ptr<TokenConstraint> start() const override { return std::make_unique<ThrowingConstraint>(); }
};

class EngineRequestFieldsTest : public test::DemoEngineTest {
 protected:
  static void SetUpTestSuite() { make_dir("engine_fields", 2); }

  void SetUp() override {
    DemoEngineTest::SetUp();
    ASSERT_TRUE(tok_->eos_id().has_value());
    eos_ = *tok_->eos_id();
  }

  static std::shared_ptr<const std::vector<std::pair<int32_t, float>>> bias(int32_t t, float b) {
    return std::make_shared<const std::vector<std::pair<int32_t, float>>>(
        std::vector<std::pair<int32_t, float>>{{t, b}});
  }

  int32_t eos_ = -1;
};

TEST_F(EngineRequestFieldsTest, ConstraintAllowsOnlyItsTokensAndEndsWithEos) {
  Engine engine(*model_, *tok_, nullptr, EngineConfig{});
  engine.start();
  auto factory = std::make_shared<Mod3Factory>(5);
  for (uint64_t seed = 0; seed < 12; ++seed) {
    Request r;
    r.prompt = prompt(6, 40 + seed);
    r.max_tokens = 20;
    r.sampling.temperature = 1;
    r.sampling.seed = seed;
    r.constraint = factory;
    Result got = collect(engine.submit(r));
    ASSERT_EQ(got.finish, FinishReason::kStop) << got.error;
    ASSERT_EQ(got.tokens.size(), 6u) << "5 tokens of the structured output, then EOS";
    for (int i = 0; i < 5; ++i) EXPECT_EQ(got.tokens[i] % 3, 0) << "token " << i << " = " << got.tokens[i];
    EXPECT_EQ(got.tokens.back(), eos_);
    EXPECT_TRUE(std::holds_alternative<std::monostate>(got.stop_reason)) << "EOS has no stop_reason";
  }
  // ignore_eos: the EOS that ends the structured output does not end the request, and nothing but EOS
  // follows it (the output stays valid).
  Request r;
  r.prompt = prompt(6, 60);
  r.max_tokens = 9;
  r.ignore_eos = true;
  r.sampling.temperature = 1;
  r.sampling.seed = 3;
  r.constraint = factory;
  Result got = collect(engine.submit(r));
  ASSERT_EQ(got.finish, FinishReason::kLength) << got.error;
  ASSERT_EQ(got.tokens.size(), 9u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got.tokens[i] % 3, 0);
  for (int i = 5; i < 9; ++i) EXPECT_EQ(got.tokens[i], eos_);
}

TEST_F(EngineRequestFieldsTest, ConstraintDeadEndsAndFailuresEndOnlyTheRequest) {
  Engine engine(*model_, *tok_, nullptr, EngineConfig{});
  engine.start();
  Request r = greedy(prompt(6, 61), 10);
  r.constraint = std::make_shared<Mod3Factory>(5, 2);
  Result got = collect(engine.submit(r));
  EXPECT_EQ(got.finish, FinishReason::kError);
  EXPECT_EQ(got.tokens.size(), 2u);
  EXPECT_FALSE(got.error_kind.has_value()) << "an internal error (500)";
  EXPECT_NE(got.error.find("structured output allows no token"), std::string::npos) << got.error;
  // The structured output is complete after 5 tokens (only EOS may follow), but min_tokens 8 forbids EOS:
  // nothing is left, a client error.
  r = greedy(prompt(6, 62), 10);
  r.ignore_eos = false;
  r.min_tokens = 8;
  r.constraint = std::make_shared<Mod3Factory>(5);
  got = collect(engine.submit(r));
  EXPECT_EQ(got.finish, FinishReason::kError);
  EXPECT_EQ(got.tokens.size(), 5u);
  EXPECT_EQ(got.error_kind, ErrorKind::kInvalid) << got.error;
  // A constraint that throws ends its request, not the engine.
  r = greedy(prompt(6, 63), 10);
  r.constraint = std::make_shared<ThrowingFactory>();
  got = collect(engine.submit(r));
  EXPECT_EQ(got.finish, FinishReason::kError);
  EXPECT_EQ(got.tokens.size(), 2u);
  EXPECT_NE(got.error.find("schema state lost"), std::string::npos) << got.error;
  EXPECT_EQ(collect(engine.submit(greedy(prompt(6, 64), 4))).finish, FinishReason::kLength);
  EXPECT_EQ(idle_stats(engine).running, 0);
}

TEST_F(EngineRequestFieldsTest, AllowedTokenIdsAreTheOnlyOnesSampled) {
  Engine engine(*model_, *tok_, nullptr, EngineConfig{});
  engine.start();
  const std::vector<int32_t> allowed{7, 100, 250, 401, 509};
  std::set<int32_t> seen;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    Request r;
    r.prompt = prompt(5, 70 + seed);
    r.max_tokens = 8;
    r.ignore_eos = true;
    r.sampling.temperature = 1;
    r.sampling.seed = seed;
    r.allowed_token_ids = std::make_shared<const std::vector<int32_t>>(allowed);
    Result got = collect(engine.submit(r));
    ASSERT_EQ(got.finish, FinishReason::kLength) << got.error;
    for (int32_t t : got.tokens) {
      EXPECT_TRUE(std::binary_search(allowed.begin(), allowed.end(), t)) << t;
      seen.insert(t);
    }
  }
  EXPECT_GE(seen.size(), 3u) << "sampling at temperature 1 should spread over the allowed ids";
}

TEST_F(EngineRequestFieldsTest, BadWordsNeverAppear) {
  Engine engine(*model_, *tok_, nullptr, EngineConfig{});
  engine.start();
  auto p = prompt(10, 80);
  const std::vector<int32_t> free = collect(engine.submit(greedy(p, 16))).tokens;
  ASSERT_EQ(free.size(), 16u);
  auto words = [](std::vector<std::vector<int32_t>> w) {
    return std::make_shared<const std::vector<std::vector<int32_t>>>(std::move(w));
  };
  // One token: never generated.
  {
    Request r = greedy(p, 16);
    r.bad_words = words({{free[0]}});
    Result got = collect(engine.submit(r));
    ASSERT_EQ(got.tokens.size(), 16u);
    EXPECT_EQ(std::count(got.tokens.begin(), got.tokens.end(), free[0]), 0);
  }
  // Two tokens whose prefix is the prompt's last token: the prefix must be generated, so nothing changes.
  {
    Request r = greedy(p, 16);
    r.bad_words = words({{p.back(), free[0]}});
    EXPECT_EQ(collect(engine.submit(r)).tokens, free);
  }
  // Two tokens taken from the free output: the greedy path diverges exactly there, and the pair never shows.
  {
    Request r = greedy(p, 16);
    r.bad_words = words({{free[2], free[3]}});
    Result got = collect(engine.submit(r));
    ASSERT_EQ(got.tokens.size(), 16u);
    EXPECT_TRUE(std::equal(free.begin(), free.begin() + 3, got.tokens.begin()));
    EXPECT_NE(got.tokens[3], free[3]);
    for (size_t i = 1; i < got.tokens.size(); ++i)
      EXPECT_FALSE(got.tokens[i - 1] == free[2] && got.tokens[i] == free[3]) << "at " << i;
  }
  // The last token of a pair stays allowed without its prefix: banning (x, free[3]) for an x the output
  // never has changes nothing.
  {
    int32_t x = 0;
    while (std::count(free.begin(), free.end(), x)) ++x;
    Request r = greedy(p, 16);
    r.bad_words = words({{x, free[3]}});
    EXPECT_EQ(collect(engine.submit(r)).tokens, free);
  }
}

TEST_F(EngineRequestFieldsTest, MinTokensHoldsOffEosAndStopTokens) {
  Engine engine(*model_, *tok_, nullptr, EngineConfig{});
  engine.start();
  // EOS forced by logit_bias: exactly min_tokens tokens, then EOS.
  for (int seed = 0; seed < 4; ++seed) {
    Request r;
    r.prompt = prompt(8, 90 + seed);
    r.max_tokens = 20;
    r.min_tokens = 6;
    r.sampling.temperature = seed == 0 ? 0.0f : 1.0f;
    r.sampling.seed = seed;
    r.sampling.logit_bias = bias(eos_, 100);
    Result got = collect(engine.submit(r));
    ASSERT_EQ(got.finish, FinishReason::kStop) << got.error;
    ASSERT_EQ(got.tokens.size(), 7u);
    EXPECT_EQ(std::count(got.tokens.begin(), got.tokens.end() - 1, eos_), 0);
    EXPECT_EQ(got.tokens.back(), eos_);
    EXPECT_TRUE(std::holds_alternative<std::monostate>(got.stop_reason));
  }
  // The same through a stop token id; stop_reason names it.
  {
    const int32_t stop_id = 123;
    Request r = greedy(prompt(8, 95), 20);
    r.min_tokens = 4;
    r.stop_token_ids = {stop_id};
    r.sampling.logit_bias = bias(stop_id, 100);
    Result got = collect(engine.submit(r));
    ASSERT_EQ(got.finish, FinishReason::kStop) << got.error;
    ASSERT_EQ(got.tokens.size(), 5u);
    EXPECT_EQ(got.tokens.back(), stop_id);
    ASSERT_TRUE(std::holds_alternative<int32_t>(got.stop_reason));
    EXPECT_EQ(std::get<int32_t>(got.stop_reason), stop_id);
  }
  // ignore_eos is unaffected: min_tokens does not mask EOS then, and EOS does not stop.
  {
    Request r = greedy(prompt(8, 96), 5);
    r.min_tokens = 3;
    r.sampling.logit_bias = bias(eos_, 100);
    Result got = collect(engine.submit(r));
    EXPECT_EQ(got.finish, FinishReason::kLength);
    EXPECT_EQ(got.tokens, std::vector<int32_t>(5, eos_));
  }
}

// Stop strings are not looked for in the first min_tokens tokens' text; a match that ends in a later token's
// text stops the request (vLLM's StopChecker). The expectation is derived from prefix decodes of a free run.
TEST_F(EngineRequestFieldsTest, MinTokensDefersStopStrings) {
  Engine engine(*model_, *tok_, nullptr, EngineConfig{});
  engine.start();
  auto p = prompt(10, 7);
  Result full = collect(engine.submit(greedy(p, 40)));
  ASSERT_EQ(full.tokens.size(), 40u);
  auto text_of = [&](size_t n) {
    return tok_->decode(std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + n), true);
  };
  // A stop string from the first tokens' text, so that it matches before min_tokens.
  std::string early;
  for (size_t n = 1; n < 6 && early.empty(); ++n)
    if (text_of(n).size() >= 2) early = text_of(n).substr(text_of(n).size() - 2);
  ASSERT_FALSE(early.empty());
  // And one that straddles the boundary of min_tokens 6: it begins in token 5's text and ends in token 6's.
  const std::string t6 = text_of(6), t7 = text_of(7);
  ASSERT_TRUE(t7.size() > t6.size() && t7.compare(0, t6.size(), t6) == 0 && !t6.empty());
  const std::string straddle = t6.substr(t6.size() - 1) + t7.substr(t6.size(), 1);
  const std::vector<std::pair<int, std::string>> cases{{0, early}, {6, early}, {15, early}, {6, straddle}};
  for (const auto& [min_tokens, stop] : cases) {
    auto stops =
        std::make_shared<const std::vector<std::string>>(std::vector<std::string>{"\x01never", stop});
    // Expected: the first token i (0-based) >= min_tokens whose text completes a match.
    std::string want_text = full.text;
    size_t want_tokens = 40;
    bool want_stop = false;
    for (size_t i = static_cast<size_t>(min_tokens); i < 40; ++i) {
      const std::string before = text_of(i), now = text_of(i + 1);
      const size_t from = before.size() + 1 > stop.size() ? before.size() + 1 - stop.size() : 0;
      const size_t at = now.find(stop, from);
      if (at != std::string::npos) {
        want_text = now.substr(0, at);
        want_tokens = i + 1;
        want_stop = true;
        break;
      }
    }
    if (min_tokens == 0) {
      ASSERT_TRUE(want_stop && want_tokens < 6) << "the stop string was meant to match early";
    }
    if (stop == straddle) {
      ASSERT_TRUE(want_stop && want_tokens == 7) << "the straddling stop string was meant to match at once";
    }
    Request r = greedy(p, 40);
    r.min_tokens = min_tokens;
    r.stop = stops;
    Result got = collect(engine.submit(r));
    EXPECT_EQ(got.finish, want_stop ? FinishReason::kStop : FinishReason::kLength)
        << "min_tokens " << min_tokens;
    EXPECT_EQ(got.tokens.size(), want_tokens) << "min_tokens " << min_tokens;
    EXPECT_EQ(got.text, want_text) << "min_tokens " << min_tokens;
    if (want_stop) {
      ASSERT_TRUE(std::holds_alternative<std::string>(got.stop_reason)) << "min_tokens " << min_tokens;
      EXPECT_EQ(std::get<std::string>(got.stop_reason), stop);
    } else {
      EXPECT_TRUE(std::holds_alternative<std::monostate>(got.stop_reason));
    }
  }
}

// One prompt_logprobs entry per prompt token, equal to what the existing logprobs give for the prompt's
// prefix alone (the next token forced by logit_bias); the prompt is longer than a step's prompt-logprobs
// rows.
TEST_F(EngineRequestFieldsTest, PromptLogprobsMatchPrefixRuns) {
  const int k = 3;
  auto p = prompt(300, 100);
  std::vector<size_t> check;  // chunk boundaries (128) and a spread of others
  for (size_t j = 1; j < p.size(); j += 11) check.push_back(j);
  for (size_t j : {127, 128, 129, 255, 256, 257, 299}) check.push_back(j);
  std::map<size_t, TokenLogprob> want;
  std::map<size_t, int> want_rank;
  {
    EngineConfig cfg;
    cfg.enable_prefix_caching = false;
    Engine ref(*model_, *tok_, nullptr, cfg);
    ref.start();
    for (size_t j : check) {
      Request r = greedy(std::vector<int32_t>(p.begin(), p.begin() + static_cast<long>(j)), 1);
      r.logprobs = k;
      r.sampling.logit_bias = bias(p[j], 1e4f);
      Result got = collect(ref.submit(r));
      ASSERT_EQ(got.logprobs.size(), 1u) << got.error;
      ASSERT_EQ(got.logprobs[0].token, p[j]);
      want[j] = got.logprobs[0];
      // The whole distribution, for the rank: 1 + the tokens strictly more likely than p[j].
      r.logprobs = model_->config().vocab_size;
      Result all = collect(ref.submit(r));
      ASSERT_EQ(all.logprobs.size(), 1u) << all.error;
      int rank = 1;
      for (const auto& [id, lp] : all.logprobs[0].top) rank += lp > all.logprobs[0].logprob;
      want_rank[j] = rank;
    }
  }
  EngineConfig cfg;
  cfg.enable_prefix_caching = true;
  Engine engine(*model_, *tok_, nullptr, cfg);
  engine.start();
  collect(engine.submit(greedy(p, 2)));  // the prompt's blocks are now cached
  const int64_t hits_before = idle_stats(engine).prefix_cache_hit_tokens;
  auto run = [&] {
    Request r = greedy(p, 3);
    r.prompt_logprobs = k;
    return collect(engine.submit(r));
  };
  Result a = run();
  ASSERT_EQ(a.finish, FinishReason::kLength) << a.error;
  EXPECT_EQ(a.outputs_with_prompt_logprobs, 1);
  EXPECT_TRUE(a.prompt_logprobs_in_first);
  ASSERT_EQ(a.prompt_logprobs.size(), p.size());
  EXPECT_FALSE(a.prompt_logprobs[0].has_value());
  for (size_t j = 1; j < p.size(); ++j) {
    ASSERT_TRUE(a.prompt_logprobs[j].has_value()) << j;
    EXPECT_EQ(a.prompt_logprobs[j]->token, p[j]) << j;
    EXPECT_EQ(a.prompt_logprobs[j]->top.size(), static_cast<size_t>(k)) << j;
  }
  for (const auto& [j, w] : want) {
    const TokenLogprob& g = *a.prompt_logprobs[j];
    EXPECT_NEAR(g.logprob, w.logprob, 1e-4) << "entry " << j;
    EXPECT_EQ(g.rank, want_rank[j]) << "entry " << j;
    ASSERT_EQ(g.top.size(), w.top.size());
    for (size_t i = 0; i < w.top.size(); ++i) {
      EXPECT_EQ(g.top[i].first, w.top[i].first) << "entry " << j << " alternative " << i;
      EXPECT_NEAR(g.top[i].second, w.top[i].second, 1e-4) << "entry " << j << " alternative " << i;
    }
  }
  // A second identical request gives identical entries; neither reused the cached prefix.
  Result b = run();
  ASSERT_EQ(b.prompt_logprobs.size(), p.size());
  for (size_t j = 1; j < p.size(); ++j) {
    EXPECT_EQ(b.prompt_logprobs[j]->logprob, a.prompt_logprobs[j]->logprob) << j;
    EXPECT_EQ(b.prompt_logprobs[j]->top, a.prompt_logprobs[j]->top) << j;
  }
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(idle_stats(engine).prefix_cache_hit_tokens, hits_before);
}

// prompt_logprobs through chunked prefill shared with other requests and preemption (a KV cache too small for
// all): every entry once, equal to the request's run alone.
TEST_F(EngineRequestFieldsTest, PromptLogprobsSurvivePreemption) {
  auto lone = [&](const std::vector<int32_t>& p) {
    Engine e(*model_, *tok_, nullptr, EngineConfig{});
    e.start();
    Request r = greedy(p, 4);
    r.prompt_logprobs = 2;
    return collect(e.submit(r));
  };
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Result> want;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(prompt(90 + 7 * i, 300 + i));
    want.push_back(lone(prompts.back()));
  }
  EngineConfig cfg;
  cfg.sched.max_num_batched_tokens = 40;
  cfg.sched.max_prompt_logprob_rows = 24;
  cfg.kv_cache_tokens = 16 * 20;
  Engine engine(*model_, *tok_, nullptr, cfg);
  engine.start();
  std::vector<std::shared_ptr<RequestChannel>> with, without;
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 4; ++i) {
      Request r = greedy(prompts[i], 4);
      r.prompt_logprobs = 2;
      with.push_back(engine.submit(r));
      without.push_back(engine.submit(greedy(prompt(30, 400 + i + 4 * round), 30)));
    }
  for (size_t n = 0; n < with.size(); ++n) {
    Result got = collect(with[n]);
    const Result& w = want[n % 4];
    ASSERT_EQ(got.finish, FinishReason::kLength) << got.error;
    EXPECT_EQ(got.outputs_with_prompt_logprobs, 1);
    EXPECT_EQ(got.tokens, w.tokens);
    ASSERT_EQ(got.prompt_logprobs.size(), w.prompt_logprobs.size());
    for (size_t j = 1; j < w.prompt_logprobs.size(); ++j) {
      EXPECT_EQ(got.prompt_logprobs[j]->token, prompts[n % 4][j]);
      EXPECT_NEAR(got.prompt_logprobs[j]->logprob, w.prompt_logprobs[j]->logprob, 1e-4)
          << n << " entry " << j;
    }
  }
  for (auto& ch : without) EXPECT_EQ(collect(ch).finish, FinishReason::kLength);
  EXPECT_GT(engine.stats().preemptions_total, 0) << "the KV cache was meant to be too small for all requests";
}

// Restricted requests get the same tokens alone and in a batch with free requests, with and without adapters.
TEST_F(EngineRequestFieldsTest, RestrictedRequestsAreBatchInvariant) {
  auto make = [&](int kind, const std::string& adapter) {
    Request r = greedy(prompt(12 + kind, 500 + kind), 10, adapter);
    switch (kind) {
      case 0:
        r.constraint = std::make_shared<Mod3Factory>(20);
        break;
      case 1:
        r.allowed_token_ids =
            std::make_shared<const std::vector<int32_t>>(std::vector<int32_t>{3, 50, 51, 200, 333});
        break;
      case 2: {
        std::vector<std::vector<int32_t>> w;
        for (int32_t t = 0; t < 400; t += 2) w.push_back({t});
        r.bad_words = std::make_shared<const std::vector<std::vector<int32_t>>>(std::move(w));
        break;
      }
    }
    return r;
  };
  auto mgr = make_manager(2, 2);
  EngineConfig cfg;
  cfg.sched.max_num_batched_tokens = 24;
  Engine engine(*model_, *tok_, mgr.get(), cfg);
  engine.start();
  for (const std::string adapter : {"", "a1"}) {
    std::vector<std::vector<int32_t>> alone;
    for (int kind = 0; kind < 3; ++kind) alone.push_back(collect(engine.submit(make(kind, adapter))).tokens);
    std::vector<std::shared_ptr<RequestChannel>> mixed, free;
    for (int i = 0; i < 6; ++i)
      free.push_back(engine.submit(greedy(prompt(20, 600 + i), 12, i % 2 ? "a0" : "")));
    for (int kind = 0; kind < 3; ++kind) mixed.push_back(engine.submit(make(kind, adapter)));
    for (int kind = 0; kind < 3; ++kind)
      EXPECT_EQ(collect(mixed[kind]).tokens, alone[kind]) << kind << adapter;
    for (auto& ch : free) EXPECT_EQ(collect(ch).finish, FinishReason::kLength);
    for (int32_t t : alone[0]) EXPECT_EQ(t % 3, 0);
    for (int32_t t : alone[2]) EXPECT_TRUE(t % 2 == 1 || t >= 400) << t;
  }
}

}  // namespace
}  // namespace lp::sched
