#include "io/json_file.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "core/check.h"

namespace lp::io {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Tracks the keys seen in each open object, innermost last, and remembers the first duplicate.
template <class Json>
struct DuplicateFinder {
  struct Frame {
    std::unordered_set<std::string> keys;
    std::string name;  // the key under which this object sits ("" for the root or an array element)
  };
  std::vector<Frame> stack;
  std::string last_key;
  bool found = false;
  std::string dup_key, dup_parent;
  size_t dup_depth = 0;

  bool on_event(nlohmann::detail::parse_event_t event, Json& parsed) {
    using E = nlohmann::detail::parse_event_t;
    switch (event) {
      case E::object_start:
        stack.push_back(Frame{{}, last_key});
        last_key.clear();
        break;
      case E::object_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case E::array_start:
        last_key.clear();
        break;
      case E::key:
        if (!stack.empty() && parsed.is_string()) {
          last_key = parsed.template get_ref<const std::string&>();
          if (!found && !stack.back().keys.insert(last_key).second) {
            found = true;
            dup_key = last_key;
            dup_parent = stack.back().name;
            dup_depth = stack.size();
          }
        }
        break;
      case E::value:
      case E::array_end:
        break;
    }
    return true;
  }
};

}  // namespace

std::string_view json_type_name(nlohmann::detail::value_t t) {
  switch (t) {
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::null:
      return "null";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "number";
    default:
      return "value";
  }
}

std::string_view json_type_name(const json& j) {
  return json_type_name(j.type());
}
std::string_view json_type_name(const nlohmann::ordered_json& j) {
  return json_type_name(j.type());
}

namespace {

template <class Json>
int64_t get_int(const Json& v, std::string_view what, std::string_view label, int64_t lo, int64_t hi) {
  bool ok = v.is_number_integer();
  int64_t x = 0;
  if (ok && v.is_number_unsigned()) {
    uint64_t u = v.template get<uint64_t>();
    ok = u <= static_cast<uint64_t>(hi);
    x = static_cast<int64_t>(u);
  } else if (ok) {
    x = v.template get<int64_t>();
  }
  if (!ok || x < lo || x > hi) {
    fail("{} in {} must be an integer in [{}, {}] (found {})", what, label, lo, hi, v.dump());
  }
  return x;
}

template <class Json>
double get_number(const Json& v, std::string_view what, std::string_view label) {
  if (!v.is_number() || !std::isfinite(v.template get<double>())) {
    fail("{} in {} must be a finite number (found {})", what, label, v.dump());
  }
  return v.template get<double>();
}

template <class Json>
bool get_bool(const Json& v, std::string_view what, std::string_view label) {
  if (!v.is_boolean()) fail("{} in {} must be true or false (found {})", what, label, v.dump());
  return v.template get<bool>();
}

}  // namespace

int64_t json_int(const json& v, std::string_view what, std::string_view label, int64_t lo, int64_t hi) {
  return get_int(v, what, label, lo, hi);
}
int64_t json_int(const nlohmann::ordered_json& v, std::string_view what, std::string_view label, int64_t lo,
                 int64_t hi) {
  return get_int(v, what, label, lo, hi);
}
double json_number(const json& v, std::string_view what, std::string_view label) {
  return get_number(v, what, label);
}
double json_number(const nlohmann::ordered_json& v, std::string_view what, std::string_view label) {
  return get_number(v, what, label);
}
bool json_bool(const json& v, std::string_view what, std::string_view label) {
  return get_bool(v, what, label);
}
bool json_bool(const nlohmann::ordered_json& v, std::string_view what, std::string_view label) {
  return get_bool(v, what, label);
}

namespace {

template <class Json>
Json parse_strict(std::string_view text, const std::string& label, std::string_view what,
                  std::string_view root_key_kind) {
  DuplicateFinder<Json> finder;
  typename Json::parser_callback_t cb = [&finder](int /*depth*/, nlohmann::detail::parse_event_t event,
                                                  Json& parsed) { return finder.on_event(event, parsed); };
  std::string sep = what.empty() ? "" : " ";
  Json j;
  try {
    j = Json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    fail("invalid JSON{}{} in {}: {}", sep, what, label, e.what());
  }
  if (finder.found) {
    std::string where = what.empty() ? label : fmt::format("{} of {}", what, label);
    if (finder.dup_depth == 1) fail("duplicate {} \"{}\" in {}", root_key_kind, finder.dup_key, where);
    fail("duplicate key \"{}\" in object \"{}\" in {}", finder.dup_key, finder.dup_parent, where);
  }
  return j;
}

std::string read_text_file(const fs::path& path, size_t max_bytes) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail("cannot read {}: file does not exist", path.string());
  if (!fs::is_regular_file(st)) fail("cannot read {}: not a regular file", path.string());
  auto size = fs::file_size(path, ec);
  if (ec) fail("cannot read {}: {}", path.string(), ec.message());
  if (size > max_bytes) fail("{} is too large ({} bytes; the limit is {})", path.string(), size, max_bytes);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open {}", path.string());
  std::string text(size, '\0');
  f.read(text.data(), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(f.gcount()) != size) fail("cannot read {}: short read", path.string());
  return text;
}

}  // namespace

json parse_json_strict(std::string_view text, const std::string& label, std::string_view what,
                       std::string_view root_key_kind) {
  return parse_strict<json>(text, label, what, root_key_kind);
}

nlohmann::ordered_json parse_ordered_json_strict(std::string_view text, const std::string& label,
                                                 std::string_view what, std::string_view root_key_kind) {
  return parse_strict<nlohmann::ordered_json>(text, label, what, root_key_kind);
}

json read_json_file(const fs::path& path, size_t max_bytes) {
  return parse_json_strict(read_text_file(path, max_bytes), path.string());
}

nlohmann::ordered_json read_ordered_json_file(const fs::path& path, size_t max_bytes) {
  return parse_ordered_json_strict(read_text_file(path, max_bytes), path.string());
}

}  // namespace lp::io
