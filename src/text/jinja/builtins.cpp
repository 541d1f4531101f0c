// String and dict methods, tests and global functions (see builtins.h), ported from @huggingface/jinja
// 0.5.11 src/runtime.ts and src/utils.ts.
#include "text/jinja/builtins.h"

#include <cmath>
#include <ctime>

#include "core/check.h"
#include "text/jinja/js_string.h"

namespace lp::text::jinja {

namespace {

using Args = std::vector<Value>;

Value bound(std::function<Value(Args&)> f) {
  return Value::function([f = std::move(f)](Args& args, Env&) { return f(args); });
}

Value string_prefix_test(const std::string& self, const Args& args, bool starts, const char* fn) {
  if (args.empty()) fail("jinja: {}() requires at least one argument", fn);
  auto match = [&](const std::string& p) {
    if (p.size() > self.size()) return false;
    return starts ? self.compare(0, p.size(), p) == 0
                  : self.compare(self.size() - p.size(), p.size(), p) == 0;
  };
  const Value& pattern = args[0];
  if (pattern.is_string()) return Value::boolean(match(pattern.as_str()));
  if (pattern.is_array()) {
    for (const Value& item : pattern.as_array()) {
      if (!item.is_string()) fail("jinja: {}() tuple elements must be strings", fn);
      if (match(item.as_str())) return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  fail("jinja: {}() argument must be a string or tuple of strings", fn);
}

// str.split(sep=None, maxsplit=-1) as @huggingface/jinja implements it.
Value string_split(Interpreter& in, const std::string& self, const Args& args) {
  const Value sep = args.size() > 0 ? args[0] : Value::null();
  if (!sep.is_string() && !sep.is_null()) fail("jinja: sep argument must be a string or null");
  const Value maxsplit = args.size() > 1 ? args[1] : Value::integer(-1);
  if (!maxsplit.is(Type::kInt)) fail("jinja: maxsplit argument must be a number");
  const double max = maxsplit.as_num();
  std::vector<std::string> parts;
  if (sep.is_null()) {
    const std::string text = js::trim_start(self);
    size_t i = 0;
    while (i < text.size()) {
      i = js::skip_space(text, i);
      if (i >= text.size()) break;
      if (max != -1 && static_cast<double>(parts.size()) >= max) {
        parts.push_back(text.substr(i));
        break;
      }
      const size_t start = i;
      while (i < text.size() && js::space_len_at(text, i) == 0) ++i;
      parts.push_back(text.substr(start, i - start));
    }
  } else {
    const std::string& s = sep.as_str();
    if (s.empty()) fail("jinja: empty separator");
    size_t start = 0;
    while (true) {
      const size_t p = self.find(s, start);
      if (p == std::string::npos) break;
      parts.push_back(self.substr(start, p - start));
      start = p + s.size();
    }
    parts.push_back(self.substr(start));
    const auto len = static_cast<double>(parts.size());
    if (max != -1 && len > max) {
      // result.push(result.splice(maxsplit).join(sep))
      const double from = max < 0 ? std::max(len + max, 0.0) : std::min(max, len);
      const auto k = static_cast<size_t>(from);
      std::string tail;
      for (size_t j = k; j < parts.size(); ++j) {
        if (j > k) tail += s;
        tail += parts[j];
      }
      parts.resize(k);
      parts.push_back(std::move(tail));
    }
  }
  in.check_items(parts.size());
  in.charge(static_cast<int64_t>(parts.size()));
  Array out;
  out.reserve(parts.size());
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return Value::array(std::move(out));
}

Value string_replace(Interpreter& in, const std::string& self, const Args& args) {
  if (args.size() < 2) fail("jinja: replace() requires at least two arguments");
  if (!args[0].is_string() || !args[1].is_string()) fail("jinja: replace() arguments must be strings");
  Value count = Value::null();
  if (args.size() > 2) {
    if (args[2].is(Type::kKwargs)) {
      const Value* c = args[2].as_object().find("count");
      count = c ? *c : Value::null();
    } else {
      count = args[2];
    }
  }
  if (!count.is(Type::kInt) && !count.is_null())
    fail("jinja: replace() count argument must be a number or null");
  const int64_t n = count.is_null() || count.as_num() < 0 ? -1 : static_cast<int64_t>(count.as_num());
  return in.make_string(replace_all(in, self, args[0].as_str(), args[1].as_str(), n));
}

// Python-style range(); the result is an array (size-checked first).
Value range_function(Interpreter& in, Args& args) {
  take_kwargs(args);
  for (const Value& a : args) {
    if (!a.is_number()) fail("jinja: range() arguments must be numbers, got {}", type_name(a.type()));
  }
  if (args.empty() || args.size() > 3) fail("jinja: range() takes 1 to 3 arguments");
  double start = 0, stop, step = 1;
  if (args.size() == 1) {
    stop = args[0].as_num();
  } else {
    start = args[0].as_num();
    stop = args[1].as_num();
    if (args.size() == 3) step = args[2].as_num();
  }
  if (step == 0) fail("jinja: range() step must not be zero");
  const double count = step > 0 ? std::ceil((stop - start) / step) : std::ceil((start - stop) / -step);
  if (std::isnan(count) || count > static_cast<double>(in.limits().max_items)) {
    fail("jinja: range() of {} items exceeds the limit of {}", js::number_to_string(count),
         in.limits().max_items);
  }
  Array out;
  for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
    // Accumulated float steps may give one item more than `count`; a step lost to rounding (|i| >= 2^53)
    // would never reach stop.
    if (static_cast<double>(out.size()) > count + 1)
      fail("jinja: range() step {} does not advance from {}", js::number_to_string(step), js::number_to_string(i));
    out.push_back(std::trunc(i) == i ? Value::integer(i) : Value::floating(i));
  }
  in.charge(static_cast<int64_t>(out.size()));
  return Value::array(std::move(out));
}

// strftime for the %Y %m %d %b %B %H %M %% directives @huggingface/jinja knows (others stay as is).
std::string strftime_js(const std::tm& t, const std::string& format) {
  static constexpr const char* kMonths[] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%' || i + 1 >= format.size()) {
      out.push_back(format[i]);
      continue;
    }
    const char d = format[i + 1];
    const int month = std::clamp(t.tm_mon, 0, 11);
    switch (d) {
      case 'Y':
        out += std::to_string(t.tm_year + 1900);
        break;
      case 'm':
        out += fmt::format("{:02d}", t.tm_mon + 1);
        break;
      case 'd':
        out += fmt::format("{:02d}", t.tm_mday);
        break;
      case 'b':
        out += std::string(kMonths[month]).substr(0, 3);
        break;
      case 'B':
        out += kMonths[month];
        break;
      case 'H':
        out += fmt::format("{:02d}", t.tm_hour);
        break;
      case 'M':
        out += fmt::format("{:02d}", t.tm_min);
        break;
      case '%':
        out += '%';
        break;
      default:
        out.push_back('%');
        continue;  // the next character is copied on its own
    }
    ++i;
  }
  return out;
}

Value namespace_builtin(Interpreter& in, Args& args) {
  Object kw = take_kwargs(args);
  if (args.size() > 1) fail("jinja: namespace expected at most 1 argument, got {}", args.size());
  Object entries;
  if (args.size() == 1) {
    const Value& src = args[0];
    if (src.is_object()) {
      for (const auto& [k, v] : src.as_object().entries()) entries.set(k, v);
    } else if (src.is_array()) {
      for (const Value& pair : src.as_array()) {
        std::vector<Value> kv;
        if (pair.is_array()) {
          kv = pair.as_array();
        } else if (pair.is_string()) {
          for (char32_t c : js::decode(pair.as_str())) {
            std::string ch;
            js::append_utf8(ch, c);
            kv.push_back(Value::string(ch));
          }
        }
        if (kv.size() != 2) fail("jinja: namespace expected an object or an iterable of [key, value] pairs");
        if (!kv[0].is_string()) fail("jinja: namespace keys must be strings");
        entries.set(kv[0].as_str(), kv[1]);
      }
    } else {
      fail("jinja: '{}' object is not iterable", type_name(src.type()));
    }
  }
  for (const auto& [k, v] : kw.entries()) entries.set(k, v);
  return in.make_namespace(std::move(entries));
}

}  // namespace

