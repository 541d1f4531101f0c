// Jinja lexer: template text -> tokens, a port of @huggingface/jinja's lexer.ts so that whitespace
// handling is identical. Before tokenizing it applies the same textual preprocessing: drop one trailing
// newline, lstrip_blocks and trim_blocks (as blind regex rewrites, exactly like the reference), and
// remove transformers' `{% generation %}` / `{% endgeneration %}` tags.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lp::text::jinja {

enum class Tok : uint8_t {
  kText,
  kNumber,
  kString,
  kIdent,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStatement,    // {%
  kCloseStatement,   // %}
  kOpenExpression,   // {{
  kCloseExpression,  // }}
  kOpenSquare,
  kCloseSquare,
  kOpenCurly,
  kCloseCurly,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditive,        // + - ~
  kMultiplicative,  // * / // %
  kPower,           // **
  kComparison,      // < > <= >= == !=
  kUnary,           // a lone unary + or -
  kComment,
};
const char* tok_name(Tok t);

struct Token {
  Tok type;
  std::string value;
};

// The preprocessing step alone (exposed for tests).
std::string preprocess_template(std::string_view src, bool trim_blocks, bool lstrip_blocks);

// Tokenizes a template (valid UTF-8 expected; Template passes it through text::utf8_lossy). Throws
// lp::Error on bad syntax.
std::vector<Token> tokenize(std::string_view src, bool trim_blocks = true, bool lstrip_blocks = true);

}  // namespace lp::text::jinja
