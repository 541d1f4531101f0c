#include "constrain/regex.h"

#include <fmt/format.h>

#include <optional>
#include <string>
#include <vector>

#include "constrain/tree_util.h"
#include "core/check.h"

namespace lp::constrain {

namespace {

// Groups nest at most this deep: the parser and every later pass over the tree recurse, and a hostile
// "((((..." must end in an error, not a stack overflow.
constexpr int kMaxNesting = 100;

constexpr uint32_t kMaxCodepoint = 0x10FFFF;

bool is_hex(uint32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
uint32_t hex_value(uint32_t c) {
  return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
bool is_digit(uint32_t c) {
  return c >= '0' && c <= '9';
}
bool is_ascii_alnum(uint32_t c) {
  return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}
bool is_surrogate(uint32_t c) {
  return c >= 0xD800 && c <= 0xDFFF;
}

// Every code point but those in `r` (sorted, disjoint); surrogates are never part of the result.
CodepointRanges complement(const CodepointRanges& r) {
  CodepointRanges norm = set(r)->ranges;  // sorted and merged
  CodepointRanges out;
  uint32_t next = 0;
  auto emit = [&out](uint32_t lo, uint32_t hi) {
    if (lo > hi) return;
    if (hi < 0xD800 || lo > 0xDFFF) return void(out.emplace_back(lo, hi));
    if (lo < 0xD800) out.emplace_back(lo, 0xD7FF);
    if (hi > 0xDFFF) out.emplace_back(0xE000, hi);
  };
  for (auto [lo, hi] : norm) {
    if (lo > next) emit(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodepoint) emit(next, kMaxCodepoint);
  return out;
}

// The ASCII meanings (Python's re.ASCII, PCRE2 without UCP, ECMAScript's \d and \w).
const CodepointRanges kDigit = {{'0', '9'}};
const CodepointRanges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const CodepointRanges kSpace = {{'\t', '\r'}, {' ', ' '}};  // \t \n \v \f \r and space

// One escape's meaning: a single code point, or a class (\d, \W, ...).
struct Escape {
  std::optional<uint32_t> cp;
  CodepointRanges ranges;
};

class Parser {
 public:
  Parser(std::string_view pattern, const RegexLimits& limits) : limits_(limits) {
    if (pattern.size() > static_cast<size_t>(limits.max_pattern_bytes))
      fail("regex of {} bytes is over the limit of {} bytes", pattern.size(), limits.max_pattern_bytes);
    auto cps = decode_utf8(pattern);
    if (!cps) fail("regex is not valid UTF-8");
    cps_ = std::move(*cps);
    size_t off = 0;
    for (uint32_t c : cps_) {
      offsets_.push_back(off);
      off += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    }
    offsets_.push_back(off);
  }

  NodePtr parse() {
    NodePtr n = parse_alt(0);
    if (!eof()) error(pos_, "unbalanced ')'");
    return n;
  }

 private:
  template <class... Args>
  [[noreturn]] void error(size_t at, fmt::format_string<Args...> f, Args&&... args) {
    lp::fail("invalid regex at offset {}: {}", offsets_[at], fmt::format(f, std::forward<Args>(args)...));
  }

  bool eof() const { return pos_ >= cps_.size(); }
  uint32_t peek(size_t ahead = 0) const {
    return pos_ + ahead < cps_.size() ? cps_[pos_ + ahead] : 0xFFFFFFFF;
  }
  uint32_t next() { return cps_[pos_++]; }

  NodePtr parse_alt(int depth) {
    std::vector<NodePtr> branches;
    branches.push_back(parse_concat(depth));
    while (peek() == '|') {
      ++pos_;
      branches.push_back(parse_concat(depth));
    }
    return alt(std::move(branches));
  }

  // `^` / `\A` are no-ops at the start of a top-level branch and `$` / `\Z` / `\z` at its end, because the
  // whole pattern must match anyway; anywhere else they would constrain context, which a grammar can't.
  bool skip_anchor(int depth, bool branch_start) {
    const uint32_t c = peek();
    const bool start = c == '^' || (c == '\\' && peek(1) == 'A');
    const bool end = c == '$' || (c == '\\' && (peek(1) == 'Z' || peek(1) == 'z'));
    if (!start && !end) return false;
    const size_t len = c == '\\' ? 2 : 1;
    if (start && !(depth == 0 && branch_start))
      error(pos_, "anchor '{}' is only supported at the start of the pattern", c == '^' ? "^" : "\\A");
    if (end) {
      const uint32_t after = peek(len);
      if (!(depth == 0 && (pos_ + len >= cps_.size() || after == '|')))
        error(pos_, "anchor '{}' is only supported at the end of the pattern", c == '$' ? "$" : "\\Z");
    }
    pos_ += len;
    return true;
  }

  NodePtr parse_concat(int depth) {
    std::vector<NodePtr> items;
    bool branch_start = true;
    while (!eof() && peek() != '|' && peek() != ')') {
      if (skip_anchor(depth, branch_start)) continue;
      branch_start = false;
      NodePtr atom = parse_atom(depth);
      items.push_back(parse_quantifier(std::move(atom)));
    }
    // Adjacent literals become one text node (smaller trees, readable to_pcre output).
    std::vector<NodePtr> merged;
    for (auto& it : items) {
      if (!merged.empty() && it->kind == Node::Kind::kText && merged.back()->kind == Node::Kind::kText)
        merged.back() = text(merged.back()->text + it->text);
      else
        merged.push_back(std::move(it));
    }
    return concat(std::move(merged));
  }

  // {m}, {m,}, {m,n}, {,n} (Python's form of {0,n}) at pos_; without consuming anything when the brace
  // does not open a quantifier (then it is a literal '{', as in Python and PCRE2).
  bool brace_quantifier(int& min, int& max) {
    size_t p = pos_ + 1;
    auto number = [&](std::optional<int64_t>& v) {
      while (p < cps_.size() && is_digit(cps_[p])) {
        v = std::min<int64_t>(v.value_or(0) * 10 + (cps_[p] - '0'), int64_t{1} << 40);
        ++p;
      }
    };
    std::optional<int64_t> lo, hi;
    number(lo);
    bool comma = false;
    if (p < cps_.size() && cps_[p] == ',') {
      comma = true;
      ++p;
      number(hi);
    }
    if (p >= cps_.size() || cps_[p] != '}' || (!lo && !hi)) return false;
    const int64_t m = lo.value_or(0);
    const int64_t n = comma ? hi.value_or(-1) : m;
    for (int64_t v : {m, n})
      if (v > limits_.max_repeat)
        error(pos_, "repeat count {} is over the limit of {}", v, limits_.max_repeat);
    if (n >= 0 && m > n) error(pos_, "bad repeat {{{},{}}}: the minimum is over the maximum", m, n);
    min = static_cast<int>(m);
    max = static_cast<int>(n);
    pos_ = p + 1;
    return true;
  }

  bool at_quantifier() {
    const uint32_t c = peek();
    if (c == '*' || c == '+' || c == '?') return true;
    int lo, hi;
    const size_t save = pos_;
    if (c == '{' && brace_quantifier(lo, hi)) {
      pos_ = save;
      return true;
    }
    return false;
  }

  NodePtr parse_quantifier(NodePtr atom) {
    if (!at_quantifier()) return atom;
    const size_t at = pos_;
    int min = 0, max = -1;
    const uint32_t c = next();
    if (c == '+')
      min = 1;
    else if (c == '?')
      max = 1;
    else if (c == '{') {
      --pos_;
      brace_quantifier(min, max);
    }
    // A lazy quantifier matches the same strings (only the preferred match differs); a possessive one
    // can reject strings the plain one accepts, so it is refused.
    if (peek() == '?')
      ++pos_;
    else if (peek() == '+')
      error(pos_, "possessive quantifier '+' is not supported");
    if (at_quantifier())
      error(pos_, "multiple repeat (a quantifier after the quantifier at offset {})", offsets_[at]);
    return repeat(std::move(atom), min, max);
  }

  NodePtr parse_atom(int depth) {
    const size_t at = pos_;
    const uint32_t c = next();
    switch (c) {
      case '(':
        return parse_group(depth, at);
      case '[':
        return parse_class(at);
      case '.':
        return set({{0, '\n' - 1}, {'\n' + 1, kMaxCodepoint}});
      case '\\': {
        Escape e = parse_escape(false);
        return e.cp ? text(encode_utf8(*e.cp)) : set(std::move(e.ranges));
      }
      case '*':
      case '+':
      case '?':
        error(at, "nothing to repeat before '{}'", static_cast<char>(c));
      case '{': {
        int lo, hi;
        --pos_;
        if (brace_quantifier(lo, hi)) error(at, "nothing to repeat before '{{'");
        ++pos_;
        return text("{");
      }
      default:
        return text(encode_utf8(c));
    }
  }

  NodePtr parse_group(int depth, size_t open) {
    if (depth + 1 > kMaxNesting) error(open, "groups nested deeper than {}", kMaxNesting);
    if (peek() == '?') {
      ++pos_;
      const uint32_t c = eof() ? 0 : next();
      if (c == ':') {
        // non-capturing group
      } else if (c == 'P' && peek() == '<') {
        ++pos_;
        parse_group_name(open);
      } else if (c == 'P' && peek() == '=') {
        error(open, "named backreference '(?P=...)' is not supported");
      } else if (c == '<' && (peek() == '=' || peek() == '!')) {
        error(open, "lookbehind '(?<{}' is not supported", static_cast<char>(peek()));
      } else if (c == '<') {
        parse_group_name(open);
      } else if (c == '=' || c == '!') {
        error(open, "lookahead '(?{}' is not supported", static_cast<char>(c));
      } else if (c == '>') {
        error(open, "atomic group '(?>' is not supported");
      } else if (c == '(') {
        error(open, "conditional group '(?(' is not supported");
      } else if (c == '#') {
        error(open, "comment group '(?#' is not supported");
      } else if (c == '-' || (c >= 'a' && c <= 'z')) {
        error(open, "inline flags '(?{}' are not supported", encode_utf8(c));
      } else {
        error(open, "unsupported group syntax '(?{}'", c ? encode_utf8(c) : "");
      }
    }
    NodePtr body = parse_alt(depth + 1);
    if (peek() != ')') error(open, "missing ')' for the group opened here");
    ++pos_;
    return body;
  }

  // Names only label a group; capturing does not change which strings match.
  void parse_group_name(size_t open) {
    const size_t start = pos_;
    while (!eof() && (is_ascii_alnum(peek()) || peek() == '_')) ++pos_;
    if (pos_ == start || is_digit(cps_[start]) || peek() != '>') error(open, "bad group name");
    ++pos_;
  }

  uint32_t hex_digits(size_t at, int count) {
    uint32_t v = 0;
    for (int i = 0; i < count; ++i) {
      if (!is_hex(peek())) error(at, "escape needs {} hex digits", count);
      v = v * 16 + hex_value(next());
    }
    return v;
  }

  // \x{H...} / \u{H...}: 1 to 6 hex digits in braces.
  uint32_t braced_hex(size_t at) {
    ++pos_;
    uint32_t v = 0;
    int n = 0;
    while (is_hex(peek()) && n < 7) {
      v = v * 16 + hex_value(next());
      ++n;
    }
    if (n == 0 || n > 6 || peek() != '}') error(at, "bad braced hex escape");
    ++pos_;
    return v;
  }

  uint32_t checked_cp(size_t at, uint32_t v) {
    if (v > kMaxCodepoint || is_surrogate(v))
      error(at, "escape names U+{:X}, which is not a Unicode scalar value", v);
    return v;
  }

  // After the backslash. In a class, \b is a backspace (as in Python and ECMAScript).
  Escape parse_escape(bool in_class) {
    const size_t at = pos_ - 1;
    if (eof()) error(at, "pattern ends with a lone backslash");
    const uint32_t c = next();
    switch (c) {
      case 'n':
        return {'\n', {}};
      case 't':
        return {'\t', {}};
      case 'r':
        return {'\r', {}};
      case 'f':
        return {'\f', {}};
      case 'v':
        return {'\v', {}};
      case 'a':
        return {0x07, {}};
      case '0':
        if (is_digit(peek())) error(at, "octal escape '\\0{}' is not supported", static_cast<char>(peek()));
        return {0, {}};
      case 'x':
        if (peek() == '{') return {checked_cp(at, braced_hex(at)), {}};
        return {hex_digits(at, 2), {}};
      case 'U':
        return {checked_cp(at, hex_digits(at, 8)), {}};
      case 'u': {
        if (peek() == '{') return {checked_cp(at, braced_hex(at)), {}};
        const uint32_t v = hex_digits(at, 4);
        // ECMAScript writes an astral code point as a surrogate pair of \u escapes.
        if (v >= 0xD800 && v <= 0xDBFF && peek() == '\\' && peek(1) == 'u') {
          pos_ += 2;
          const uint32_t lo = hex_digits(at, 4);
          if (lo < 0xDC00 || lo > 0xDFFF) error(at, "unpaired surrogate escape");
          return {0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00), {}};
        }
        return {checked_cp(at, v), {}};
      }
      case 'd':
        return {std::nullopt, kDigit};
      case 'D':
        return {std::nullopt, complement(kDigit)};
      case 'w':
        return {std::nullopt, kWord};
      case 'W':
        return {std::nullopt, complement(kWord)};
      case 's':
        return {std::nullopt, kSpace};
      case 'S':
        return {std::nullopt, complement(kSpace)};
      case 'b':
        if (in_class) return {0x08, {}};
        error(at, "word boundary '\\b' is not supported");
      case 'B':
        error(at, "word boundary '\\B' is not supported");
      case 'A':
      case 'Z':
      case 'z':
        error(at, "anchor '\\{}' is only supported at the start or end of the pattern", static_cast<char>(c));
      case 'k':
        error(at, "named backreference '\\k' is not supported");
      case 'p':
      case 'P':
        error(at, "Unicode property class '\\{}' is not supported", static_cast<char>(c));
      default:
        break;
    }
    if (c >= '1' && c <= '9') error(at, "backreference '\\{}' is not supported", static_cast<char>(c));
    if (is_ascii_alnum(c)) error(at, "unsupported escape '\\{}'", static_cast<char>(c));
    return {c, {}};  // an escaped metacharacter or punctuation stands for itself
  }

  NodePtr parse_class(size_t open) {
    const bool negate = peek() == '^';
    if (negate) ++pos_;
    CodepointRanges ranges;
    bool first = true;
    for (;;) {
      if (eof()) error(open, "unterminated character class");
      const size_t at = pos_;
      const uint32_t c = peek();
      if (c == ']' && !first) {
        ++pos_;
        break;
      }
      if (c == '[' && (peek(1) == ':' || peek(1) == '=' || peek(1) == '.'))
        error(at, "POSIX class '[{}' is not supported", static_cast<char>(peek(1)));
      first = false;
      Escape lo = class_atom();
      if (!lo.cp) {
        if (peek() == '-' && peek(1) != ']' && peek(1) != 0xFFFFFFFF)
          error(at, "bad character range (a class as an end)");
        ranges.insert(ranges.end(), lo.ranges.begin(), lo.ranges.end());
        continue;
      }
      if (peek() == '-' && pos_ + 1 < cps_.size() && peek(1) != ']') {
        ++pos_;
        Escape hi = class_atom();
        if (!hi.cp) error(at, "bad character range (a class as an end)");
        if (*hi.cp < *lo.cp) error(at, "bad character range: U+{:04X} > U+{:04X}", *lo.cp, *hi.cp);
        ranges.emplace_back(*lo.cp, *hi.cp);
      } else {
        ranges.emplace_back(*lo.cp, *lo.cp);
      }
    }
    return set(negate ? complement(ranges) : std::move(ranges));
  }

  Escape class_atom() {
    const uint32_t c = next();
    if (c == '\\') return parse_escape(true);
    return {c, {}};
  }

  const RegexLimits& limits_;
  std::vector<uint32_t> cps_;
  std::vector<size_t> offsets_;  // byte offset of each code point, and of the end
  size_t pos_ = 0;
};

}  // namespace

NodePtr parse_regex(std::string_view pattern, const RegexLimits& limits) {
  return Parser(pattern, limits).parse();
}

}  // namespace lp::constrain
