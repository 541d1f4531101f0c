#include "constrain/json_lexical.h"

#include <nlohmann/json.hpp>
#include <unordered_map>

#include "constrain/tree_util.h"
#include "core/check.h"

namespace lp::constrain::json {

namespace {

NodePtr hex() {
  return set({{'0', '9'}, {'A', 'F'}, {'a', 'f'}});
}

// Four hex digits naming anything but a surrogate: [0-9a-cA-C]hhh | [dD][0-7]hh | [e-fE-F]hhh.
NodePtr non_surrogate_hex4() {
  const NodePtr h = hex();
  return alt({concat({set({{'0', '9'}, {'A', 'C'}, {'a', 'c'}}), h, h, h}),
              concat({set({{'D', 'D'}, {'d', 'd'}}), set({{'0', '7'}}), h, h}),
              concat({set({{'E', 'F'}, {'e', 'f'}}), h, h, h})});
}

NodePtr surrogate_pair() {
  const NodePtr h = hex();
  return concat({text("\\u"), set({{'D', 'D'}, {'d', 'd'}}), set({{'8', '9'}, {'A', 'B'}, {'a', 'b'}}), h, h,
                 text("\\u"), set({{'D', 'D'}, {'d', 'd'}}), set({{'C', 'F'}, {'c', 'f'}}), h, h});
}

// A code point as JSON writes it inside a string (nlohmann's dump: the short escapes, \u00XX for the other
// controls, everything else raw).
std::string json_escape(uint32_t cp) {
  const std::string quoted = nlohmann::json(encode_utf8(cp)).dump();
  return quoted.substr(1, quoted.size() - 2);
}

bool needs_escape(uint32_t cp) {
  return cp < 0x20 || cp == '"' || cp == '\\';
}

NodePtr escape_tree(const NodePtr& n, std::unordered_map<const Node*, NodePtr>& memo) {
  if (auto it = memo.find(n.get()); it != memo.end()) return it->second;
  NodePtr out;
  switch (n->kind) {
    case Node::Kind::kEmpty:
      out = n;
      break;
    case Node::Kind::kText: {
      const auto cps = decode_utf8(n->text);
      LP_CHECK(cps.has_value(), "text node holds malformed UTF-8");
      std::string s;
      for (uint32_t c : *cps) s += json_escape(c);
      out = text(s);
      break;
    }
    case Node::Kind::kSet: {
      CodepointRanges raw;
      std::vector<NodePtr> alts;
      for (auto [lo, hi] : n->ranges) {
        for (uint32_t c = lo; c <= std::min<uint32_t>(hi, '\\'); ++c)
          if (needs_escape(c)) alts.push_back(text(json_escape(c)));
        // The raw part: [lo, hi] without the escaped code points.
        uint32_t start = std::max<uint32_t>(lo, 0x20);
        for (uint32_t special : {uint32_t{'"'}, uint32_t{'\\'}}) {
          if (start <= hi && special >= start && special <= hi) {
            if (special > start) raw.emplace_back(start, special - 1);
            start = special + 1;
          }
        }
        if (start <= hi) raw.emplace_back(start, hi);
      }
      if (!raw.empty()) alts.insert(alts.begin(), set(raw));
      out = alts.empty() ? never() : alt(std::move(alts));
      break;
    }
    case Node::Kind::kConcat:
    case Node::Kind::kAlt: {
      std::vector<NodePtr> kids;
      for (const auto& k : n->kids) kids.push_back(escape_tree(k, memo));
      out = n->kind == Node::Kind::kConcat ? concat(std::move(kids)) : alt(std::move(kids));
      break;
    }
    case Node::Kind::kRepeat:
      out = repeat(escape_tree(n->kids[0], memo), n->min, n->max,
                   n->kids.size() > 1 ? escape_tree(n->kids[1], memo) : nullptr);
      break;
  }
  memo.emplace(n.get(), out);
  return out;
}

}  // namespace

NodePtr never() {
  return alt({});
}

NodePtr whitespace(int max_ws) {
  return max_ws > 0 ? repeat(set({{'\t', '\n'}, {' ', ' '}}), 0, max_ws) : empty();
}

NodePtr string_char() {
  const NodePtr raw = set({{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}});
  const NodePtr escape = concat({text("\\"), alt({set({{'"', '"'},
                                                       {'/', '/'},
                                                       {'\\', '\\'},
                                                       {'b', 'b'},
                                                       {'f', 'f'},
                                                       {'n', 'n'},
                                                       {'r', 'r'},
                                                       {'t', 't'}}),
                                                  concat({text("u"), non_surrogate_hex4()})})});
  return alt({raw, escape, surrogate_pair()});
}

NodePtr string_node(int min_len, int max_len) {
  return concat({text("\""), repeat(string_char(), min_len, max_len), text("\"")});
}

NodePtr pattern_string(const NodePtr& content) {
  std::unordered_map<const Node*, NodePtr> memo;
  return concat({text("\""), escape_tree(content, memo), text("\"")});
}

NodePtr integer_node() {
  const NodePtr digit = set({{'0', '9'}});
  return concat({optional(text("-")), alt({text("0"), concat({set({{'1', '9'}}), repeat(digit, 0, 18)})})});
}

NodePtr number_node() {
  const NodePtr digit = set({{'0', '9'}});
  return concat({integer_node(), optional(concat({text("."), repeat(digit, 1, 16)})),
                 optional(concat({set({{'E', 'E'}, {'e', 'e'}}), optional(set({{'+', '+'}, {'-', '-'}})),
                                  repeat(digit, 1, 2)}))});
}

NodePtr braced(const char* open, const char* close, const NodePtr& nonempty_items, bool allow_empty,
               int max_ws) {
  const NodePtr ws = whitespace(max_ws);
  NodePtr inner = concat({nonempty_items, ws});
  if (allow_empty) inner = optional(inner);
  return concat({text(open), ws, inner, text(close)});
}

NodePtr AnyValue::object(int depth) {
  LP_CHECK(depth >= 1);
  if (auto it = objects_.find(depth); it != objects_.end()) return it->second;
  const NodePtr ws = whitespace(max_ws_);
  const NodePtr member = concat({string_node(0, -1), ws, text(":"), ws, value(depth - 1)});
  const NodePtr sep = concat({ws, text(","), ws});
  NodePtr n = braced("{", "}", repeat(member, 1, -1, sep), true, max_ws_);
  objects_.emplace(depth, n);
  return n;
}

NodePtr AnyValue::array(int depth) {
  LP_CHECK(depth >= 1);
  if (auto it = arrays_.find(depth); it != arrays_.end()) return it->second;
  const NodePtr ws = whitespace(max_ws_);
  const NodePtr sep = concat({ws, text(","), ws});
  NodePtr n = braced("[", "]", repeat(value(depth - 1), 1, -1, sep), true, max_ws_);
  arrays_.emplace(depth, n);
  return n;
}

NodePtr AnyValue::value(int depth) {
  if (auto it = values_.find(depth); it != values_.end()) return it->second;
  std::vector<NodePtr> kinds = {string_node(0, -1), number_node(), text("true"), text("false"), text("null")};
  if (depth >= 1) {
    kinds.push_back(object(depth));
    kinds.push_back(array(depth));
  }
  NodePtr n = alt(std::move(kinds));
  values_.emplace(depth, n);
  return n;
}

}  // namespace lp::constrain::json
