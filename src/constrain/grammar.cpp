#include "constrain/grammar.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <deque>
#include <limits>
#include <numeric>

#include "constrain/automaton.h"
#include "constrain/mask_apply.h"
#include "core/check.h"
#include "text/tokenizer.h"

namespace lp::constrain {

// ---------------------------------------------------------------------------------------------------------
// Vocabulary: byte tries of the tokens (short and long ones apart, see kShortBytes), in depth-first preorder,
// so one DFA state's allowed set is a forward pass that jumps over (skip) every subtree the DFA rejects.

struct Vocabulary::Impl {
  // 8 bytes: the pass streams the whole array for states that allow most tokens, so its size is time.
  struct TrieNode {
    uint32_t token : 24;  // the token whose bytes end here, or `size` (a spare bit past the ids: no branch)
    uint32_t byte : 8;
    uint32_t skip : 24;  // index just past this node's subtree
    uint32_t depth : 8;  // 1 for a token's first byte
  };
  struct Trie {
    std::vector<TrieNode> nodes;
    int max_depth = 0;
  };
  static constexpr int kMaxTokenBytes = 255;  // longer tokens (none in real vocabularies) never match
  static constexpr int64_t kMaxIndex = (1 << 24) - 1;  // vocabulary ids and trie nodes
  // Tokens up to kShortBytes long go in one trie, longer ones in another. A short-token mask depends only on
  // what the DFA does over the next kShortBytes bytes, so states alike that far share it (every position of a
  // long bounded string but the last few); the long-token trie is small (2k of qwen3's 151k tokens, 24k
  // nodes of 333k) and walked per state.
  static constexpr int kShortBytes = 16;
  int32_t size = 0;
  std::vector<std::string> bytes;
  Trie short_tokens, long_tokens;
};

namespace {

// The trie of `ids` (sorted by bytes) in preorder. Sorted strings give the preorder directly: each adds the
// nodes past its common prefix with the one before. A token whose bytes repeat another's (a <0xNN> byte token
// and the same single-byte token) becomes a second node at the same depth right after the first: the same
// transition, so the walk stays exact. A node's subtree ends where the next node at its depth or above
// begins.
Vocabulary::Impl::Trie build_trie(const std::vector<std::string>& b, const std::vector<int32_t>& ids,
                                  int32_t spare) {
  using Impl = Vocabulary::Impl;
  Impl::Trie trie;
  auto& nodes = trie.nodes;
  std::vector<int32_t> open;  // nodes whose subtree has not ended, by depth
  auto emit = [&](uint8_t byte, int depth, int32_t token) {
    static_assert(sizeof(Impl::TrieNode) == 8);
    const auto index = static_cast<int32_t>(nodes.size());
    while (!open.empty() && static_cast<int>(nodes[open.back()].depth) >= depth) {
      nodes[open.back()].skip = static_cast<uint32_t>(index);
      open.pop_back();
    }
    if (index >= Impl::kMaxIndex) fail("the vocabulary is too large for constrained decoding");
    nodes.push_back({static_cast<uint32_t>(token), byte, 0, static_cast<uint32_t>(depth)});
    open.push_back(index);
    trie.max_depth = std::max(trie.max_depth, depth);
  };
  const std::string* prev = nullptr;
  for (int32_t id : ids) {
    const std::string& s = b[id];
    size_t common = 0;
    if (prev) {
      const size_t limit = std::min(prev->size(), s.size());
      while (common < limit && (*prev)[common] == s[common]) ++common;
    }
    if (prev && common == s.size()) {  // same bytes as the previous token
      emit(static_cast<uint8_t>(s.back()), static_cast<int>(s.size()), id);
    } else {
      for (size_t k = common; k < s.size(); ++k)
        emit(static_cast<uint8_t>(s[k]), static_cast<int>(k + 1), k + 1 == s.size() ? id : spare);
    }
    prev = &s;
  }
  for (int32_t i : open) nodes[i].skip = static_cast<uint32_t>(nodes.size());
  return trie;
}

}  // namespace

Vocabulary::Vocabulary(const text::Tokenizer& tok) {
  auto impl = std::make_shared<Impl>();
  impl->size = tok.vocab_size();
  if (impl->size >= Impl::kMaxIndex)
    fail("a vocabulary of {} tokens is too large for constrained decoding", impl->size);
  impl->bytes.resize(impl->size);
  std::vector<int32_t> short_ids, long_ids;
  for (int32_t id = 0; id < impl->size; ++id) {
    impl->bytes[id] = tok.token_bytes(id);
    const size_t len = impl->bytes[id].size();
    if (len > 0 && len <= Impl::kShortBytes)
      short_ids.push_back(id);
    else if (len > Impl::kShortBytes && len <= Impl::kMaxTokenBytes)
      long_ids.push_back(id);
  }
  const auto& b = impl->bytes;
  auto by_bytes = [&](int32_t x, int32_t y) { return b[x] != b[y] ? b[x] < b[y] : x < y; };
  std::sort(short_ids.begin(), short_ids.end(), by_bytes);
  std::sort(long_ids.begin(), long_ids.end(), by_bytes);
  impl->short_tokens = build_trie(b, short_ids, impl->size);
  impl->long_tokens = build_trie(b, long_ids, impl->size);
  impl_ = std::move(impl);
}

int32_t Vocabulary::size() const {
  return impl_->size;
}
const std::string& Vocabulary::bytes(int32_t id) const {
  static const std::string kNone;
  return id >= 0 && id < impl_->size ? impl_->bytes[id] : kNone;
}

// ---------------------------------------------------------------------------------------------------------
// Grammar

namespace {

struct Mask {
  std::vector<uint64_t> bits;  // bit id: the token keeps the DFA alive
  bool any = false;
  size_t bytes() const { return bits.size() * sizeof(uint64_t) + sizeof(Mask) + 64; }
};

// Everything a constraint needs, shared so a running request keeps it alive whatever happens to the Grammar.
struct GrammarCore {
  Dfa dfa;
  std::vector<int32_t> rows;  // dfa.next with each target premultiplied by num_classes (-1 stays)
  std::shared_ptr<const Vocabulary> vocab;
  GrammarLimits limits;

