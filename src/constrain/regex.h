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

// The whole pattern must match (as vLLM's regex outputs do); `^` / `\A` at the start of a top-level branch
// and `$` / `\Z` / `\z` at its end are accepted and ignored. Throws lp::Error(kInvalid) whose message says
// what is wrong and where ("invalid regex at offset 12: ..."; offsets count bytes).
//
// The dialect, where Python re and ECMAScript differ:
// - \d \w \s and their negations have their ASCII meanings ([0-9], [A-Za-z0-9_], [ \t\n\v\f\r]), as in
//   Python's re.ASCII and ECMAScript's \d \w (not Python str's Unicode classes, nor ECMAScript's Unicode
//   \s): predictable for a grammar, and what PCRE2 does without UCP. `.` is any code point but \n.
// - Escapes: \n \t \r \f \v (vertical tab) \a \0 \xHH \x{H..} \uHHHH (a pair of surrogate escapes is
//   one code point) \u{H..} \UHHHHHHHH, and any escaped non-alphanumeric character stands for itself.
//   In a class, \b is a backspace.
// - Classes follow Python: `]` first in a class is a literal, `[^]...]` is negated; `-` first or last is a
//   literal. `{` that does not open a quantifier is a literal; `{,n}` means {0,n} as in Python.
// - Groups (...), (?:...), (?P<name>...), (?<name>...) all just group; lazy quantifiers match the same
//   strings as greedy ones.
// Refused, naming the construct: backreferences (\1, (?P=n), \k<n>), lookahead / lookbehind, \b \B,
// inline flags, atomic groups, conditionals, comments, possessive quantifiers, \p{..}, POSIX classes,
// octal escapes, repeat counts over max_repeat, patterns over max_pattern_bytes, groups nested over 100 deep
// (so hostile nesting can't overflow the stack here or in later passes), malformed UTF-8.
// Not bounded here: the size of the automaton a pattern unrolls to ((a{1000}){1000}); the back end bounds it.
NodePtr parse_regex(std::string_view pattern, const RegexLimits& limits = {});

}  // namespace lp::constrain
