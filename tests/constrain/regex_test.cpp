// parse_regex against PCRE2: for realistic patterns, the original pattern (compiled by PCRE2) and the parsed
// tree (printed by to_pcre) must accept exactly the same strings; unsupported constructs are refused by name.
#include "constrain/regex.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "pcre_oracle.h"
#include "util/string_edits.h"

namespace lp::constrain {
namespace {

using testing::Pcre;

struct Case {
  std::string pattern;
  std::vector<std::string> match;     // written by hand: the pattern matches these whole
  std::vector<std::string> no_match;  // ... and not these
};

// Patterns in the dialect both PCRE2 (with ALT_BSUX for \u) and parse_regex read the same way.
const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {R"([a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,})",
       {"a.b@ex-ample.com", "x@y.io"},
       {"a@b.c", "@x.com", "a b@c.de"}},
      {R"(\d{4}-\d{2}-\d{2})", {"2024-01-31"}, {"2024-1-31", "２０２４-01-31", "2024-01-311"}},
      {R"(^\(?\d{3}\)?[-. ]?\d{3}[-. ]?\d{4}$)",
       {"(555) 123-4567", "555.123.4567", "5551234567"},
       {"555-1234", "(555)) 123-4567"}},
      {R"([A-Za-z_][A-Za-z0-9_]*)", {"_x1", "Foo"}, {"1x", "", "a-b"}},
      {R"((cat|dog|bird)s?)", {"cats", "dog", "birds"}, {"cow", "catss", ""}},
      {R"(((ab)*c)+d?)", {"c", "ababcabcd", "cc"}, {"abd", "ab", ""}},
      {R"([\w.-]+)", {"a.b-c_9"}, {"a b", "é"}},
      {R"([^\s"]{1,5})", {"abc", "é😀!"}, {"a\"b", "a b", "abcdef", ""}},
      {"héllo|wörld|日本語+", {"héllo", "日本語語語"}, {"hello", "日本"}},
      {R"((?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?)", {"23:59", "07:05:09"}, {"24:00", "7:05", "12:60"}},
      {R"((?P<year>\d{4})-(?<month>0[1-9]|1[0-2]))", {"2023-12", "1999-01"}, {"2023-13", "2023-00"}},
      {R"(\x41\u00e9\t.)", {"Aé\tx", "Aé\t😀"}, {"Aé\t\n", "Aé x"}},
      {R"(a{2,3}?b*?c+?)", {"aac", "aaabbbcc"}, {"ac", "aaaac", "aab"}},
      {R"([\]\[\-^]+)", {"]", "[-^]"}, {"a", ""}},
      {R"(.*)", {"", "anything é 😀", "\t\r"}, {"a\nb", "\n"}},
      {R"([^a-c]x)", {"dx", "\nx", "😀x"}, {"ax", "cx", "x"}},
      {R"((a|b|)+c)", {"c", "abbac"}, {"abd"}},
      {R"(\S+\s\W\D)", {"ab\t!x", "x\v.."}, {"ab a!x", "a\t!1"}},
      {"[😀-😂]{2}", {"😀😂", "😁😁"}, {"😀", "😃😀"}},
      {R"(true|false|null)", {"true", "null"}, {"True", "nul"}},
      {R"(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?)", {"0", "-12.5e+3", "7E9"}, {"01", "1.", "-", ".5"}},
      {R"(\$\d+\.\d\d)", {"$3.50"}, {"3.50", "$3.5"}},
      {R"([\u0041-\u005A]+)", {"ABZ"}, {"abc", "AB1"}},
      {R"((?:https?://)?[a-z0-9-]+(\.[a-z0-9-]+)+(/[^\s]*)?)",
       {"https://example.com/a?b=c", "x.y"},
       {"http://x", "a b.c"}},
      {R"(^$)", {""}, {"a"}},
      {R"(a|^b|c$)", {"a", "b", "c"}, {"ab", ""}},
      {R"(a{b)", {"a{b"}, {"ab"}},
      {R"(x{3}y{2,}z{0,1})", {"xxxyy", "xxxyyyz"}, {"xxyy", "xxxyzz"}},
      {R"([\d\s]{2}[\\/\n])", {"1 \\", "\t9/", "12\n"}, {"12a"}},
      {R"(\(\)\{\}\.\*\+\?\|\^)", {"(){}.*+?|^"}, {"(){}"}},
      {R"((((((a)))))|b{0})", {"a", ""}, {"b"}},
      {R"([-a][a-][\--/])", {"-a.", "a-/", "--."}, {"b--"}},
      {"\\0\\f\\r\\t", {std::string("\0\f\r\t", 4)}, {"0frt"}},
  };
  return c;
}

