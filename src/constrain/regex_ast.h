// The one intermediate form of structured outputs: a regular expression over Unicode code points, as a tree
// that front ends build (regex.h parses a pattern, json_schema.h turns a schema into one, a choice list is an
// alternation) and the back end (grammar.h) compiles to a byte-level DFA over UTF-8. Nodes are immutable and
// shared, so a front end may reuse a subtree (the value of a JSON array) without copying it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lp::constrain {

struct Node;
using NodePtr = std::shared_ptr<const Node>;

// Inclusive code point ranges, sorted and disjoint, inside [0, 0x10FFFF] (surrogates D800-DFFF never match).
using CodepointRanges = std::vector<std::pair<uint32_t, uint32_t>>;

struct Node {
  enum class Kind {
    kEmpty,   // matches ""
    kText,    // the UTF-8 string `text`
    kSet,     // one code point from `ranges`
    kConcat,  // kids in order
    kAlt,     // one of kids
    kRepeat,  // kids[0] repeated min..max times (max -1: unbounded); with kids[1], a separator between items
  };
  Kind kind = Kind::kEmpty;
  std::string text;
  CodepointRanges ranges;
  std::vector<NodePtr> kids;
  int min = 0;
  int max = -1;
};

NodePtr empty();
NodePtr text(std::string_view utf8);
NodePtr set(CodepointRanges ranges);        // normalized (sorted, merged); an empty set matches nothing
NodePtr concat(std::vector<NodePtr> kids);  // flattened; no kids: empty()
NodePtr alt(std::vector<NodePtr> kids);     // no kids: matches nothing
NodePtr repeat(NodePtr item, int min, int max, NodePtr separator = nullptr);
inline NodePtr optional(NodePtr item) { return repeat(std::move(item), 0, 1); }

// The tree as a PCRE2 pattern (UTF mode, to be matched whole: anchored at both ends by the caller), for
// tests that check a compiled grammar against PCRE2 and for debug output.
std::string to_pcre(const Node& n);

}  // namespace lp::constrain