std::string replace_all(Interpreter& in, const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  if (count == 0) return s;
  int64_t remaining = count < 0 ? INT64_MAX : count;
  std::string out;
  if (from.empty()) {
    // /(?=)/gu matches before every code point and at the end.
    size_t i = 0;
    while (true) {
      if (remaining > 0) {
        out += to;
        --remaining;
        in.check_string(out.size());
      }
      if (i >= s.size()) break;
      size_t len;
      js::decode_at(s, i, &len);
      out.append(s, i, len);
      i += len;
    }
  } else {
    size_t start = 0;
    while (remaining > 0) {
      const size_t p = s.find(from, start);
      if (p == std::string::npos) break;
      out.append(s, start, p - start);
      out += to;
      in.check_string(out.size());
      start = p + from.size();
      --remaining;
    }
    out.append(s, start, std::string::npos);
  }
  in.check_string(out.size());
  in.charge(static_cast<int64_t>(out.size() / 16));
  return out;
}

Object take_kwargs(std::vector<Value>& args) {
  if (!args.empty() && args.back().is(Type::kKwargs)) {
    Object kw = args.back().as_object();
    args.pop_back();
    return kw;
  }
  return {};
}

Value pick_arg(const std::vector<Value>& args, const Object& kw, size_t i, const char* key, Value dflt) {
  if (i < args.size()) return args[i];
  const Value* v = kw.find(key);
  return v ? *v : dflt;
}

