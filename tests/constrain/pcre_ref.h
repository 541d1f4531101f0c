// Test helpers for the grammar back end: PCRE2 as the independent reference for what a code point tree
// matches (to_pcre, UTF mode, anchored at both ends), and random trees / strings to compare on.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "constrain/regex_ast.h"

namespace lp::constrain::test {

class Pcre {
 public:
  explicit Pcre(const Node& tree) {
    const std::string pattern = to_pcre(tree);
    code_ = compile(pattern, PCRE2_ENDANCHORED);
    // Partial matching can't be combined with PCRE2_ENDANCHORED; \z does the same and, under
    // PCRE2_PARTIAL_HARD, reports a partial match at the end of the subject.
    prefix_code_ = compile("(?:" + pattern + ")\\z", 0);
    data_ = pcre2_match_data_create(1, nullptr);
    ctx_ = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(ctx_, 2'000'000);
  }
  ~Pcre() {
    pcre2_match_context_free(ctx_);
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
    pcre2_code_free(prefix_code_);
  }
  Pcre(const Pcre&) = delete;
  Pcre& operator=(const Pcre&) = delete;

  // Whole-string match; invalid UTF-8 never matches. nullopt: PCRE2 gave up (match limit).
  std::optional<bool> full(std::string_view s) const { return run(code_, s, 0); }
  // `s` is a prefix of some match (a truncated final UTF-8 character allowed).
  std::optional<bool> prefix(std::string_view s) const { return run(prefix_code_, s, PCRE2_PARTIAL_HARD); }

 private:
  static pcre2_code* compile(const std::string& pattern, uint32_t extra) {
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_ANCHORED | PCRE2_DOTALL | extra, &err, &off, nullptr);
    if (!code)
      throw std::runtime_error("PCRE2 rejected a pattern of " + std::to_string(pattern.size()) + " bytes");
    return code;
  }
  std::optional<bool> run(const pcre2_code* code, std::string_view s, uint32_t opts) const {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, opts, data_, ctx_);
    if (rc >= 0 || rc == PCRE2_ERROR_PARTIAL) return true;
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) return false;  // invalid UTF-8
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
      return std::nullopt;
    throw std::runtime_error("pcre2_match failed: " + std::to_string(rc));
  }
  pcre2_code* code_ = nullptr;
  pcre2_code* prefix_code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
  pcre2_match_context* ctx_ = nullptr;
};

inline void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Random trees over a small alphabet (so random strings hit them), with non-ASCII texts and ranges that
// cross the UTF-8 length boundaries and the surrogate gap.
class TreeGen {
 public:
  explicit TreeGen(uint32_t seed) : rng_(seed) {}

  NodePtr tree(int depth) {
    const int pick = depth <= 0 ? static_cast<int>(rng_() % 3) : static_cast<int>(rng_() % 7);
    switch (pick) {
      case 0:
        return text(kTexts[rng_() % std::size(kTexts)]);
      case 1:
        return set(ranges());
      case 2:
        return rng_() % 4 == 0 ? empty() : text(kTexts[rng_() % std::size(kTexts)]);
      case 3:
      case 4: {
        std::vector<NodePtr> kids;
        for (int i = 0, n = 1 + static_cast<int>(rng_() % 3); i < n; ++i) kids.push_back(tree(depth - 1));
        return pick == 3 ? concat(std::move(kids)) : alt(std::move(kids));
      }
      default: {
        const int min = static_cast<int>(rng_() % 3);
        const int max = rng_() % 2 ? -1 : min + static_cast<int>(rng_() % 3);
        NodePtr sep = rng_() % 2 ? text(kSeps[rng_() % std::size(kSeps)]) : nullptr;
        return repeat(tree(depth - 1), min, max, sep);
      }
    }
  }

