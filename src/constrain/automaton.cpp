#include "constrain/automaton.h"

#include <algorithm>
#include <numeric>
#include <unordered_map>

#include "core/check.h"

namespace lp::constrain {

namespace {

[[noreturn]] void too_complex(int limit, const char* what) {
  fail("the structured output is too complex: more than {} {} (simplify the schema or pattern)", limit, what);
}

int utf8_len(uint32_t c) {
  return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
}

void encode(uint32_t c, uint8_t* out) {
  switch (utf8_len(c)) {
    case 1:
      out[0] = static_cast<uint8_t>(c);
      break;
    case 2:
      out[0] = static_cast<uint8_t>(0xC0 | (c >> 6));
      out[1] = static_cast<uint8_t>(0x80 | (c & 0x3F));
      break;
    case 3:
      out[0] = static_cast<uint8_t>(0xE0 | (c >> 12));
      out[1] = static_cast<uint8_t>(0x80 | ((c >> 6) & 0x3F));
      out[2] = static_cast<uint8_t>(0x80 | (c & 0x3F));
      break;
    default:
      out[0] = static_cast<uint8_t>(0xF0 | (c >> 18));
      out[1] = static_cast<uint8_t>(0x80 | ((c >> 12) & 0x3F));
      out[2] = static_cast<uint8_t>(0x80 | ((c >> 6) & 0x3F));
      out[3] = static_cast<uint8_t>(0x80 | (c & 0x3F));
  }
}

// lo..hi of one encoded length: split until every continuation position spans a whole aligned block, so the
// byte ranges of lo's and hi's encodings describe exactly the code points in between (as RE2 and Rust's
// regex-syntax do).
void split_same_length(uint32_t lo, uint32_t hi, std::vector<ByteRangeSeq>& out) {
  const int n = utf8_len(lo);
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        split_same_length(lo, lo | m, out);
        split_same_length((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        split_same_length(lo, (hi & ~m) - 1, out);
        split_same_length(hi & ~m, hi, out);
        return;
      }
    }
  }
  uint8_t a[4], b[4];
  encode(lo, a);
  encode(hi, b);
  ByteRangeSeq seq;
  for (int k = 0; k < n; ++k) seq.emplace_back(a[k], b[k]);
  out.push_back(std::move(seq));
}

// Thompson NFA, built right to left: build(node, next) makes the states of `node` whose every match ends by
// going on to state `next`, and returns its entry state. Binary splits keep a state small.
class NfaBuilder {
 public:
  enum Kind : uint8_t { kByte, kSplit, kEps, kMatch };
  struct State {
    Kind kind;
    uint8_t lo = 0, hi = 0;
    int32_t out1 = -1, out2 = -1;
  };

  explicit NfaBuilder(int max_states) : max_states_(max_states) {}

  int32_t add(State s) {
    if (static_cast<int>(states_.size()) >= max_states_) too_complex(max_states_, "automaton states (NFA)");
    states_.push_back(s);
    return static_cast<int32_t>(states_.size() - 1);
  }
  int32_t split(int32_t a, int32_t b) { return add({kSplit, 0, 0, a, b}); }

  int32_t build(const Node& n, int32_t next) {
    // The tree comes from outside (a pattern, a schema): bound the recursion instead of the stack.
    if (++depth_ > kMaxDepth)
      fail("the structured output is too complex: nested more than {} levels deep", kMaxDepth);
    const int32_t entry = build_node(n, next);
    --depth_;
    return entry;
  }

  std::vector<State>& states() { return states_; }

 private:
  static constexpr int kMaxDepth = 2000;

  int32_t build_node(const Node& n, int32_t next) {
    switch (n.kind) {
      case Node::Kind::kEmpty:
        return next;
      case Node::Kind::kText: {
        int32_t cur = next;
        for (size_t i = n.text.size(); i-- > 0;) {
          const auto b = static_cast<uint8_t>(n.text[i]);
          cur = add({kByte, b, b, cur, -1});
        }
        return cur;
      }
      case Node::Kind::kSet: {
        std::vector<int32_t> entries;
        for (auto [lo, hi] : n.ranges)
          for (const ByteRangeSeq& seq : utf8_sequences(lo, hi)) {
            int32_t cur = next;
            for (size_t k = seq.size(); k-- > 0;) cur = add({kByte, seq[k].first, seq[k].second, cur, -1});
            entries.push_back(cur);
          }
        return any_of(entries);
      }
      case Node::Kind::kConcat: {
        int32_t cur = next;
        for (size_t i = n.kids.size(); i-- > 0;) cur = build(*n.kids[i], cur);
        return cur;
      }
      case Node::Kind::kAlt: {
        std::vector<int32_t> entries;
        for (const auto& k : n.kids) entries.push_back(build(*k, next));
        return any_of(entries);
      }
      case Node::Kind::kRepeat:
        return build_repeat(n, next);
    }
    LP_CHECK(false, "unknown node kind");
  }

