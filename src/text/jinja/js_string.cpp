// JavaScript string semantics over UTF-8 (see js_string.h).
#include "text/jinja/js_string.h"
#include "text/tokenizer_utf8.h"

#include <utf8proc.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace lp::text::jinja::js {

void append_utf8(std::string& out, char32_t cp) {
  // JS strings can hold lone surrogates; UTF-8 cannot: they (and out-of-range values) become U+FFFD.
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = 0xFFFD;
  text::utf8_append(out, cp);
}

namespace {

// One WHATWG decoding step at s[i]: returns the code point (U+FFFD for an invalid subsequence) and
// advances *i past what was consumed (a maximal invalid subpart counts as one, as in text::utf8_lossy).
char32_t decode_step(std::string_view s, size_t* i) {
  if (text::utf8_valid_len(s, *i) > 0) return text::utf8_next(s, *i);
  *i += text::utf8_invalid_len(s, *i);
  return 0xFFFD;
}

size_t utf16_units(char32_t cp) {
  return cp >= 0x10000 ? 2 : 1;
}

// Primary collation weight of an ASCII character for locale_compare; later in the string = larger.
int primary_weight(char32_t c) {
  static constexpr std::string_view kOrder =
      "\t\n\v\f\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz";
  if (c < 0x80) {
    char lc = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    size_t p = kOrder.find(lc);
    if (p != std::string_view::npos) return static_cast<int>(p) + 1;
    return 0;  // other control characters: ignorable
  }
  return 1000 + static_cast<int>(c);
}

}  // namespace

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) out.push_back(decode_step(s, &i));
  return out;
}

std::string encode(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

char32_t decode_at(std::string_view s, size_t i, size_t* len) {
  size_t j = i;
  const char32_t cp = decode_step(s, &j);
  *len = j - i;
  return cp;
}

bool is_space(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

size_t space_len_at(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  size_t len;
  const char32_t c = decode_at(s, i, &len);
  return is_space(c) ? len : 0;
}

size_t space_len_before(std::string_view s, size_t end) {
  for (size_t len = 1; len <= 3 && len <= end; ++len) {
    const size_t start = end - len;
    const auto b = static_cast<unsigned char>(s[start]);
    if ((b & 0xC0) == 0x80) continue;  // keep walking back to the lead byte
    size_t got;
    const char32_t c = decode_at(s, start, &got);
    return got == len && is_space(c) ? len : 0;
  }
  return 0;
}

size_t skip_space(std::string_view s, size_t i) {
  while (size_t n = space_len_at(s, i)) i += n;
  return i;
}

std::string trim_start(std::string_view s) {
  return std::string(s.substr(skip_space(s, 0)));
}

std::string trim_end(std::string_view s) {
  size_t end = s.size();
  while (size_t n = space_len_before(s, end)) end -= n;
  return std::string(s.substr(0, end));
}

std::string trim(std::string_view s) {
  return trim_end(trim_start(s));
}

std::string to_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : decode(s)) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c));
    } else if (c == 0xDF) {
      out += "SS";
    } else {
      append_utf8(out, static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : decode(s)) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    } else if (c == 0x130) {
      out += "i\xCC\x87";
    } else {
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

std::string title_case(std::string_view s) {
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    if (word(out[i]) && (i == 0 || !word(s[i - 1])) && out[i] >= 'a' && out[i] <= 'z') out[i] -= 32;
  }
  return out;
}

std::string capitalize(std::string_view s) {
  if (s.empty()) return {};
  size_t len;
  const char32_t c = decode_at(s, 0, &len);
  if (c >= 0x10000) return std::string(s);
  std::string first;
  append_utf8(first, c);
  return to_upper(first) + std::string(s.substr(len));
}

size_t utf16_length(std::string_view s) {
  size_t n = 0, i = 0;
  while (i < s.size()) n += utf16_units(decode_step(s, &i));
  return n;
}

std::optional<std::string> utf16_at(std::string_view s, int64_t index) {
  const auto len = static_cast<int64_t>(utf16_length(s));
  if (index < 0) index += len;
  if (index < 0 || index >= len) return std::nullopt;
  int64_t unit = 0;
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    const char32_t cp = decode_step(s, &i);
    const auto w = static_cast<int64_t>(utf16_units(cp));
    if (index < unit + w) {
      if (w == 2) return std::string("\xEF\xBF\xBD");  // half of a surrogate pair
      return std::string(s.substr(start, i - start));
    }
    unit += w;
  }
  return std::nullopt;
}

int compare_utf16(std::string_view a, std::string_view b) {
  // Astral code points sort as surrogates (0xD800..), i.e. below U+E000..U+FFFF.
  auto key = [](char32_t c) -> uint32_t { return c >= 0x10000 ? 0xD800 + ((c - 0x10000) >> 10) : c; };
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const char32_t ca = decode_step(a, &i), cb = decode_step(b, &j);
    if (ca == cb) continue;
    const uint32_t ka = key(ca), kb = key(cb);
    if (ka != kb) return ka < kb ? -1 : 1;
    return ca < cb ? -1 : 1;  // same high surrogate: the low surrogate decides, same order as code points
  }
  if (i < a.size()) return 1;
  if (j < b.size()) return -1;
  return 0;
}

