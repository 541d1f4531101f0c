// Template: parse once, render many times (see template.h).
#include "text/jinja/template.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "text/jinja/builtins.h"
#include "text/jinja/lexer.h"
#include "text/jinja/parser.h"
#include "text/tokenizer_utf8.h"

namespace lp::text::jinja {

namespace {

constexpr int kMaxJsonDepth = 256;

// A canonical array index ("0", "17", not "01"), which JS objects enumerate first, in numeric order.
bool is_array_index(const std::string& k, uint64_t* out) {
  if (k.empty() || k.size() > 10 || (k.size() > 1 && k[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : k) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 4294967294ull) return false;
  *out = v;
  return true;
}

Value from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxJsonDepth) fail("jinja: template variables nest deeper than {}", kMaxJsonDepth);
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::null();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::integer(static_cast<double>(j.get<int64_t>()));
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value::integer(static_cast<double>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: {
      const double d = j.get<double>();
      return std::isfinite(d) && std::trunc(d) == d ? Value::integer(d) : Value::floating(d);
    }
    case nlohmann::ordered_json::value_t::string:
      return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& x : j) a.push_back(from_json(x, depth + 1));
      return Value::array(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::pair<uint64_t, const std::string*>> index_keys;
      for (const auto& [k, v] : j.items()) {
        uint64_t idx;
        if (is_array_index(k, &idx)) index_keys.emplace_back(idx, &k);
      }
      std::sort(index_keys.begin(), index_keys.end());
      Object o;
      for (const auto& [idx, k] : index_keys) o.set(*k, from_json(j.at(*k), depth + 1));
      for (const auto& [k, v] : j.items()) {
        uint64_t idx;
        if (!is_array_index(k, &idx)) o.set(k, from_json(v, depth + 1));
      }
      return Value::object(std::move(o));
    }
    default:
      fail("jinja: unsupported JSON value in template variables");
  }
}

}  // namespace

Value value_from_json(const nlohmann::ordered_json& j) {
  return from_json(j, 0);
}

Template::Template(std::string_view source, TemplateOptions options) : options_(std::move(options)) {
  program_.body = parse(tokenize(text::utf8_lossy(source))).body;
}

std::string Template::render(const nlohmann::ordered_json& vars) const {
  if (!vars.is_object() && !vars.is_null()) fail("jinja: template variables must be a JSON object");
  Interpreter in(options_.limits, options_.now);
  Env globals(nullptr);
  install_globals(in, globals);
  if (vars.is_object()) {
    for (const auto& [k, v] : vars.items()) globals.declare(k, value_from_json(v));
  }
  return in.render(program_.body, globals);
}

}  // namespace lp::text::jinja
