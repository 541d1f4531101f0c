// Regular-expression patterns (vLLM's structured_outputs.regex, a JSON schema's "pattern") parsed into the
// code point tree of regex_ast.h. The dialect is the regular subset of Python re / ECMAScript that
// structured-output clients send; anything outside it (backreferences, lookaround, ...) is refused naming the
// construct, because a grammar must stay a finite automaton.
#pragma once

#include <string_view>

#include "constrain/regex_ast.h"

namespace lp::constrain {

struct RegexLimits {
  int max_pattern_bytes = 16 << 10;
  int max_repeat = 1000;  // the largest m / n in {m}, {m,n}, {m,}
};

// The whole pattern must match (as vLLM's regex outputs do); `^` at the start and `$` at the end are accepted
// and ignored. Throws lp::Error(kInvalid) whose message says what is wrong and where ("at offset 12: ...").
NodePtr parse_regex(std::string_view pattern, const RegexLimits& limits = {});

}  // namespace lp::constrain
