#include "constrain/regex_ast.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/check.h"

namespace lp::constrain {

namespace {

NodePtr make(Node n) { return std::make_shared<const Node>(std::move(n)); }

// A code point as PCRE2 reads it inside or outside a class: \x{...} for anything but plain ASCII letters and
// digits, so no character needs context-dependent escaping.
std::string pcre_char(uint32_t c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return std::string(1, char(c));
  return fmt::format("\\x{{{:x}}}", c);
}

// Decodes one UTF-8 code point of well-formed text (the tree only holds what text() checked).
uint32_t next_codepoint(std::string_view s, size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  uint32_t c = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
  for (int k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return c;
}

}  // namespace

NodePtr empty() { return make(Node{}); }

NodePtr text(std::string_view utf8) {
  Node n;
  n.kind = Node::Kind::kText;
  n.text = std::string(utf8);
  return make(std::move(n));
}

NodePtr set(CodepointRanges ranges) {
  std::sort(ranges.begin(), ranges.end());
  CodepointRanges merged;
  for (auto [lo, hi] : ranges) {
    LP_CHECK(lo <= hi && hi <= 0x10FFFF, "bad code point range {:x}-{:x}", lo, hi);
    if (!merged.empty() && lo <= merged.back().second + 1) merged.back().second = std::max(merged.back().second, hi);
    else merged.emplace_back(lo, hi);
  }
  Node n;
  n.kind = Node::Kind::kSet;
  n.ranges = std::move(merged);
  return make(std::move(n));
}

NodePtr concat(std::vector<NodePtr> kids) {
  std::vector<NodePtr> flat;
  for (auto& k : kids) {
    LP_CHECK(k != nullptr);
    if (k->kind == Node::Kind::kConcat) flat.insert(flat.end(), k->kids.begin(), k->kids.end());
    else if (k->kind != Node::Kind::kEmpty) flat.push_back(std::move(k));
  }
  if (flat.empty()) return empty();
  if (flat.size() == 1) return flat[0];
  Node n;
  n.kind = Node::Kind::kConcat;
  n.kids = std::move(flat);
  return make(std::move(n));
}

NodePtr alt(std::vector<NodePtr> kids) {
  for (const auto& k : kids) LP_CHECK(k != nullptr);
  if (kids.size() == 1) return kids[0];
  Node n;
  n.kind = Node::Kind::kAlt;
  n.kids = std::move(kids);
  return make(std::move(n));
}

NodePtr repeat(NodePtr item, int min, int max, NodePtr separator) {
  LP_CHECK(item != nullptr && min >= 0 && (max < 0 || max >= min), "bad repeat {{{},{}}}", min, max);
  Node n;
  n.kind = Node::Kind::kRepeat;
  n.kids.push_back(std::move(item));
  if (separator) n.kids.push_back(std::move(separator));
  n.min = min;
  n.max = max;
  return make(std::move(n));
}

std::string to_pcre(const Node& n) {
  switch (n.kind) {
    case Node::Kind::kEmpty: return "(?:)";
    case Node::Kind::kText: {
      std::string out = "(?:";
      for (size_t i = 0; i < n.text.size();) out += pcre_char(next_codepoint(n.text, i));
      return out + ")";
    }
    case Node::Kind::kSet: {
      if (n.ranges.empty()) return "(*FAIL)";
      std::string out = "[";
      for (auto [lo, hi] : n.ranges) out += lo == hi ? pcre_char(lo) : pcre_char(lo) + "-" + pcre_char(hi);
      return out + "]";
    }
    case Node::Kind::kConcat: {
      std::string out = "(?:";
      for (const auto& k : n.kids) out += to_pcre(*k);
      return out + ")";
    }
    case Node::Kind::kAlt: {
      if (n.kids.empty()) return "(*FAIL)";
      std::string out = "(?:";
      for (size_t i = 0; i < n.kids.size(); ++i) out += (i ? "|" : "") + to_pcre(*n.kids[i]);
      return out + ")";
    }
    case Node::Kind::kRepeat: {
      const std::string item = to_pcre(*n.kids[0]);
      auto bounds = [](int lo, int hi) {
        return hi < 0 ? fmt::format("{{{},}}", lo) : fmt::format("{{{},{}}}", lo, hi);
      };
      if (n.kids.size() == 1) return "(?:" + item + ")" + bounds(n.min, n.max);
      // item (sep item){min-1, max-1}, optional as a whole when min is 0.
      if (n.max == 0) return "(?:)";
      const std::string sep = to_pcre(*n.kids[1]);
      std::string body = "(?:" + item + "(?:" + sep + item + ")" +
                         bounds(std::max(n.min, 1) - 1, n.max < 0 ? -1 : n.max - 1) + ")";
      return n.min == 0 ? "(?:" + body + ")?" : body;
    }
  }
  return "";
}

}  // namespace lp::constrain