  mutable std::mutex mu;  // guards the cache below
  // States whose masks are equal for sure: the same byte strings up to the longest token stay alive from
  // them (k-equivalence with k = the vocabulary's longest token, acceptance ignored: EOS is handled apart).
  // Positions far from the end of a long bounded repeat (a string with maxLength) share one mask this way.
  std::vector<int32_t> mask_class;
  std::vector<int32_t> short_class;  // the same over Vocabulary::Impl::kShortBytes bytes, for short tokens
  mutable std::vector<std::shared_ptr<const Mask>> masks;  // by key (see cached_or), null: not cached
  mutable std::deque<int32_t> cached;                      // oldest first, for eviction
  mutable size_t cached_bytes = 0;

  // The pruned trie pass: sets the bit of every token of `trie` whose bytes keep the DFA alive from `state`
  // (and the spare bit `size`). The loop is a chain of dependent loads (parent state -> child state), kept
  // free of unpredictable branches: states are stored premultiplied by the class count (row offsets), and a
  // node that ends no token sets the spare bit.
  void walk(const Vocabulary::Impl::Trie& trie, int32_t state, uint64_t* bits) const {
    std::vector<int32_t> at(static_cast<size_t>(trie.max_depth) + 1);
    at[0] = state * dfa.num_classes;
    const Vocabulary::Impl::TrieNode* nodes = trie.nodes.data();
    const auto n = static_cast<int32_t>(trie.nodes.size());
    const int32_t* next = rows.data();
    const uint8_t* cls = dfa.byte_class.data();
    for (int32_t i = 0; i < n;) {
      const auto& x = nodes[i];
      const int32_t s = next[at[x.depth - 1] + cls[x.byte]];
      if (s < 0) {
        i = static_cast<int32_t>(x.skip);
        continue;
      }
      at[x.depth] = s;
      const uint32_t tok = x.token;
      bits[tok >> 6] |= uint64_t{1} << (tok & 63);
      ++i;
    }
  }

