// The automaton half of the grammar back end: a code point tree (regex_ast.h) compiled to a byte-level NFA
// (Thompson; code point sets as UTF-8 byte-range sequences) and then to a trimmed DFA over byte equivalence
// classes, which grammar.cpp walks to compute token masks. Kept apart from the masks so each can be tested.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "constrain/regex_ast.h"

namespace lp::constrain {

// A deterministic automaton over bytes. Every state can still reach an accepting state (trimmed), so a
// transition to -1 means "this prefix can never complete a match".
struct Dfa {
  int num_classes = 1;
  std::array<uint8_t, 256> byte_class{};  // byte -> equivalence class (bytes no edge tells apart share one)
  std::vector<int32_t> next;              // state * num_classes + class -> state, or -1
  std::vector<uint8_t> accepting;         // per state
  std::vector<uint8_t> has_exit;          // per state: some byte leads somewhere
  int32_t start = -1;                     // -1: the grammar matches nothing

  int num_states() const { return static_cast<int>(accepting.size()); }
  int32_t step(int32_t s, uint8_t b) const {
    return next[static_cast<size_t>(s) * num_classes + byte_class[b]];
  }
  // The state after `bytes` from `s`, or -1 once dead.
  int32_t run(int32_t s, std::string_view bytes) const {
    for (char c : bytes) {
      if (s < 0) return -1;
      s = step(s, static_cast<uint8_t>(c));
    }
    return s;
  }
};

// Compiles `root`. Throws lp::Error(kInvalid) "the structured output is too complex: ..." when the NFA
// would exceed max_nfa_states or the DFA max_dfa_states (checked while building, so it never runs away).
Dfa compile_dfa(const Node& root, int max_nfa_states, int max_dfa_states);

// Classes of states from which the same byte strings of length <= `rounds` stay alive (Moore refinement
// from "all states alike", acceptance ignored, stopped once stable). States in one class allow the same
// tokens when no token is longer than `rounds`. Past a work budget (a huge DFA) every state is its own
// class, which is always sound.
std::vector<int32_t> horizon_classes(const Dfa& dfa, int rounds);

// The UTF-8 encodings of the code points lo..hi (surrogates left out) as sequences of byte ranges: every
// byte string matching one sequence (range by range) is the encoding of one code point in lo..hi, and every
// such encoding matches exactly one sequence.
using ByteRangeSeq = std::vector<std::pair<uint8_t, uint8_t>>;
std::vector<ByteRangeSeq> utf8_sequences(uint32_t lo, uint32_t hi);

}  // namespace lp::constrain