// Strings near the pattern: its own characters and some others, random lengths.
std::vector<std::string> random_strings(const std::string& pattern, std::mt19937& rng, int count) {
  std::vector<std::string> alphabet;
  for (size_t i = 0; i < pattern.size();) {
    size_t len = 1;
    const auto b = static_cast<unsigned char>(pattern[i]);
    if (b >= 0xF0)
      len = 4;
    else if (b >= 0xE0)
      len = 3;
    else if (b >= 0xC0)
      len = 2;
    alphabet.push_back(pattern.substr(i, len));
    i += len;
  }
  for (const char* extra :
       {"a", "Z", "0", "9", "_", ".", "-", "@", " ", "\n", "\t", "\"", "é", "😀", "日", ":", "/"})
    alphabet.push_back(extra);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string s;
    const int len = static_cast<int>(rng() % 12);
    for (int k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
    out.push_back(s);
  }
  return out;
}

// Small edits of a string: one code unit deleted, duplicated, or replaced by a neighbour character.
std::vector<std::string> mutations(const std::string& s, std::mt19937& rng) {
  return lp::test::one_edit_mutations(
      s, rng, 6, [](const std::string& m, size_t at) { return m[at]; },
      [](const std::string& m, size_t at) { return static_cast<char>(m[at] ^ 1); });
}

TEST(ParseRegex, HandWrittenExamplesHoldForTheOriginalPattern) {
  // Guards the oracle: the expectations above are about the pattern itself, checked by PCRE2.
  for (const auto& c : cases()) {
    Pcre original(c.pattern, /*alt_bsux=*/true);
    ASSERT_TRUE(original.ok()) << c.pattern << ": " << original.error();
    for (const auto& s : c.match) EXPECT_TRUE(original.full_match(s)) << c.pattern << " vs " << s;
    for (const auto& s : c.no_match) EXPECT_FALSE(original.full_match(s)) << c.pattern << " vs " << s;
  }
}

TEST(ParseRegex, TreeMatchesTheSameStringsAsTheOriginalPattern) {
  std::mt19937 rng(1234);
  int positives = 0;
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.pattern);
    const NodePtr tree = parse_regex(c.pattern);
    const std::string printed = to_pcre(*tree);
    Pcre original(c.pattern, true), parsed(printed);
    ASSERT_TRUE(parsed.ok()) << printed << ": " << parsed.error();
    std::vector<std::string> subjects = c.match;
    subjects.insert(subjects.end(), c.no_match.begin(), c.no_match.end());
    for (auto& s : random_strings(c.pattern, rng, 300)) subjects.push_back(std::move(s));
    // Strings sampled from the tree: accepted by the original pattern if the tree is right.
    for (int i = 0; i < 100; ++i) {
      std::string s;
      ASSERT_TRUE(testing::sample(*tree, rng, s));
      for (auto& m : mutations(s, rng)) subjects.push_back(std::move(m));
      subjects.push_back(std::move(s));
    }
    for (const auto& s : subjects) {
      const bool want = original.full_match(s);
      positives += want;
      EXPECT_EQ(parsed.full_match(s), want) << "subject '" << s << "', tree " << printed;
    }
  }
  EXPECT_GT(positives, 2000);  // the comparison saw plenty of matches, not only rejections
}