  std::shared_ptr<const Mask> finish(std::vector<uint64_t> bits) const {
    const int32_t spare = vocab->size();
    bits[spare >> 6] &= ~(uint64_t{1} << (spare & 63));
    auto m = std::make_shared<Mask>();
    m->any = std::any_of(bits.begin(), bits.end(), [](uint64_t w) { return w != 0; });
    m->bits = std::move(bits);
    return m;
  }

  // The mask of a state: its short-token part, shared by the states alike over kShortBytes bytes, plus its
  // long tokens; the whole shared by the states alike over the longest token.
  std::shared_ptr<const Mask> mask_of(int32_t state) const {
    const auto& v = vocab->impl();
    return cached_or(mask_class[state], [&] {
      const int32_t n = dfa.num_states();
      std::shared_ptr<const Mask> short_part = cached_or(n + short_class[state], [&] {
        std::vector<uint64_t> bits(static_cast<size_t>(v.size) / 64 + 1, 0);  // room for the spare bit
        walk(v.short_tokens, state, bits.data());
        return finish(std::move(bits));
      });
      if (v.long_tokens.nodes.empty()) return short_part;
      std::vector<uint64_t> bits = short_part->bits;
      walk(v.long_tokens, state, bits.data());
      return finish(std::move(bits));
    });
  }

  // The cached mask under `key` ([0, n): whole masks by mask_class, [n, 2n): short parts by short_class), or
  // make() (called outside the lock: other requests keep going) cached. Bounded: the oldest are evicted until
  // the new one fits (a mask in use stays alive through its shared_ptr).
  template <class Make>
  std::shared_ptr<const Mask> cached_or(int32_t key, Make make) const {
    {
      std::lock_guard lock(mu);
      if (masks[key]) return masks[key];
    }
    std::shared_ptr<const Mask> m = make();
    std::lock_guard lock(mu);
    if (masks[key]) return masks[key];
    while (!cached.empty() && cached_bytes + m->bytes() > limits.mask_cache_bytes) {
      cached_bytes -= masks[cached.front()]->bytes();
      masks[cached.front()].reset();
      cached.pop_front();
    }
    if (cached_bytes + m->bytes() <= limits.mask_cache_bytes) {
      masks[key] = m;
      cached.push_back(key);
      cached_bytes += m->bytes();
    }
    return m;
  }
};

}  // namespace

struct Grammar::Impl {
  std::shared_ptr<const GrammarCore> core;
};

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

class GrammarConstraint final : public sched::TokenConstraint {
 public:
  explicit GrammarConstraint(std::shared_ptr<const GrammarCore> core)
      : core_(std::move(core)), state_(core_->dfa.start) {}

  bool mask(std::span<float> logits, std::span<const int32_t> eos) override {
    eos_.assign(eos.begin(), eos.end());
    const Dfa& dfa = core_->dfa;
    const bool dead = ended_ || state_ < 0;
    const bool may_end = !dead && dfa.accepting[state_];
    // EOS logits as the model gave them, restored below where the output may end.
    saved_.clear();
    for (int32_t id : eos)
      saved_.push_back(id >= 0 && static_cast<size_t>(id) < logits.size() ? logits[id] : kNegInf);
    bool any = false;
    if (dead || !dfa.has_exit[state_]) {
      std::fill(logits.begin(), logits.end(), kNegInf);
    } else {
      mask_ = core_->mask_of(state_);
      apply_mask(logits, mask_->bits);
      any = mask_->any;
      if (any && logits.size() < static_cast<size_t>(core_->vocab->size()))  // a row shorter than the vocab
        any = std::any_of(logits.begin(), logits.end(), [](float x) { return x != kNegInf; });
    }
    for (size_t i = 0; i < eos.size(); ++i) {
      const int32_t id = eos[i];
      if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
      if (may_end) {
        logits[id] = saved_[i];
        any = true;
      } else {
        logits[id] = kNegInf;
      }
    }
    return any;
  }

