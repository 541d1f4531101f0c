// Test helpers for the structured-output front ends: PCRE2 as the reference matcher (whole-string, UTF),
// and a random walk that samples strings from a code point tree.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <gtest/gtest.h>
#include <pcre2.h>

#include <memory>
#include <optional>
#include <random>
#include <string>

#include "constrain/regex_ast.h"
#include "constrain/tree_util.h"

namespace lp::constrain::testing {

// A pattern compiled to match whole subjects only. `alt_bsux` makes PCRE2 read \uHHHH and \xHH as
// ECMAScript does, for the original patterns of the regex tests.
class Pcre {
 public:
  explicit Pcre(const std::string& pattern, bool alt_bsux = false) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t flags = PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED | (alt_bsux ? PCRE2_ALT_BSUX : 0);
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags, &err, &off,
                              nullptr));
    if (!code_) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      error_ = std::string(reinterpret_cast<const char*>(buf)) + " at " + std::to_string(off);
    }
  }
  bool ok() const { return code_ != nullptr; }
  const std::string& error() const { return error_; }

  // True when the whole of `s` matches. A subject that is not valid UTF-8 never matches.
  bool full_match(const std::string& s) const {
    if (!ok()) {
      ADD_FAILURE() << "matching with a pattern that did not compile: " << error_;
      return false;
    }
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
    const int rc =
        pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH || (rc < 0 && rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21))
      return false;
    EXPECT_GE(rc, 0) << "pcre2_match failed (" << rc << ") on " << s;
    return rc >= 0;
  }

 private:
  struct Free {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  std::unique_ptr<pcre2_code, Free> code_;
  std::string error_;
};

// A random string the tree matches (repeats take min..min+3 items); false when the walk met an empty
// alternation or set (a branch that matches nothing).
inline bool sample(const Node& n, std::mt19937& rng, std::string& out) {
  switch (n.kind) {
    case Node::Kind::kEmpty:
      return true;
    case Node::Kind::kText:
      out += n.text;
      return true;
    case Node::Kind::kSet: {
      if (n.ranges.empty()) return false;
      for (int tries = 0; tries < 20; ++tries) {
        const auto& [lo, hi] = n.ranges[rng() % n.ranges.size()];
        // Mostly near the start of the range (ASCII-ish), sometimes anywhere in it.
        const uint32_t span = hi - lo;
        const uint32_t cp =
            lo + (rng() % 4 == 0 ? rng() % (span + 1) : rng() % (std::min<uint32_t>(span, 40) + 1));
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        out += encode_utf8(cp);
        return true;
      }
      return false;
    }
    case Node::Kind::kConcat:
      for (const auto& k : n.kids)
        if (!sample(*k, rng, out)) return false;
      return true;
    case Node::Kind::kAlt:
      if (n.kids.empty()) return false;
      return sample(*n.kids[rng() % n.kids.size()], rng, out);
    case Node::Kind::kRepeat: {
      int hi = n.max < 0 ? n.min + 3 : std::min(n.max, n.min + 3);
      const int count = n.min + static_cast<int>(rng() % (hi - n.min + 1));
      for (int i = 0; i < count; ++i) {
        if (i > 0 && n.kids.size() > 1 && !sample(*n.kids[1], rng, out)) return false;
        if (!sample(*n.kids[0], rng, out)) return false;
      }
      return true;
    }
  }
  return false;
}

// A sample, retried past branches that match nothing; empty when 100 walks all failed.
inline std::optional<std::string> sample(const Node& n, std::mt19937& rng) {
  for (int i = 0; i < 100; ++i) {
    std::string s;
    if (sample(n, rng, s)) return s;
  }
  return std::nullopt;
}

}  // namespace lp::constrain::testing
