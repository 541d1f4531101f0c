// The back end of structured outputs: a code point tree (regex_ast.h) compiled to a byte-level DFA over UTF-8,
// and the per-token masks that constrained decoding applies each step. A Vocabulary holds every token's bytes
// in a trie, built once per tokenizer; a Grammar is immutable after compile() and shared by every request
// with the same schema; the allowed-token mask of a DFA state is computed the first time a request reaches it
// (one trie walk, pruned where the DFA dies) and cached in the Grammar, bounded in bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "constrain/regex_ast.h"
#include "sched/constraint.h"

namespace lp::text { class Tokenizer; }

namespace lp::constrain {

struct GrammarLimits {
  int max_nfa_states = 200000;
  int max_dfa_states = 20000;         // more: lp::Error(kInvalid) "the schema is too complex ..."
  size_t mask_cache_bytes = 16 << 20;  // per Grammar (~860 masks of a 152k vocabulary)
};

// Every token's UTF-8 bytes (byte-level BPE undone, SentencePiece's U+2581 as a space, <0xNN> byte tokens as
// that byte), in a trie laid out for one depth-first pass. Special tokens never match a grammar.
class Vocabulary {
 public:
  explicit Vocabulary(const text::Tokenizer& tok);
  int32_t size() const;
  const std::string& bytes(int32_t id) const;  // "" for special tokens
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

class Grammar : public sched::ConstraintFactory {
 public:
  // Throws lp::Error(kInvalid) when the tree is over the limits.
  static std::shared_ptr<const Grammar> compile(const NodePtr& root, std::shared_ptr<const Vocabulary> vocab,
                                                const GrammarLimits& limits = {});
  std::unique_ptr<sched::TokenConstraint> start() const override;

  int num_states() const;
  // Byte-level match of a whole string (tests, and validating what a constrained request produced).
  bool matches(std::string_view bytes) const;

  struct Impl;
  explicit Grammar(std::unique_ptr<Impl> impl);
  ~Grammar() override;

 private:
  std::unique_ptr<Impl> impl_;
};

// Compiled grammars by key (the canonical text of what was asked for), shared across requests, LRU-bounded.
class GrammarCache {
 public:
  GrammarCache(std::shared_ptr<const Vocabulary> vocab, size_t max_entries = 16, GrammarLimits limits = {});
  // The cached grammar for `key`, or build(), compiled and cached (a throw is not cached). Thread-safe.
  std::shared_ptr<const Grammar> get(const std::string& key, const std::function<NodePtr()>& build);

 private:
  std::shared_ptr<const Vocabulary> vocab_;
  size_t max_entries_;
  GrammarLimits limits_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::shared_ptr<const Grammar>>> entries_;  // most recent last
};

}  // namespace lp::constrain