  // A state that leads to each entry (nothing: a state that never matches).
  int32_t any_of(const std::vector<int32_t>& entries) {
    if (entries.empty()) return add({kByte, 1, 0, -1, -1});  // lo > hi: no byte passes
    int32_t cur = entries.back();
    for (size_t i = entries.size() - 1; i-- > 0;) cur = split(entries[i], cur);
    return cur;
  }

  // item (sep item)* with ONE copy of item (and of sep): the item's exit loops back to its entry through the
  // separator, so nesting stays linear in the tree instead of doubling per level.
  int32_t loop(const Node& item, const Node* sep, int32_t next) {
    const int32_t back = add({kEps, 0, 0, -1, -1});
    const int32_t again = sep ? build(*sep, back) : back;
    const int32_t exit = split(next, again);
    const int32_t entry = build(item, exit);
    states_[back].out1 = entry;
    return entry;
  }

  int32_t build_repeat(const Node& n, int32_t next) {
    const Node& item = *n.kids[0];
    const Node* sep = n.kids.size() > 1 ? n.kids[1].get() : nullptr;
    if (n.max == 0) return next;
    if (n.max < 0) {
      if (n.min == 0) return split(loop(item, sep, next), next);
      int32_t cur = loop(item, sep, next);
      for (int i = 1; i < n.min; ++i) {
        if (sep) cur = build(*sep, cur);
        cur = build(item, cur);
      }
      return cur;
    }
    // Bounded: min' = max(min, 1) items, then max - min' optional (sep item)s, nested; optional as a whole
    // when min is 0.
    const int min1 = std::max(n.min, 1);
    int32_t cur = next;
    for (int i = 0; i < n.max - min1; ++i) {
      int32_t more = build(item, cur);
      if (sep) more = build(*sep, more);
      cur = split(more, next);
    }
    for (int i = 1; i < min1; ++i) {
      cur = build(item, cur);
      if (sep) cur = build(*sep, cur);
    }
    cur = build(item, cur);
    return n.min == 0 ? split(cur, next) : cur;
  }

