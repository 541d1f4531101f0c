// The byte DFA of a code point tree against PCRE2 (an independent regex engine, UTF mode): random trees,
// random byte strings and near-misses of strings the tree matches; the UTF-8 range splitter exhaustively;
// the size of nested repeats; and the complexity limits.
#include "constrain/automaton.h"

#include <gtest/gtest.h>

#include <chrono>

#include "constrain/grammar.h"
#include "core/check.h"
#include "pcre_ref.h"
#include "text/tokenizer_utf8.h"

namespace lp::constrain {
namespace {

TEST(Utf8Sequences, cover_exactly_the_range) {
  // For ranges with awkward ends: every code point's encoding matches exactly one sequence when inside, none
  // when outside; every sequence's strings decode to code points inside (checked by enumerating them all).
  const std::pair<uint32_t, uint32_t> cases[] = {
      {0, 0x10FFFF},   {0x7F, 0x80},      {0x7FE, 0x801},       {0xD7FF, 0xE000}, {0xD800, 0xDFFF},
      {0x123, 0x4567}, {0xFFFE, 0x10001}, {0x10FF00, 0x10FFFF}, {0x41, 0x41},     {0x3FF, 0x1F3FF},
  };
  for (auto [lo, hi] : cases) {
    const auto seqs = utf8_sequences(lo, hi);
    auto matches = [&](const std::string& s) {
      int n = 0;
      for (const auto& seq : seqs) {
        if (seq.size() != s.size()) continue;
        bool ok = true;
        for (size_t k = 0; k < s.size(); ++k) {
          const auto b = static_cast<uint8_t>(s[k]);
          ok = ok && b >= seq[k].first && b <= seq[k].second;
        }
        n += ok;
      }
      return n;
    };
    uint64_t strings = 0;
    for (uint32_t c = 0; c <= 0x10FFFF; c += (c % 7 == 0 ? 1 : 13)) {
      std::string s;
      test::append_utf8(s, c);
      const bool inside = c >= lo && c <= hi && !(c >= 0xD800 && c <= 0xDFFF);
      ASSERT_EQ(matches(s), inside ? 1 : 0) << std::hex << c << " in " << lo << "-" << hi;
    }
    for (uint32_t c : {lo, hi, lo + 1, hi - 1, 0xD7FFu, 0xE000u, 0xD800u, 0xDFFFu}) {
      std::string s;
      test::append_utf8(s, c);
      const bool inside = c >= lo && c <= hi && !(c >= 0xD800 && c <= 0xDFFF);
      ASSERT_EQ(matches(s), inside ? 1 : 0) << std::hex << c;
    }
    for (const auto& seq : seqs) {
      uint64_t count = 1;
      for (auto [a, b] : seq) count *= b - a + 1;
      strings += count;
    }
    // Exactly one string per valid code point in the range: together with "each inside code point matches
    // one sequence", no sequence holds anything else.
    uint64_t expected = hi - lo + 1;
    if (lo <= 0xDFFF && hi >= 0xD800) expected -= std::min(hi, 0xDFFFu) - std::max(lo, 0xD800u) + 1;
    EXPECT_EQ(strings, expected) << std::hex << lo << "-" << hi;
  }
}

TEST(Dfa, random_trees_agree_with_pcre2) {
  test::TreeGen gen(12345);
  int compared = 0, matched = 0;
  for (int t = 0; t < 400; ++t) {
    const NodePtr tree = gen.tree(1 + t % 4);
    const Dfa dfa = compile_dfa(*tree, 200000, 20000);
    const test::Pcre ref(*tree);
    auto check = [&](const std::string& s) {
      const auto want = ref.full(s);
      if (!want) return;
      const int32_t end = dfa.start < 0 ? -1 : dfa.run(dfa.start, s);
      const bool got = end >= 0 && dfa.accepting[end];
      ASSERT_EQ(got, *want) << "pattern " << to_pcre(*tree).substr(0, 300) << " string '" << s << "' ("
                            << s.size() << " bytes)";
      // A prefix is alive in the trimmed DFA exactly when some match extends it.
      // (PCRE2 refuses a truncated final character even in partial mode: valid UTF-8 only.)
      const auto alive = s.empty() || !text::utf8_is_valid(s) ? std::nullopt : ref.prefix(s);
      if (alive) {
        ASSERT_EQ(end >= 0, *alive) << "prefix of " << to_pcre(*tree).substr(0, 300) << " string '" << s
                                    << "'";
      }
      ++compared;
      matched += got;
    };
    for (int i = 0; i < 40; ++i) {
      const std::string m = gen.member(*tree);
      check(m);
      check(gen.mutate(m));
      check(gen.random_bytes(8));
    }
  }
  EXPECT_GT(compared, 40000);
  EXPECT_GT(matched, compared / 5);  // members really are members, so the comparison covers both answers
}

TEST(Dfa, grammar_matches_is_the_dfa) {
  // Grammar::matches through the public interface, on a tree with a separated repeat of non-ASCII sets.
  const NodePtr tree =
      concat({text("["), repeat(set({{0x430, 0x44F}, {'0', '9'}}), 0, -1, text(", ")), text("]")});
  const Dfa dfa = compile_dfa(*tree, 1000, 1000);
  const test::Pcre ref(*tree);
  for (const char* s : {"[]", "[ж]", "[ж, 5, я]", "[ж,5]", "[, ж]", "[ж, ]", "[\xD0]", "[a]"}) {
    const int32_t end = dfa.run(dfa.start, s);
    EXPECT_EQ(end >= 0 && dfa.accepting[end], *ref.full(s)) << s;
  }
}

// A JSON-like value nested `depth` levels: arrays and objects of the level below, each item ONE subtree.
NodePtr nested_value(int depth) {
  NodePtr str = concat({text("\""), repeat(set({{'a', 'z'}}), 0, -1), text("\"")});
  NodePtr value = alt({str, text("1"), text("null")});
  for (int d = 0; d < depth; ++d) {
    NodePtr arr = concat({text("["), repeat(value, 0, -1, text(",")), text("]")});
    NodePtr obj = concat({text("{"), repeat(concat({str, text(":"), value}), 0, -1, text(",")), text("}")});
    value = alt({str, text("1"), text("null"), arr, obj});
  }
  return value;
}

TEST(Dfa, unbounded_separated_repeat_keeps_one_copy_of_the_item) {
  // Two uses of the level below per level: states grow by ~2x per level (4x if the item were copied for
  // the separator). Measured through the NFA limit: the smallest limit that compiles must not quadruple.
  auto smallest_nfa = [](const NodePtr& tree) {
    int lo = 1, hi = 1 << 22;
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      try {
        compile_dfa(*tree, mid, 1 << 20);
        hi = mid;
      } catch (const Error&) {
        lo = mid + 1;
      }
    }
    return lo;
  };
  int prev = smallest_nfa(nested_value(3));
  for (int d = 4; d <= 7; ++d) {
    const int n = smallest_nfa(nested_value(d));
    EXPECT_LT(n, prev * 5 / 2) << "depth " << d << ": " << prev << " -> " << n << " NFA states";
    prev = n;
  }
  const NodePtr deep = nested_value(3);
  const Dfa dfa = compile_dfa(*deep, 200000, 20000);
  const test::Pcre ref(*deep);
  for (const char* s :
       {"[]", "[[1,[null]],{\"a\":[{}]}]", "{\"k\":{\"k\":{\"k\":\"v\"}}}", "[1,]", "{\"a\"}"}) {
    const int32_t end = dfa.run(dfa.start, s);
    EXPECT_EQ(end >= 0 && dfa.accepting[end], *ref.full(s)) << s;
  }
}

// horizon_classes against its definition: two states share a class iff the same strings of length <= h
// stay alive from both, enumerated over one byte per byte class.
TEST(Dfa, horizon_classes_group_states_with_the_same_short_futures) {
  test::TreeGen gen(777);
  int merged = 0;
  std::vector<NodePtr> trees = {
      repeat(set({{'a', 'b'}}), 0, 12),
      concat({text("\""), repeat(set({{0x20, 0x7E}, {0x430, 0x44F}}), 0, 9), text("\"")})};
  for (int i = 0; i < 40; ++i) trees.push_back(gen.tree(3));
  for (const NodePtr& tree : trees) {
    const Dfa dfa = compile_dfa(*tree, 100000, 5000);
    if (dfa.num_states() == 0 || dfa.num_states() > 300) continue;
    std::vector<uint8_t> rep;  // one byte per class
    for (int c = 0, b = 0; b < 256; ++b)
      if (dfa.byte_class[b] == c) {
        rep.push_back(static_cast<uint8_t>(b));
        ++c;
      }
    for (int h = 1; h <= 3; ++h) {
      const std::vector<int32_t> cls = horizon_classes(dfa, h);
      // Alive strings of length <= h as a bit vector over all class sequences.
      auto future = [&](int32_t s) {
        std::vector<bool> out;
        std::vector<std::pair<int32_t, int>> frontier = {{s, 0}};
        for (int len = 1; len <= h; ++len) {
          std::vector<std::pair<int32_t, int>> nxt;
          for (auto [q, _] : frontier)
            for (uint8_t b : rep) {
              const int32_t t = q < 0 ? -1 : dfa.step(q, b);
              out.push_back(t >= 0);
              nxt.emplace_back(t, 0);
            }
          frontier.swap(nxt);
        }
        return out;
      };
      std::vector<std::vector<bool>> f(dfa.num_states());
      for (int s = 0; s < dfa.num_states(); ++s) f[s] = future(s);
      for (int s = 0; s < dfa.num_states(); ++s)
        for (int t = s + 1; t < dfa.num_states(); ++t) {
          ASSERT_EQ(cls[s] == cls[t], f[s] == f[t])
              << to_pcre(*tree).substr(0, 200) << " h " << h << " states " << s << ", " << t;
          merged += cls[s] == cls[t];
        }
    }
  }
  EXPECT_GT(merged, 50);
}

TEST(Dfa, trimmed_and_empty_languages) {
  const Dfa none = compile_dfa(*alt({}), 100, 100);
  EXPECT_EQ(none.start, -1);
  const Dfa dead_branch = compile_dfa(*alt({text("ab"), concat({text("cd"), set({})})}), 100, 100);
  EXPECT_GE(dead_branch.start, 0);
  EXPECT_EQ(dead_branch.step(dead_branch.start, 'c'), -1);  // "c..." can never complete
  EXPECT_GE(dead_branch.step(dead_branch.start, 'a'), 0);
}

TEST(Limits, over_large_trees_are_refused_quickly) {
  auto expect_refused = [](const NodePtr& tree, const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      compile_dfa(*tree, GrammarLimits{}.max_nfa_states, GrammarLimits{}.max_dfa_states);
      ADD_FAILURE() << what << ": compiled";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
      EXPECT_NE(std::string(e.what()).find("too complex"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0) << what;
  };
  // NFA: a bounded repeat copies its item.
  expect_refused(repeat(text("abcdefgh"), 0, 60000), "long bounded repeat");
  expect_refused(repeat(repeat(set({{0, 0x10FFFF}}), 0, 300), 0, 300), "nested bounded repeats");
  // Nesting deep enough to overflow a recursive compiler's stack.
  std::vector<NodePtr> levels{text("x")};
  for (int i = 0; i < 100000; ++i) levels.push_back(alt({levels.back(), text("y")}));
  expect_refused(levels.back(), "deep nesting");
  // Released from the top while every level below is still held, so no destructor recurses down the chain
  // (front ends never build such depth: groups nest at most 100 deep, quantifiers don't stack).
  while (!levels.empty()) levels.pop_back();
  // DFA: (a|b)*a(a|b){20} needs 2^20 states.
  NodePtr ab = set({{'a', 'b'}});
  expect_refused(concat({repeat(ab, 0, -1), text("a"), repeat(ab, 20, 20)}), "exponential DFA");
}

}  // namespace
}  // namespace lp::constrain
