#include "io/json_file.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
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

// nlohmann's message without its "[json.exception.parse_error.101] " id and without "; last read: '...'"
// and what follows: those are bytes of the input, which an error must not echo (a file opened by mistake, or
// through a symlink, could be anything).
std::string describe_parse_error(const nlohmann::json::exception& e) {
  std::string_view msg = e.what();
  if (auto p = msg.find("] "); p != std::string_view::npos && msg.starts_with("[json.exception."))
    msg.remove_prefix(p + 2);
  if (auto p = msg.find("; last read:"); p != std::string_view::npos) msg = msg.substr(0, p);
  return std::string(msg);
}

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
  } catch (const nlohmann::json::parse_error& e) {
    fail("invalid JSON{}{} in {}: {} (byte {})", sep, what, label, describe_parse_error(e), e.byte);
  } catch (const nlohmann::json::exception& e) {
    fail("invalid JSON{}{} in {}: {}", sep, what, label, describe_parse_error(e));
  }
  if (finder.found) {
    std::string where = what.empty() ? label : fmt::format("{} of {}", what, label);
    if (finder.dup_depth == 1) fail("duplicate {} \"{}\" in {}", root_key_kind, finder.dup_key, where);
    fail("duplicate key \"{}\" in object \"{}\" in {}", finder.dup_key, finder.dup_parent, where);
  }
  return j;
}

std::string read_text_file(const fs::path& path, size_t max_bytes,
                           const std::optional<fs::path>& confine_root) {
  OpenedFile f = open_regular_file(path, confine_root);
  if (f.size > max_bytes)
    fail("{} is too large ({} bytes; the limit is {})", path.string(), f.size, max_bytes);
  std::string text(static_cast<size_t>(f.size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::read(f.fd.get(), text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot read {}: {}", path.string(), std::strerror(errno));
    if (n == 0) fail("cannot read {}: short read (the file shrank)", path.string());
    got += static_cast<size_t>(n);
  }
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

json read_json_file(const fs::path& path, size_t max_bytes, const std::optional<fs::path>& confine_root) {
  return parse_json_strict(read_text_file(path, max_bytes, confine_root), path.string());
}

nlohmann::ordered_json read_ordered_json_file(const fs::path& path, size_t max_bytes,
                                              const std::optional<fs::path>& confine_root) {
  return parse_ordered_json_strict(read_text_file(path, max_bytes, confine_root), path.string());
}

}  // namespace lp::io
