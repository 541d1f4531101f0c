// Small helpers the structured-output front ends share: UTF-8 decoding that rejects malformed input, and
// measurements of a code point tree (how long its strings can be, how big it is once shared subtrees are
// counted at every use) that let the front ends refuse what they cannot bound.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "constrain/regex_ast.h"

namespace lp::constrain {

// The code points of `utf8`, or nullopt when it is not well-formed UTF-8 (overlong forms and surrogates are
// malformed too).
std::optional<std::vector<uint32_t>> decode_utf8(std::string_view utf8);
std::string encode_utf8(uint32_t cp);

// Lengths (in code points) of the strings a tree matches: min is -1 when it matches nothing, max is -1 when
// unbounded.
struct LengthBounds {
  int64_t min = 0;
  int64_t max = 0;
};
LengthBounds length_bounds(const Node& n);

// Nodes in the tree with every shared subtree counted at each use (what a back end that copies subtrees
// builds), saturating at `cap`. Linear in the number of distinct nodes.
uint64_t expanded_size(const NodePtr& n, uint64_t cap);

}  // namespace lp::constrain
