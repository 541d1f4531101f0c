// Jinja lexer, ported from @huggingface/jinja 0.5.11 src/lexer.ts (see lexer.h).
#include "text/jinja/lexer.h"

#include <array>
#include <cstdlib>
#include <utility>

#include "core/check.h"
#include "text/jinja/js_string.h"

namespace lp::text::jinja {

const char* tok_name(Tok t) {
  static constexpr std::array<const char*, 25> kNames = {"Text",
                                                         "NumericLiteral",
                                                         "StringLiteral",
                                                         "Identifier",
                                                         "Equals",
                                                         "OpenParen",
                                                         "CloseParen",
                                                         "OpenStatement",
                                                         "CloseStatement",
                                                         "OpenExpression",
                                                         "CloseExpression",
                                                         "OpenSquareBracket",
                                                         "CloseSquareBracket",
                                                         "OpenCurlyBracket",
                                                         "CloseCurlyBracket",
                                                         "Comma",
                                                         "Dot",
                                                         "Colon",
                                                         "Pipe",
                                                         "AdditiveBinaryOperator",
                                                         "MultiplicativeBinaryOperator",
                                                         "ExponentiationBinaryOperator",
                                                         "ComparisonBinaryOperator",
                                                         "UnaryOperator",
                                                         "Comment"};
  return kNames[static_cast<size_t>(t)];
}

namespace {

// Whether s[i] starts a line: i is 0 or follows a JS line terminator (\n, \r, U+2028, U+2029).
bool line_start(std::string_view s, size_t i) {
  if (i == 0) return true;
  const char c = s[i - 1];
  if (c == '\n' || c == '\r') return true;
  return i >= 3 && s[i - 3] == '\xE2' && s[i - 2] == '\x80' && (s[i - 1] == '\xA8' || s[i - 1] == '\xA9');
}

// template.replace(/^[ \t]*({[#%-])/gm, "$1")
std::string lstrip_blocks(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (line_start(s, i)) {
      size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j + 1 < s.size() && s[j] == '{' && (s[j + 1] == '#' || s[j + 1] == '%' || s[j + 1] == '-')) {
        out.append(s.substr(j, 2));
        i = j + 2;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  return out;
}

// template.replace(/([#%-]})\n/g, "$1")
std::string trim_blocks(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (i + 2 < s.size() && (s[i] == '#' || s[i] == '%' || s[i] == '-') && s[i + 1] == '}' &&
        s[i + 2] == '\n') {
      out.append(s.substr(i, 2));
      i += 3;
      continue;
    }
    out.push_back(s[i++]);
  }
  return out;
}

// Matches `{%(-?)\s*(?:end)?generation\s*(-?)%}` at s[i]; returns the end offset or 0.
size_t match_generation_tag(std::string_view s, size_t i, bool* lstrip, bool* rstrip) {
  if (s.substr(i, 2) != "{%") return 0;
  size_t j = i + 2;
  *lstrip = j < s.size() && s[j] == '-';
  if (*lstrip) ++j;
  j = js::skip_space(s, j);
  if (s.substr(j, 3) == "end") j += 3;
  if (s.substr(j, 10) != "generation") return 0;
  j = js::skip_space(s, j + 10);
  *rstrip = j < s.size() && s[j] == '-';
  if (*rstrip) ++j;
  if (s.substr(j, 2) != "%}") return 0;
  return j + 2;
}

// template.replace(/(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs, ...): drops the tag, and the
// surrounding whitespace on the sides marked with '-'.
std::string strip_generation_tags(std::string_view s) {
  std::string out;
  size_t last = 0;  // end of the previous match
  size_t pos = 0;
  while ((pos = s.find("{%", pos)) != std::string_view::npos) {
    bool lstrip = false, rstrip = false;
    const size_t tag_end = match_generation_tag(s, pos, &lstrip, &rstrip);
    if (tag_end == 0) {
      ++pos;
      continue;
    }
    size_t ws_begin = pos;
    while (ws_begin > last) {
      const size_t n = js::space_len_before(s, ws_begin);
      if (n == 0 || ws_begin - n < last) break;
      ws_begin -= n;
    }
    const size_t ws_end = js::skip_space(s, tag_end);
    out.append(s.substr(last, ws_begin - last));
    if (!lstrip) out.append(s.substr(ws_begin, pos - ws_begin));
    if (!rstrip) out.append(s.substr(tag_end, ws_end - tag_end));
    last = pos = ws_end;
  }
  out.append(s.substr(last));
  return out;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_word(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  c = static_cast<char>(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// The mapping table of lexer.ts, in its order (longer operators first where it matters).
constexpr std::array<std::pair<std::string_view, Tok>, 29> kTable = {{
    {"{%", Tok::kOpenStatement},  {"%}", Tok::kCloseStatement},
    {"{{", Tok::kOpenExpression}, {"}}", Tok::kCloseExpression},
    {"(", Tok::kOpenParen},       {")", Tok::kCloseParen},
    {"{", Tok::kOpenCurly},       {"}", Tok::kCloseCurly},
    {"[", Tok::kOpenSquare},      {"]", Tok::kCloseSquare},
    {",", Tok::kComma},           {".", Tok::kDot},
    {":", Tok::kColon},           {"|", Tok::kPipe},
    {"<=", Tok::kComparison},     {">=", Tok::kComparison},
    {"==", Tok::kComparison},     {"!=", Tok::kComparison},
    {"<", Tok::kComparison},      {">", Tok::kComparison},
    {"+", Tok::kAdditive},        {"-", Tok::kAdditive},
    {"~", Tok::kAdditive},        {"**", Tok::kPower},
    {"*", Tok::kMultiplicative},  {"//", Tok::kMultiplicative},
    {"/", Tok::kMultiplicative},  {"%", Tok::kMultiplicative},
    {"=", Tok::kEquals},
}};

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) step();
    return std::move(tokens_);
  }

 private:
  char at(size_t i) const { return i < src_.size() ? src_[i] : '\0'; }
  bool starts(std::string_view s) const { return std::string_view(src_).substr(pos_, s.size()) == s; }
  Tok last_type() const { return tokens_.empty() ? Tok::kText : tokens_.back().type; }

  // consumeWhile over ASCII-class predicates (digits, word characters).
  template <class Pred>
  std::string consume_while(Pred pred) {
    std::string out;
    while (pos_ < src_.size() && pred(src_[pos_])) {
      out.push_back(src_[pos_++]);
      if (pos_ >= src_.size()) fail("jinja: Unexpected end of input");
    }
    return out;
  }

  // consumeWhile(c => c !== quote), with escape sequences.
  std::string consume_string(char quote) {
    std::string out;
    char32_t pending_high = 0;  // a \uD8xx waiting for its low half
    auto flush_high = [&] {
      if (pending_high) js::append_utf8(out, 0xFFFD);
      pending_high = 0;
    };
    while (true) {
      if (pos_ >= src_.size()) fail("jinja: Unexpected end of input");
      const char c = src_[pos_];
      if (c == quote) break;
      if (c == '\\') {
        ++pos_;
        if (pos_ >= src_.size()) fail("jinja: Unexpected end of input");
        const char e = src_[pos_++];
        if (e == 'x' || e == 'u') {
          const size_t len = e == 'x' ? 2 : 4;
          uint32_t v = 0;
          for (size_t k = 0; k < len; ++k) {
            const int h = hex_value(at(pos_ + k));
            if (pos_ + k >= src_.size() || h < 0) {
              fail("jinja: Invalid hexadecimal escape sequence: \\{}{}", e,
                   std::string_view(src_).substr(pos_, len));
            }
            v = v * 16 + static_cast<uint32_t>(h);
          }
          pos_ += len;
          if (v >= 0xDC00 && v <= 0xDFFF && pending_high) {
            js::append_utf8(out, 0x10000 + ((pending_high - 0xD800) << 10) + (v - 0xDC00));
            pending_high = 0;
          } else {
            flush_high();
            if (v >= 0xD800 && v <= 0xDBFF) {
              pending_high = v;
            } else {
              js::append_utf8(out, v);
            }
          }
          continue;
        }
        flush_high();
        switch (e) {
          case 'n':
            out.push_back('\n');
            break;
          case 't':
            out.push_back('\t');
            break;
          case 'r':
            out.push_back('\r');
            break;
          case 'b':
            out.push_back('\b');
            break;
          case 'f':
            out.push_back('\f');
            break;
          case 'v':
            out.push_back('\v');
            break;
          case '\'':
            out.push_back('\'');
            break;
          case '"':
            out.push_back('"');
            break;
          case '\\':
            out.push_back('\\');
            break;
          default:
            fail("jinja: Unexpected escaped character: {}", e);
        }
        continue;
      }
      flush_high();
      out.push_back(c);
      ++pos_;
      if (pos_ >= src_.size()) fail("jinja: Unexpected end of input");
    }
    flush_high();
    return out;
  }

  void strip_trailing_whitespace() {
    if (!tokens_.empty() && tokens_.back().type == Tok::kText) {
      tokens_.back().value = js::trim_end(tokens_.back().value);
      if (tokens_.back().value.empty()) tokens_.pop_back();
    }
  }

  void skip_leading_whitespace() { pos_ = js::skip_space(src_, pos_); }

  void skip_tag_whitespace() {
    // consumeWhile(isWhitespace): throws when the whitespace runs to the end of the input.
    while (size_t n = js::space_len_at(src_, pos_)) {
      pos_ += n;
      if (pos_ >= src_.size()) fail("jinja: Unexpected end of input");
    }
  }

  void push(Tok t, std::string v) { tokens_.push_back(Token{t, std::move(v)}); }

  void step() {
    const Tok last = last_type();
    if (tokens_.empty() || last == Tok::kCloseStatement || last == Tok::kCloseExpression ||
        last == Tok::kComment) {
      const size_t start = pos_;
      while (pos_ < src_.size() &&
             !(src_[pos_] == '{' && (at(pos_ + 1) == '%' || at(pos_ + 1) == '{' || at(pos_ + 1) == '#'))) {
        ++pos_;
      }
      if (pos_ > start) {
        push(Tok::kText, src_.substr(start, pos_ - start));
        return;
      }
    }
    if (src_[pos_] == '{' && at(pos_ + 1) == '#') {
      lex_comment();
      return;
    }
    if (starts("{%-")) {
      strip_trailing_whitespace();
      push(Tok::kOpenStatement, "{%");
      pos_ += 3;
      return;
    }
    if (starts("{{-")) {
      strip_trailing_whitespace();
      push(Tok::kOpenExpression, "{{");
      curly_depth_ = 0;
      pos_ += 3;
      return;
    }
    skip_tag_whitespace();
    if (starts("-%}")) {
      push(Tok::kCloseStatement, "%}");
      pos_ += 3;
      skip_leading_whitespace();
      return;
    }
    if (starts("-}}")) {
      push(Tok::kCloseExpression, "}}");
      pos_ += 3;
      skip_leading_whitespace();
      return;
    }
    const char c = src_[pos_];
    if (c == '-' || c == '+') {
      if (tokens_.empty() || last_type() == Tok::kText) fail("jinja: Unexpected character: {}", c);
      switch (last_type()) {
        case Tok::kIdent:
        case Tok::kNumber:
        case Tok::kString:
        case Tok::kCloseParen:
        case Tok::kCloseSquare:
          break;  // binary operator
        default: {
          ++pos_;
          std::string num = consume_while(is_digit);
          if (!num.empty() && at(pos_) == '.' && is_digit(at(pos_ + 1))) {
            ++pos_;
            num += "." + consume_while(is_digit);
          }
          if (num.empty()) {
            push(Tok::kUnary, std::string(1, c));
          } else {
            push(Tok::kNumber, std::string(1, c) + num);
          }
          return;
        }
      }
    }
    for (const auto& [seq, type] : kTable) {
      if (type == Tok::kCloseExpression && curly_depth_ > 0) continue;
      if (!starts(seq)) continue;
      push(type, std::string(seq));
      if (type == Tok::kOpenExpression) {
        curly_depth_ = 0;
      } else if (type == Tok::kOpenCurly) {
        ++curly_depth_;
      } else if (type == Tok::kCloseCurly) {
        --curly_depth_;
      }
      pos_ += seq.size();
      return;
    }
    if (c == '\'' || c == '"') {
      ++pos_;
      std::string s = consume_string(c);
      push(Tok::kString, std::move(s));
      ++pos_;
      return;
    }
    if (is_digit(c)) {
      std::string num = consume_while(is_digit);
      if (last_type() != Tok::kDot && at(pos_) == '.' && is_digit(at(pos_ + 1))) {
        ++pos_;
        num += "." + consume_while(is_digit);
      }
      push(Tok::kNumber, std::move(num));
      return;
    }
    if (is_word(c)) {
      push(Tok::kIdent, consume_while(is_word));
      return;
    }
    size_t len;
    js::decode_at(src_, pos_, &len);
    fail("jinja: Unexpected character: {}", std::string_view(src_).substr(pos_, len));
  }

  void lex_comment() {
    pos_ += 2;
    const bool strip_before = at(pos_) == '-';
    if (strip_before) ++pos_;
    const size_t start = pos_;
    while (!(at(pos_) == '#' && at(pos_ + 1) == '}')) {
      if (pos_ + 2 >= src_.size()) fail("jinja: Missing end of comment tag");
      ++pos_;
    }
    std::string comment = src_.substr(start, pos_ - start);
    const bool strip_after = !comment.empty() && comment.back() == '-';
    if (strip_after) comment.pop_back();
    if (strip_before) strip_trailing_whitespace();
    push(Tok::kComment, std::move(comment));
    pos_ += 2;
    if (strip_after) skip_leading_whitespace();
  }

  std::string src_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::string preprocess_template(std::string_view src, bool trim, bool lstrip) {
  std::string s(src);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (lstrip) s = lstrip_blocks(s);
  if (trim) s = trim_blocks(s);
  return strip_generation_tags(s);
}

std::vector<Token> tokenize(std::string_view src, bool trim, bool lstrip) {
  return Lexer(preprocess_template(src, trim, lstrip)).run();
}

}  // namespace lp::text::jinja
