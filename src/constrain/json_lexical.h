// The lexical pieces of JSON as code point trees (whitespace, strings, numbers, any value), shared by the
// JSON Schema front end and the "any JSON object" grammar. Internal to src/constrain/.
#pragma once

#include <map>

#include "constrain/regex_ast.h"

namespace lp::constrain::json {

NodePtr never();                 // matches nothing (a `false` schema)
NodePtr whitespace(int max_ws);  // up to max_ws of ' ', '\n', '\t'

// One character of a JSON string body: any code point but '"', '\\' and controls < 0x20, or an escape
// (\" \\ \/ \b \f \n \r \t \uXXXX); a surrogate pair \uD8xx\uDCxx is one character, a lone surrogate escape
// is left out because JSON parsers (nlohmann's included) reject it.
NodePtr string_char();
// A quoted string whose body holds min_len..max_len characters (max_len -1: unbounded).
NodePtr string_node(int min_len, int max_len);
// A quoted string whose decoded body matches `content` (a tree over code points, e.g. a parsed pattern):
// each code point is written raw where JSON allows, else as its usual escape (\" \\ \n ... \u00XX).
NodePtr pattern_string(const NodePtr& content);

// -?(0|[1-9][0-9]{0,18}), and the same with an optional fraction (1-16 digits) and exponent (1-2 digits):
// bounded, so a constrained number always ends; two exponent digits keep every value inside a double's
// range (JSON parsers, nlohmann's included, refuse 1e999 as an overflow).
NodePtr integer_node();
NodePtr number_node();

// Any JSON value / object whose containers nest at most `depth` levels (depth 0: scalars only). Built once
// per depth and shared: each level holds one copy of the level below.
class AnyValue {
 public:
  explicit AnyValue(int max_ws) : max_ws_(max_ws) {}
  NodePtr value(int depth);
  NodePtr object(int depth);
  NodePtr array(int depth);

 private:
  int max_ws_;
  std::map<int, NodePtr> values_, objects_, arrays_;
};

// "{" ws "}" or "{" ws members ws "}" where `members` matches one or more members: the braces and the
// whitespace gaps around a member list, shared by objects with and without a schema.
NodePtr braced(const char* open, const char* close, const NodePtr& nonempty_items, bool allow_empty,
               int max_ws);

}  // namespace lp::constrain::json
