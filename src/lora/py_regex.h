// Regular expressions with Python `re` semantics, for the patterns PEFT adapter configs carry
// (`target_modules` as a string, `exclude_modules`, `rank_pattern`/`alpha_pattern` keys). Backed by PCRE2,
// whose syntax is the closest to Python's (lookarounds, lazy quantifiers, (?P<name>...)); matching runs
// under a backtracking limit, so a hostile pattern yields an lp::Error rather than a hang. Immutable and
// cheap to copy (the compiled code is shared); safe to use from several threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace lp::lora {

class PyRegex {
 public:
  // Compiles `pattern`; throws lp::Error naming `what` ("target_modules in adapter_config.json") when it is
  // not a valid regular expression.
  PyRegex(const std::string& pattern, const std::string& what);

  bool fullmatch(std::string_view s) const;  // Python re.fullmatch(pattern, s)
  bool match(std::string_view s) const;      // Python re.match(pattern, s): anchored at the start only
  const std::string& pattern() const { return pattern_; }

 private:
  bool run(std::string_view s, bool full) const;
  std::string pattern_;
  std::string what_;
  std::shared_ptr<void> code_;  // pcre2_code_8, freed with pcre2_code_free
};

}  // namespace lp::lora
