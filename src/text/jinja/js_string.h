// JavaScript string semantics over UTF-8. Our Jinja interpreter must render byte-identically to
// @huggingface/jinja, which runs on JS strings (UTF-16 code units, JS `\s`, Number#toString, JSON.stringify).
// Strings stay UTF-8 here; these helpers reproduce the JS behaviour where it differs from byte semantics.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lp::text::jinja::js {

// Appends the UTF-8 encoding of a code point (surrogates and > 0x10FFFF become U+FFFD).
void append_utf8(std::string& out, char32_t cp);

// Decodes UTF-8 like the WHATWG decoder (what node's readFileSync(.., "utf8") does): each maximal invalid
// subsequence becomes one U+FFFD.
std::vector<char32_t> decode(std::string_view s);
std::string encode(const std::vector<char32_t>& cps);

// Decodes the code point starting at s[i] (s must be valid UTF-8); *len receives its byte length.
char32_t decode_at(std::string_view s, size_t i, size_t* len);

// JS `\s` / String#trim whitespace.
bool is_space(char32_t c);
// Byte length of a JS whitespace character starting at s[i], 0 when there is none.
size_t space_len_at(std::string_view s, size_t i);
// Byte length of a JS whitespace character ending just before s[end], 0 when there is none.
size_t space_len_before(std::string_view s, size_t end);
// Skips the JS whitespace characters starting at s[i]: the index of the first byte past them.
size_t skip_space(std::string_view s, size_t i);

std::string trim(std::string_view s);
std::string trim_start(std::string_view s);
std::string trim_end(std::string_view s);

// String#toUpperCase / toLowerCase (per code point; no context-sensitive special casing).
std::string to_upper(std::string_view s);
std::string to_lower(std::string_view s);
// @huggingface/jinja's titleCase: /\b\w/g upper-cased, ASCII word characters only.
std::string title_case(std::string_view s);
// s.charAt(0).toUpperCase() + s.slice(1) (the rest is left as is, unlike Python).
std::string capitalize(std::string_view s);

// String#length: UTF-16 code units.
size_t utf16_length(std::string_view s);
// String#at(i) for one UTF-16 unit (negative i counts from the end); a lone surrogate half is rendered
// as U+FFFD, which is what node writes for it.
std::optional<std::string> utf16_at(std::string_view s, int64_t i);
// a < b as JS compares strings (by UTF-16 code units): <0, 0, >0.
int compare_utf16(std::string_view a, std::string_view b);
// String#localeCompare approximation (ICU root collation for ASCII: punctuation < digits < letters,
// case-insensitive first, lower before upper on ties).
int locale_compare(std::string_view a, std::string_view b);

// Number#toString() (shortest round-trip digits, JS exponent rules, "NaN", "Infinity").
std::string number_to_string(double v);
// JSON.stringify(string), optionally followed by @huggingface/jinja's ensure_ascii pass (every UTF-16
// unit >= 0x7f as \uXXXX).
std::string json_quote(std::string_view s, bool ensure_ascii);
// JS parseInt(s, 10) / parseFloat(s); nullopt for NaN.
std::optional<double> parse_int(std::string_view s);
std::optional<double> parse_float(std::string_view s);
// JS ToNumber(string) as used by loose equality ("" -> 0, "0x1f", " 12 ", NaN for junk).
double to_number(std::string_view s);

}  // namespace lp::text::jinja::js
