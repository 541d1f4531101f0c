// Jinja parser: tokens -> syntax tree, a port of @huggingface/jinja's parser.ts (same precedence rules and
// quirks, e.g. `is` tests binding tighter than `*`, `**` left-associative). Nesting is limited so that
// hostile templates fail with lp::Error instead of overflowing the stack.
#pragma once

#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/lexer.h"

namespace lp::text::jinja {

// Deepest nesting of statements or expressions accepted (real chat templates stay well under 50).
inline constexpr int kMaxParseDepth = 200;

Program parse(const std::vector<Token>& tokens);

}  // namespace lp::text::jinja