  CodepointRanges ranges() {
    static const std::pair<uint32_t, uint32_t> kPool[] = {
        {'a', 'c'},         {'0', '9'},           {'a', 'a'},       {0x20, 0x7F},     {0x7E, 0x81},
        {0xE0, 0xE9},       {0x7FF, 0x800},       {0x430, 0x436},   {0xD7FF, 0xE000}, {0xFFFF, 0x10000},
        {0x1F600, 0x1F601}, {0x10FFFE, 0x10FFFF}, {0x80, 0x10FFFF}, {0, 0x10FFFF},    {0x3040, 0x30FF},
    };
    CodepointRanges r;
    for (int i = 0, n = 1 + static_cast<int>(rng_() % 2); i < n; ++i)
      r.push_back(kPool[rng_() % std::size(kPool)]);
    return r;
  }

  // A string the tree matches (random choices throughout).
  std::string member(const Node& n) {
    std::string out;
    emit(n, out);
    return out;
  }

  // Bytes of the alphabet: what the trees use, plus bytes no UTF-8 text holds.
  std::string random_bytes(int max_len) {
    // ASCII, valid 2-4 byte characters, an encoded surrogate, DEL, and invalid bytes (no NUL: the literal's
    // length is its strlen).
    static const std::string kBytes =
        "abc09,;- é\xC3\xA9\xD0\xB0\xF0\x9F\x98\x80\xED\xA0\x80\xEE\x80\x80\x7F\xC2\x80\xFF\xC0\x80";
    std::string s;
    for (int i = 0, n = static_cast<int>(rng_() % (max_len + 1)); i < n; ++i)
      s += kBytes[rng_() % kBytes.size()];
    return s;
  }

  // `s` changed a little: a byte inserted, dropped or replaced, or a cut.
  std::string mutate(std::string s) {
    const std::string extra = random_bytes(2);
    switch (rng_() % 4) {
      case 0:
        s.insert(s.empty() ? 0 : rng_() % (s.size() + 1), extra);
        break;
      case 1:
        if (!s.empty()) s.erase(rng_() % s.size(), 1);
        break;
      case 2:
        if (!s.empty() && !extra.empty()) s[rng_() % s.size()] = extra[0];
        break;
      default:
        if (!s.empty()) s.resize(rng_() % s.size());
    }
    return s;
  }

  std::mt19937& rng() { return rng_; }

 private:
  static constexpr const char* kTexts[] = {"a", "b", "ab", "é", "ж", "😀", "0", "\"", "{}"};
  static constexpr const char* kSeps[] = {",", ", ", ";"};

  void emit(const Node& n, std::string& out) {
    switch (n.kind) {
      case Node::Kind::kEmpty:
        return;
      case Node::Kind::kText:
        out += n.text;
        return;
      case Node::Kind::kSet: {
        if (n.ranges.empty()) return;
        for (;;) {
          auto [lo, hi] = n.ranges[rng_() % n.ranges.size()];
          // Ends of ranges more often: the boundaries are where encodings go wrong.
          const uint32_t c = rng_() % 3 == 0 ? (rng_() % 2 ? lo : hi) : lo + rng_() % (hi - lo + 1);
          if (c >= 0xD800 && c <= 0xDFFF) continue;
          append_utf8(out, c);
          return;
        }
      }
      case Node::Kind::kConcat:
        for (const auto& k : n.kids) emit(*k, out);
        return;
      case Node::Kind::kAlt:
        if (!n.kids.empty()) emit(*n.kids[rng_() % n.kids.size()], out);
        return;
      case Node::Kind::kRepeat: {
        const int hi = n.max < 0 ? n.min + 3 : n.max;
        const int count = n.min + static_cast<int>(rng_() % (hi - n.min + 1));
        for (int i = 0; i < count; ++i) {
          if (i > 0 && n.kids.size() > 1) emit(*n.kids[1], out);
          emit(*n.kids[0], out);
        }
        return;
      }
    }
  }

  std::mt19937 rng_;
};

}  // namespace lp::constrain::test