std::vector<Value> dict_items(const Value& obj) {
  std::vector<Value> out;
  for (const auto& [k, v] : obj.as_object().entries()) out.push_back(Value::array({Value::string(k), v}));
  return out;
}

void sort_values(Array& a, const std::function<int(const Value&, const Value&)>& cmp) {
  if (a.size() < 2) return;
  Array tmp(a.size());
  for (size_t width = 1; width < a.size(); width *= 2) {
    for (size_t lo = 0; lo < a.size(); lo += 2 * width) {
      const size_t mid = std::min(lo + width, a.size()), hi = std::min(lo + 2 * width, a.size());
      size_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) tmp[k++] = cmp(a[j], a[i]) < 0 ? a[j++] : a[i++];
      while (i < mid) tmp[k++] = a[i++];
      while (j < hi) tmp[k++] = a[j++];
    }
    a.swap(tmp);
  }
}

std::optional<Value> string_member(Interpreter& in, const Value& self, const std::string& name) {
  const std::string& s = self.as_str();
  Interpreter* ip = &in;
  auto method = [&](std::function<Value(const std::string&, Args&)> f) {
    return bound([self, f = std::move(f)](Args& args) { return f(self.as_str(), args); });
  };
  if (name == "length") return Value::integer(static_cast<double>(js::utf16_length(s)));
  if (name == "upper")
    return method([ip](const std::string& x, Args&) { return ip->make_string(js::to_upper(x)); });
  if (name == "lower")
    return method([ip](const std::string& x, Args&) { return ip->make_string(js::to_lower(x)); });
  if (name == "strip") return method([](const std::string& x, Args&) { return Value::string(js::trim(x)); });
  if (name == "lstrip")
    return method([](const std::string& x, Args&) { return Value::string(js::trim_start(x)); });
  if (name == "rstrip")
    return method([](const std::string& x, Args&) { return Value::string(js::trim_end(x)); });
  if (name == "title")
    return method([](const std::string& x, Args&) { return Value::string(js::title_case(x)); });
  if (name == "capitalize") {
    return method([ip](const std::string& x, Args&) { return ip->make_string(js::capitalize(x)); });
  }
  if (name == "startswith") {
    return method([](const std::string& x, Args& a) { return string_prefix_test(x, a, true, "startswith"); });
  }
  if (name == "endswith") {
    return method([](const std::string& x, Args& a) { return string_prefix_test(x, a, false, "endswith"); });
  }
  if (name == "split") return method([ip](const std::string& x, Args& a) { return string_split(*ip, x, a); });
  if (name == "replace")
    return method([ip](const std::string& x, Args& a) { return string_replace(*ip, x, a); });
  return std::nullopt;
}

