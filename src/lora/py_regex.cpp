#include "lora/py_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/check.h"

namespace lp::lora {

namespace {

constexpr uint32_t kMatchLimit = 1'000'000;  // backtracking steps per match; module names are short

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  int n = pcre2_get_error_message(code, buf, sizeof buf);
  return n < 0 ? "unknown error" : std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

}  // namespace

PyRegex::PyRegex(const std::string& pattern, const std::string& what) : pattern_(pattern), what_(what) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (!code) {
    fail("invalid regular expression \"{}\" in {}: {} at offset {}", pattern, what, pcre2_message(err),
         offset);
  }
  code_ = std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
}

bool PyRegex::run(std::string_view s, bool full) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> ctx(
      pcre2_match_context_create(nullptr), &pcre2_match_context_free);
  LP_CHECK(md && ctx, "out of memory for a regex match");
  pcre2_set_match_limit(ctx.get(), kMatchLimit);
  uint32_t opts = PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0);
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, opts, md.get(), ctx.get());
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  fail("regular expression \"{}\" in {} failed on \"{}\": {}", pattern_, what_, s, pcre2_message(rc));
}

bool PyRegex::fullmatch(std::string_view s) const {
  return run(s, true);
}
bool PyRegex::match(std::string_view s) const {
  return run(s, false);
}

}  // namespace lp::lora
