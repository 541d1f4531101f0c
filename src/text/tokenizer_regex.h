// A compiled PCRE2 pattern (UTF + UCP, JIT when available) for the tokenizer's Split / Replace units and
// the GPT-2 byte-level split. tokenizer.json patterns are written for Oniguruma; the constructs real
// tokenizers use (\p{L}, \p{N}, \s, look-ahead, (?i:...), possessive-free alternations) mean the same in
// PCRE2. A Regex is immutable and safe to share between threads (match scratch is thread-local).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lp::text {

// One match or gap: [start, end) byte offsets and whether it is a match of the pattern.
struct Span {
  size_t start = 0;
  size_t end = 0;
  bool is_match = false;
};

class Regex {
 public:
  // Compiles `pattern`; throws lp::Error with `what` and PCRE2's message when it does not compile.
  Regex(std::string_view pattern, std::string_view what);
  // A literal string pattern (no metacharacters).
  static Regex literal(std::string_view text, std::string_view what);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the non-empty matches in `text` (valid UTF-8) to *out, left to right, non-overlapping.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;

  // The whole of `text` cut into alternating gaps and matches (Span::is_match), covering every byte;
  // empty text gives one empty gap. This is Rust tokenizers' Pattern::find_matches.
  std::vector<Span> spans(std::string_view text) const;

  // `text` with every match replaced by `content` (taken literally).
  std::string replace_all(std::string_view text, std::string_view content) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace lp::text