std::optional<Value> object_member(Interpreter& in, const Value& self, const std::string& name) {
  Interpreter* ip = &in;
  if (name == "get") {
    return bound([self](Args& args) {
      if (args.empty() || !args[0].is_string()) {
        fail("jinja: Object key must be a string: got {}",
             args.empty() ? "undefined" : type_name(args[0].type()));
      }
      if (const Value* v = self.as_object().find(args[0].as_str())) return *v;
      return args.size() > 1 ? args[1] : Value::null();
    });
  }
  if (name == "items") return bound([self](Args&) { return Value::array(dict_items(self)); });
  if (name == "keys") {
    return bound([self](Args&) {
      Array keys;
      for (const auto& e : self.as_object().entries()) keys.push_back(Value::string(e.first));
      return Value::array(std::move(keys));
    });
  }
  if (name == "values") {
    return bound([self](Args&) {
      Array vals;
      for (const auto& e : self.as_object().entries()) vals.push_back(e.second);
      return Value::array(std::move(vals));
    });
  }
  if (name == "dictsort") {
    return bound([self, ip](Args& args) {
      Object kw = take_kwargs(args);
      const Value case_sensitive = pick_arg(args, kw, 0, "case_sensitive", Value::boolean(false));
      if (!case_sensitive.is(Type::kBool)) fail("jinja: case_sensitive must be a boolean");
      const Value by = pick_arg(args, kw, 1, "by", Value::string("key"));
      if (!by.is_string()) fail("jinja: by must be a string");
      if (by.as_str() != "key" && by.as_str() != "value") fail("jinja: by must be either 'key' or 'value'");
      const Value reverse = pick_arg(args, kw, 2, "reverse", Value::boolean(false));
      if (!reverse.is(Type::kBool)) fail("jinja: reverse must be a boolean");
      Array items = dict_items(self);
      const size_t idx = by.as_str() == "key" ? 0 : 1;
      ip->charge(static_cast<int64_t>(items.size()) * 8);
      sort_values(items, [&](const Value& a, const Value& b) {
        const int r = compare_values(a.as_array()[idx], b.as_array()[idx], case_sensitive.as_bool());
        return reverse.as_bool() ? -r : r;
      });
      return Value::array(std::move(items));
    });
  }
  return std::nullopt;
}

bool has_test(const std::string& name) {
  static const char* kTests[] = {"boolean",  "callable",  "odd",      "even",   "false",
                                 "true",     "none",      "string",   "number", "integer",
                                 "iterable", "mapping",   "sequence", "lower",  "upper",
                                 "defined",  "undefined", "equalto",  "eq",     "float"};
  for (const char* t : kTests) {
    if (name == t) return true;
  }
  return false;
}

bool run_test(const std::string& name, const Value& v, const Value* arg) {
  const Type t = v.type();
  if (name == "boolean") return t == Type::kBool;
  if (name == "callable") return t == Type::kFunction;
  if (name == "odd" || name == "even") {
    if (t != Type::kInt) fail("jinja: cannot {} on {}", name, type_name(t));
    const bool even = std::fmod(v.as_num(), 2) == 0;
    return name == "even" ? even : !even;
  }
  if (name == "false") return t == Type::kBool && !v.as_bool();
  if (name == "true") return t == Type::kBool && v.as_bool();
  if (name == "none") return t == Type::kNull;
  if (name == "string") return t == Type::kString;
  if (name == "number") return v.is_number();
  if (name == "integer") return t == Type::kInt;
  if (name == "float") return t == Type::kFloat;  // not in @huggingface/jinja (which throws)
  if (name == "iterable") return t == Type::kArray || t == Type::kString;
  if (name == "mapping") return v.is_object();
  if (name == "sequence") return v.is_array() || v.is_object() || t == Type::kString;
  if (name == "lower" || name == "upper") {
    if (t != Type::kString) fail("jinja: test '{}' needs a string, got {}", name, type_name(t));
    return v.as_str() == (name == "lower" ? js::to_lower(v.as_str()) : js::to_upper(v.as_str()));
  }
  if (name == "defined") return t != Type::kUndefined;
  if (name == "undefined") return t == Type::kUndefined;
  if (name == "equalto" || name == "eq") {
    if (!arg) fail("jinja: test '{}' needs a value to compare with", name);
    return strict_equal(v, *arg);
  }
  fail("jinja: Unknown test: {}", name);
}

void install_globals(Interpreter& in, Env& env) {
  Interpreter* ip = &in;
  env.declare("false", Value::boolean(false));
  env.declare("true", Value::boolean(true));
  env.declare("none", Value::null());
  env.declare("raise_exception", Value::function([](Args& args, Env&) -> Value {
                const std::string msg =
                    args.empty() || args[0].is_undefined() ? std::string() : to_js_string(args[0], 1 << 16);
                throw Error(msg);
              }));
  env.declare("range", Value::function([ip](Args& args, Env&) { return range_function(*ip, args); }));
  env.declare("strftime_now", Value::function([ip](Args& args, Env&) {
                if (args.empty() || !args[0].is_string()) fail("jinja: strftime_now() needs a format string");
                return ip->make_string(strftime_js(ip->now(), args[0].as_str()));
              }));
  env.declare("True", Value::boolean(true));
  env.declare("False", Value::boolean(false));
  env.declare("None", Value::null());
  env.set(kNamespaceBuiltin,
          Value::function([ip](Args& args, Env&) { return namespace_builtin(*ip, args); }));
}

}  // namespace lp::text::jinja