  int max_states_;
  int depth_ = 0;
  std::vector<State> states_;
};

struct VecHash {
  size_t operator()(const std::vector<int32_t>& v) const noexcept {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ v.size();
    for (int32_t x : v) h = (h ^ static_cast<uint32_t>(x)) * 0x100000001B3ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

}  // namespace

std::vector<ByteRangeSeq> utf8_sequences(uint32_t lo, uint32_t hi) {
  std::vector<ByteRangeSeq> out;
  hi = std::min<uint32_t>(hi, 0x10FFFF);
  auto add_valid = [&](uint32_t a, uint32_t b) {
    // Cut at the encoded-length boundaries so each piece has one length.
    for (uint32_t top : {0x7Fu, 0x7FFu, 0xFFFFu, 0x10FFFFu}) {
      if (a > b) return;
      if (a <= top) {
        split_same_length(a, std::min(b, top), out);
        a = top + 1;
      }
    }
  };
  if (lo > hi) return out;
  if (hi < 0xD800 || lo > 0xDFFF) {
    add_valid(lo, hi);
  } else {
    if (lo < 0xD800) add_valid(lo, 0xD7FF);
    if (hi > 0xDFFF) add_valid(0xE000, hi);
  }
  return out;
}

Dfa compile_dfa(const Node& root, int max_nfa_states, int max_dfa_states) {
  NfaBuilder nfa(max_nfa_states);
  const int32_t match = nfa.add({NfaBuilder::kMatch});
  const int32_t entry = nfa.build(root, match);
  auto& st = nfa.states();
  const size_t n = st.size();

  // Byte classes: bytes that no edge tells apart.
  std::array<bool, 257> cut{};
  for (const auto& s : st)
    if (s.kind == NfaBuilder::kByte && s.lo <= s.hi) cut[s.lo] = cut[s.hi + 1] = true;
  Dfa dfa;
  int c = 0;
  for (int b = 0; b < 256; ++b) {
    if (b > 0 && cut[b]) ++c;
    dfa.byte_class[b] = static_cast<uint8_t>(c);
  }
  const int classes = c + 1;
  dfa.num_classes = classes;

  // Epsilon closure, keeping the states that matter for a DFA state: byte edges and the match.
  std::vector<uint32_t> seen(n, 0);
  uint32_t stamp = 0;
  std::vector<int32_t> stack;
  auto closure = [&](std::vector<int32_t>& seeds, std::vector<int32_t>& out) {
    ++stamp;
    out.clear();
    stack.clear();
    for (int32_t s : seeds)
      if (seen[s] != stamp) {
        seen[s] = stamp;
        stack.push_back(s);
      }
    while (!stack.empty()) {
      const int32_t s = stack.back();
      stack.pop_back();
      const auto& x = st[s];
      if (x.kind == NfaBuilder::kByte || x.kind == NfaBuilder::kMatch) {
        if (x.kind == NfaBuilder::kMatch || x.lo <= x.hi) out.push_back(s);
        continue;
      }
      for (int32_t t : {x.out1, x.out2})
        if (t >= 0 && seen[t] != stamp) {
          seen[t] = stamp;
          stack.push_back(t);
        }
    }
    std::sort(out.begin(), out.end());
  };

  std::unordered_map<std::vector<int32_t>, int32_t, VecHash> ids;
  std::vector<std::vector<int32_t>> sets;
  std::vector<int32_t> next;  // untrimmed, states * classes
  std::vector<uint8_t> accepting;
  auto intern = [&](std::vector<int32_t>&& set) -> int32_t {
    if (set.empty()) return -1;
    auto [it, fresh] = ids.try_emplace(set, static_cast<int32_t>(sets.size()));
    if (fresh) {
      if (static_cast<int>(sets.size()) >= max_dfa_states) too_complex(max_dfa_states, "automaton states");
      accepting.push_back(std::binary_search(set.begin(), set.end(), match));
      sets.push_back(std::move(set));
      next.resize(next.size() + classes, -1);
    }
    return it->second;
  };
  std::vector<int32_t> seeds{entry}, set;
  closure(seeds, set);
  const int32_t start = intern(std::move(set));
  std::vector<std::vector<int32_t>> buckets(classes);
  for (size_t d = 0; d < sets.size(); ++d) {
    for (auto& b : buckets) b.clear();
    for (int32_t s : sets[d]) {
      const auto& x = st[s];
      if (x.kind != NfaBuilder::kByte) continue;
      for (int k = dfa.byte_class[x.lo]; k <= dfa.byte_class[x.hi]; ++k) buckets[k].push_back(x.out1);
    }
    for (int k = 0; k < classes; ++k) {
      if (buckets[k].empty()) continue;
      closure(buckets[k], set);
      const int32_t to = intern(std::move(set));
      set = {};
      next[d * classes + k] = to;
    }
  }

  // Trim: keep the states from which an accepting state is reachable.
  const size_t total = sets.size();
  std::vector<std::vector<int32_t>> preds(total);
  for (size_t d = 0; d < total; ++d)
    for (int k = 0; k < classes; ++k)
      if (const int32_t to = next[d * classes + k]; to >= 0) preds[to].push_back(static_cast<int32_t>(d));
  std::vector<uint8_t> live(total, 0);
  std::vector<int32_t> work;
  for (size_t d = 0; d < total; ++d)
    if (accepting[d]) {
      live[d] = 1;
      work.push_back(static_cast<int32_t>(d));
    }
  while (!work.empty()) {
    const int32_t d = work.back();
    work.pop_back();
    for (int32_t p : preds[d])
      if (!live[p]) {
        live[p] = 1;
        work.push_back(p);
      }
  }
  std::vector<int32_t> renum(total, -1);
  int32_t kept = 0;
  for (size_t d = 0; d < total; ++d)
    if (live[d]) renum[d] = kept++;
  dfa.next.assign(static_cast<size_t>(kept) * classes, -1);
  dfa.accepting.assign(kept, 0);
  dfa.has_exit.assign(kept, 0);
  for (size_t d = 0; d < total; ++d) {
    if (!live[d]) continue;
    const int32_t r = renum[d];
    dfa.accepting[r] = accepting[d];
    for (int k = 0; k < classes; ++k) {
      const int32_t to = next[d * classes + k];
      const int32_t rt = to >= 0 ? renum[to] : -1;
      dfa.next[static_cast<size_t>(r) * classes + k] = rt;
      if (rt >= 0) dfa.has_exit[r] = 1;
    }
  }
  dfa.start = start >= 0 ? renum[start] : -1;
  return dfa;
}

std::vector<int32_t> horizon_classes(const Dfa& dfa, int rounds) {
  const int n = dfa.num_states();
  const int c = dfa.num_classes;
  std::vector<int32_t> cls(n, 0), fresh(n);
  if (int64_t{n} * c * rounds > 50'000'000) {
    std::iota(cls.begin(), cls.end(), 0);
    return cls;
  }
  int count = n > 0 ? 1 : 0;
  std::vector<int32_t> sig(static_cast<size_t>(c) + 1);
  for (int r = 0; r < rounds; ++r) {
    std::unordered_map<std::vector<int32_t>, int32_t, VecHash> ids;
    for (int s = 0; s < n; ++s) {
      sig[0] = cls[s];
      for (int k = 0; k < c; ++k) {
        const int32_t t = dfa.next[static_cast<size_t>(s) * c + k];
        sig[k + 1] = t < 0 ? -1 : cls[t];
      }
      fresh[s] = ids.try_emplace(sig, static_cast<int32_t>(ids.size())).first->second;
    }
    cls.swap(fresh);
    const int now = static_cast<int>(ids.size());
    if (now == count) break;  // refinement only splits: the same count means the same partition
    count = now;
  }
  return cls;
}

}  // namespace lp::constrain