int locale_compare(std::string_view a, std::string_view b) {
  const auto da = decode(a), db = decode(b);
  std::vector<int> pa, pb;
  for (char32_t c : da) {
    if (int w = primary_weight(c)) pa.push_back(w);
  }
  for (char32_t c : db) {
    if (int w = primary_weight(c)) pb.push_back(w);
  }
  if (pa != pb) return std::lexicographical_compare(pa.begin(), pa.end(), pb.begin(), pb.end()) ? -1 : 1;
  for (size_t k = 0; k < da.size() && k < db.size(); ++k) {
    const bool ua = da[k] >= 'A' && da[k] <= 'Z', ub = db[k] >= 'A' && db[k] <= 'Z';
    if (ua != ub) return ua ? 1 : -1;  // lower case first
  }
  return da.size() == db.size() ? 0 : (da.size() < db.size() ? -1 : 1);
}

std::string number_to_string(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0) return "0";
  std::string out;
  if (v < 0) {
    out.push_back('-');
    v = -v;
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));  // d[.ddd]e[+-]XX
  const size_t epos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, epos)) {
    if (c != '.') digits.push_back(c);
  }
  const int exp10 = std::atoi(std::string(sci.substr(epos + 1)).c_str());
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;  // v = 0.digits * 10^n
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<size_t>(n));
    out.push_back('.');
    out += digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-n), '0');
    out += digits;
  } else {
    out.push_back(digits[0]);
    if (k > 1) {
      out.push_back('.');
      out += digits.substr(1);
    }
    out.push_back('e');
    out.push_back(n - 1 >= 0 ? '+' : '-');
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
            out += "\\u00";
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    const size_t start = i;
    const char32_t cp = decode_step(s, &i);
    if (!ensure_ascii) {
      out.append(s.substr(start, i - start));
      continue;
    }
    auto unit = [&](uint32_t u) {
      out += "\\u";
      for (int sh = 12; sh >= 0; sh -= 4) out.push_back(kHex[(u >> sh) & 15]);
    };
    if (cp >= 0x10000) {
      unit(0xD800 + ((cp - 0x10000) >> 10));
      unit(0xDC00 + ((cp - 0x10000) & 0x3FF));
    } else {
      unit(cp);
    }
  }
  out.push_back('"');
  return out;
}

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Length of the longest StrDecimalLiteral prefix of s (sign handled by the caller), 0 if none.
size_t decimal_prefix(std::string_view s) {
  size_t i = 0, int_digits = 0, frac_digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++int_digits;
  if (i < s.size() && s[i] == '.') {
    size_t j = i + 1;
    while (j < s.size() && is_digit(s[j])) ++j, ++frac_digits;
    if (int_digits + frac_digits > 0) i = j;
  }
  if (int_digits + frac_digits == 0) return 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    size_t e_digits = 0;
    while (j < s.size() && is_digit(s[j])) ++j, ++e_digits;
    if (e_digits > 0) i = j;
  }
  return i;
}

double strtod_view(std::string_view s) {
  return std::strtod(std::string(s).c_str(), nullptr);
}

}  // namespace

std::optional<double> parse_int(std::string_view s) {
  size_t i = skip_space(s, 0);
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  const size_t start = i;
  while (i < s.size() && is_digit(s[i])) ++i;
  if (i == start) return std::nullopt;
  const double v = strtod_view(s.substr(start, i - start));
  return neg ? -v : v;
}

std::optional<double> parse_float(std::string_view s) {
  size_t i = skip_space(s, 0);
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  const std::string_view rest = s.substr(i);
  if (rest.substr(0, 8) == "Infinity") return neg ? -HUGE_VAL : HUGE_VAL;
  const size_t len = decimal_prefix(rest);
  if (len == 0) return std::nullopt;
  const double v = strtod_view(rest.substr(0, len));
  return neg ? -v : v;
}

double to_number(std::string_view s) {
  const std::string trimmed = trim(s);
  std::string_view t = trimmed;
  if (t.empty()) return 0;
  if (t.size() > 2 && t[0] == '0' && (t[1] | 0x20) != '.' && std::strchr("xXoObB", t[1]) != nullptr) {
    const int base = (t[1] | 0x20) == 'x' ? 16 : (t[1] | 0x20) == 'o' ? 8 : 2;
    double v = 0;
    for (char c : t.substr(2)) {
      int d = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : 99;
      if (d >= base) return NAN;
      v = v * base + d;
    }
    return v;
  }
  bool neg = false;
  if (t[0] == '+' || t[0] == '-') {
    neg = t[0] == '-';
    t.remove_prefix(1);
  }
  if (t == "Infinity") return neg ? -HUGE_VAL : HUGE_VAL;
  if (decimal_prefix(t) != t.size() || t.empty()) return NAN;
  const double v = strtod_view(t);
  return neg ? -v : v;
}

}  // namespace lp::text::jinja::js