TEST(ParseRegex, DialectDetailsOutsidePcre) {
  // {,n} is Python's {0,n}; \x{..}, \u{..} and \U........ name code points; an ECMAScript surrogate pair of
  // \u escapes is one code point; \b in a class is a backspace.
  struct Want {
    std::string pattern, yes, no;
  };
  const std::vector<Want> wants = {
      {"a{,2}b", "aab", "aaab"},     {"\\x{1F600}", "😀", "x"},      {"\\u{e9}", "é", "e"},
      {"\\U0001F600", "😀", "U"},     {"\\uD83D\\uDE00", "😀", "\\"}, {"[\\b]", "\b", "b"},
      {"\\A(?:x|y)\\Z", "y", "\\A"}, {"a\\z", "a", "az"},           {"\\v\\a", "\v\a", "\n\a"},
  };
  for (const auto& w : wants) {
    Pcre parsed(to_pcre(*parse_regex(w.pattern)));
    ASSERT_TRUE(parsed.ok()) << w.pattern;
    EXPECT_TRUE(parsed.full_match(w.yes)) << w.pattern;
    EXPECT_FALSE(parsed.full_match(w.no)) << w.pattern;
  }
}

TEST(ParseRegex, RefusesEachUnsupportedConstructByName) {
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"(a)b\\1", "backreference"},
      {"(?P<n>a)(?P=n)", "backreference"},
      {"(?<n>a)\\k<n>", "backreference"},
      {"(?=a)a", "lookahead"},
      {"a(?!b)", "lookahead"},
      {"(?<=a)b", "lookbehind"},
      {"(?<!a)b", "lookbehind"},
      {"\\bword", "word boundary"},
      {"a\\B", "word boundary"},
      {"(?i)abc", "inline flags"},
      {"(?s:a.)", "inline flags"},
      {"a++", "possessive"},
      {"a{2}+", "possessive"},
      {"a{1001}", "over the limit"},
      {"a{2,1001}", "over the limit"},
      {"a{3,2}", "minimum is over the maximum"},
      {"(ab", "missing ')'"},
      {"ab)", "unbalanced ')'"},
      {"[z-a]", "bad character range"},
      {"[\\d-z]", "bad character range"},
      {"[abc", "unterminated character class"},
      {"*a", "nothing to repeat"},
      {"a**", "multiple repeat"},
      {"\\p{L}", "Unicode property"},
      {"a^b", "anchor '^'"},
      {"a$b", "anchor '$'"},
      {"(a$)", "anchor '$'"},
      {"(?>a)", "atomic group"},
      {"\\q", "unsupported escape"},
      {"\\012", "octal escape"},
      {"\\uD800", "not a Unicode scalar value"},
      {"[[:alpha:]]", "POSIX class"},
      {"abc\\", "lone backslash"},
      {"\xff", "not valid UTF-8"},
  };
  for (const auto& [pattern, words] : refused) {
    try {
      parse_regex(pattern);
      ADD_FAILURE() << "accepted " << pattern;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << pattern << " -> " << e.what();
    }
  }
}

TEST(ParseRegex, ErrorsNameTheByteOffset) {
  try {
    parse_regex("é(a)b\\1");  // é is two bytes, so the backslash is at byte 6
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at offset 6:"), std::string::npos) << e.what();
  }
}

TEST(ParseRegex, HostileInputGivesErrorsNotCrashes) {
  const std::string deep_open(10000, '(');
  EXPECT_THROW(parse_regex(deep_open), Error);
  EXPECT_THROW(parse_regex(deep_open + "a" + std::string(10000, ')')), Error);
  EXPECT_THROW(parse_regex(std::string(10000, '[')), Error);
  EXPECT_THROW(parse_regex("a{99999999999999999999}"), Error);
  RegexLimits small;
  small.max_pattern_bytes = 8;
  EXPECT_THROW(parse_regex("abcdefghij", small), Error);
  // Nesting within the limit is fine.
  const NodePtr ok = parse_regex(std::string(50, '(') + "a" + std::string(50, ')'));
  EXPECT_TRUE(Pcre(to_pcre(*ok)).full_match("a"));
}

}  // namespace
}  // namespace lp::constrain