  void accept(int32_t token) override {
    if (ended_ || state_ < 0) return;
    if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) {
      ended_ = true;
      return;
    }
    const std::string& b = core_->vocab->bytes(token);
    state_ = b.empty() ? -1 : core_->dfa.run(state_, b);  // a token mask() refused leaves nothing allowed
  }

  bool complete() const override {
    return ended_ || (state_ >= 0 && core_->dfa.accepting[state_] && !core_->dfa.has_exit[state_]);
  }

 private:
  std::shared_ptr<const GrammarCore> core_;
  int32_t state_;
  bool ended_ = false;
  std::vector<int32_t> eos_;
  std::vector<float> saved_;
  std::shared_ptr<const Mask> mask_;
};

}  // namespace

std::shared_ptr<const Grammar> Grammar::compile(const NodePtr& root, std::shared_ptr<const Vocabulary> vocab,
                                                const GrammarLimits& limits) {
  LP_CHECK(root != nullptr && vocab != nullptr);
  auto core = std::make_shared<GrammarCore>();
  core->dfa = compile_dfa(*root, limits.max_nfa_states, limits.max_dfa_states);
  LP_CHECK(static_cast<int64_t>(core->dfa.num_states()) * core->dfa.num_classes < (int64_t{1} << 31));
  core->rows = core->dfa.next;
  for (int32_t& r : core->rows)
    if (r >= 0) r *= core->dfa.num_classes;
  core->vocab = std::move(vocab);
  core->limits = limits;
  const auto& v = core->vocab->impl();
  core->mask_class = horizon_classes(core->dfa, std::max(v.short_tokens.max_depth, v.long_tokens.max_depth));
  core->short_class = horizon_classes(core->dfa, v.short_tokens.max_depth);
  core->masks.resize(2 * static_cast<size_t>(core->dfa.num_states()));
  auto impl = std::make_unique<Impl>();
  impl->core = std::move(core);
  return std::make_shared<const Grammar>(std::move(impl));
}

Grammar::Grammar(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Grammar::~Grammar() = default;

std::unique_ptr<sched::TokenConstraint> Grammar::start() const {
  return std::make_unique<GrammarConstraint>(impl_->core);
}

int Grammar::num_states() const {
  return impl_->core->dfa.num_states();
}

bool Grammar::matches(std::string_view bytes) const {
  const Dfa& dfa = impl_->core->dfa;
  if (dfa.start < 0) return false;
  const int32_t s = dfa.run(dfa.start, bytes);
  return s >= 0 && dfa.accepting[s];
}

// ---------------------------------------------------------------------------------------------------------

GrammarCache::GrammarCache(std::shared_ptr<const Vocabulary> vocab, size_t max_entries, GrammarLimits limits)
    : vocab_(std::move(vocab)), max_entries_(std::max<size_t>(max_entries, 1)), limits_(limits) {}

std::shared_ptr<const Grammar> GrammarCache::get(const std::string& key,
                                                 const std::function<NodePtr()>& build) {
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].first == key) {
        auto hit = entries_[i];
        entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
        entries_.push_back(hit);
        return hit.second;
      }
  }
  // Compiled outside the lock (a large schema takes a while; other keys need not wait). A throw leaves the
  // cache as it was.
  std::shared_ptr<const Grammar> g = Grammar::compile(build(), vocab_, limits_);
  std::lock_guard lock(mu_);
  for (auto& e : entries_)
    if (e.first == key) return e.second;  // another thread got there first
  if (entries_.size() >= max_entries_) entries_.erase(entries_.begin());
  entries_.emplace_back(key, g);
  return g;
}

}  // namespace lp::constrain
