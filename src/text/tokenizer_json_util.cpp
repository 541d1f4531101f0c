#include "text/tokenizer_json_util.h"

#include "core/check.h"
#include "io/json_file.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

std::string json_type_of(const Json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

const Json& json_field(const Json& j, std::string_view key, std::string_view what) {
  if (!j.is_object()) fail("{}: expected an object, got {}", what, io::json_type_name(j));
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field '{}'", what, key);
  return *it;
}

std::string json_string(const Json& j, std::string_view key, std::string_view what) {
  const Json& v = json_field(j, key, what);
  if (!v.is_string()) fail("{}: field '{}' must be a string, got {}", what, key, io::json_type_name(v));
  return v.get<std::string>();
}

bool json_bool_or(const Json& j, std::string_view key, bool fallback, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("{}: field '{}' must be a boolean, got {}", what, key, io::json_type_name(*it));
  return it->get<bool>();
}

int64_t json_int_or(const Json& j, std::string_view key, int64_t fallback, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer())
    fail("{}: field '{}' must be an integer, got {}", what, key, io::json_type_name(*it));
  return it->get<int64_t>();
}

char32_t json_char(const Json& j, std::string_view key, std::string_view what) {
  const std::string s = json_string(j, key, what);
  size_t n = s.empty() ? 0 : utf8_valid_len(s, 0);
  if (n == 0 || n != s.size()) fail("{}: field '{}' must be exactly one character, got '{}'", what, key, s);
  size_t pos = 0;
  return utf8_next(s, pos);
}

Regex json_pattern(const Json& j, std::string_view key, std::string_view what) {
  const Json& p = json_field(j, key, what);
  if (p.is_object() && p.size() == 1) {
    if (auto it = p.find("String"); it != p.end() && it->is_string())
      return Regex::literal(it->get<std::string>(), what);
    if (auto it = p.find("Regex"); it != p.end() && it->is_string())
      return Regex(it->get<std::string>(), what);
  }
  fail("{}: field '{}' must be {{\"String\": ...}} or {{\"Regex\": ...}}", what, key);
}

}  // namespace lp::text
