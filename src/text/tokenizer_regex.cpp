#include "text/tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include "core/check.h"

namespace lp::text {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match scratch: one ovector pair is enough (we only need the whole match; PCRE2 reports
// rc == 0 when capture groups do not fit, which still is a match) and a JIT stack large enough for long
// whitespace runs in patterns like `\s+(?!\S)`.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_context* context = nullptr;

  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    LP_CHECK(data && jit_stack && context, "PCRE2 allocation failed");
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

// Finds the first match at or after `from`; returns false when there is none.
bool match_at(const pcre2_code* code, std::string_view text, size_t from, size_t* start, size_t* end) {
  MatchScratch& s = scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, s.data, s.context);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    // Pathological input for the JIT stack: retry with the interpreter (heap-based backtracking).
    rc = pcre2_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, s.data, s.context);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) fail("regex match failed ({}) on a text of {} bytes", pcre2_message(rc), text.size());
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  *start = ov[0];
  *end = ov[1];
  return true;
}

size_t next_char_boundary(std::string_view text, size_t pos) {
  ++pos;
  while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
  return pos;
}

}  // namespace

Regex::Regex(std::string_view pattern, std::string_view what) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (!code)
    fail("{}: regex '{}' does not compile at offset {}: {}", what, pattern, err_off, pcre2_message(err));
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  code_ = code;
}

Regex Regex::literal(std::string_view text, std::string_view what) {
  std::string escaped;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) escaped.push_back('\\');
    escaped.push_back(c);
  }
  return Regex(escaped, what);
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

Regex::Regex(Regex&& o) noexcept : pattern_(std::move(o.pattern_)), code_(o.code_) {
  o.code_ = nullptr;
}

Regex& Regex::operator=(Regex&& o) noexcept {
  if (this != &o) {
    if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
    pattern_ = std::move(o.pattern_);
    code_ = o.code_;
    o.code_ = nullptr;
  }
  return *this;
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
  const auto* code = static_cast<const pcre2_code*>(code_);
  size_t pos = 0, start = 0, end = 0;
  while (pos < text.size() && match_at(code, text, pos, &start, &end)) {
    if (end == start) {  // empty match: nothing to keep, move one character on
      pos = next_char_boundary(text, start);
      continue;
    }
    out->emplace_back(start, end);
    pos = end;
  }
}

std::vector<Span> Regex::spans(std::string_view text) const {
  std::vector<Span> result;
  if (text.empty()) {
    result.push_back(Span{0, 0, false});
    return result;
  }
  std::vector<std::pair<size_t, size_t>> matches;
  find_all(text, &matches);
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (s > prev) result.push_back(Span{prev, s, false});
    result.push_back(Span{s, e, true});
    prev = e;
  }
  if (prev < text.size()) result.push_back(Span{prev, text.size(), false});
  return result;
}

std::string Regex::replace_all(std::string_view text, std::string_view content) const {
  std::vector<std::pair<size_t, size_t>> matches;
  find_all(text, &matches);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    out.append(text.substr(prev, s - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace lp::text
