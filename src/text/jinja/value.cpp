// Runtime values: construction, truthiness, JS-compatible string conversion, JSON output, equality and
// ordering (see value.h).
#include "text/jinja/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "text/jinja/js_string.h"

namespace lp::text::jinja {

namespace {

constexpr size_t kLinearSearchMax = 16;
constexpr int kMaxTojsonDepth = 512;

void check_size(size_t n, size_t max_bytes) {
  if (n > max_bytes) fail("jinja: string grows past the limit of {} bytes", max_bytes);
}

// The JS type of `value.value`: what loose/strict equality dispatch on.
enum class JsKind { kUndefined, kNull, kBool, kNumber, kString, kObject };

JsKind js_kind(const Value& v) {
  switch (v.type()) {
    case Type::kUndefined:
      return JsKind::kUndefined;
    case Type::kNull:
      return JsKind::kNull;
    case Type::kBool:
      return JsKind::kBool;
    case Type::kInt:
    case Type::kFloat:
      return JsKind::kNumber;
    case Type::kString:
      return JsKind::kString;
    default:
      return JsKind::kObject;
  }
}

// The JS object behind value.value (tuple and array values share the array storage kind).
bool same_object(const Value& a, const Value& b) {
  const bool a_arr = a.is_array(), b_arr = b.is_array();
  const bool a_fn = a.is_function(), b_fn = b.is_function();
  if (a_arr != b_arr || a_fn != b_fn) return false;
  return a.storage() == b.storage();
}

}  // namespace

const char* type_name(Type t) {
  switch (t) {
    case Type::kUndefined:
      return "UndefinedValue";
    case Type::kNull:
      return "NullValue";
    case Type::kBool:
      return "BooleanValue";
    case Type::kInt:
      return "IntegerValue";
    case Type::kFloat:
      return "FloatValue";
    case Type::kString:
      return "StringValue";
    case Type::kArray:
      return "ArrayValue";
    case Type::kTuple:
      return "TupleValue";
    case Type::kObject:
      return "ObjectValue";
    case Type::kKwargs:
      return "KeywordArgumentsValue";
    case Type::kNamespace:
      return "NamespaceValue";
    case Type::kFunction:
      return "FunctionValue";
  }
  return "?";
}

Value Value::boolean(bool b) {
  Value v(Type::kBool);
  v.b_ = b;
  return v;
}

Value Value::integer(double x) {
  Value v(Type::kInt);
  v.num_ = x;
  return v;
}

Value Value::floating(double x) {
  Value v(Type::kFloat);
  v.num_ = x;
  return v;
}

Value Value::string(std::string s) {
  Value v(Type::kString);
  v.ptr_ = std::make_shared<std::string>(std::move(s));
  return v;
}

namespace {

// Iterative destruction: a dying container hands its child containers to a per-thread queue, and the
// outermost deleter drains it, so nested containers never recurse through destructors.
struct Graveyard {
  std::vector<std::shared_ptr<void>> pending;
  bool draining = false;
};
thread_local Graveyard t_graveyard;

void bury(Value& v) {
  if (v.is_array() || v.is_attr_container()) t_graveyard.pending.push_back(v.storage());
  v = Value();
}

void drain() {
  if (t_graveyard.draining) return;
  t_graveyard.draining = true;
  while (!t_graveyard.pending.empty()) {
    std::shared_ptr<void> p = std::move(t_graveyard.pending.back());
    t_graveyard.pending.pop_back();
    p.reset();  // may run a deleter, which only queues more
  }
  t_graveyard.draining = false;
}

void delete_array(Array* a) {
  for (Value& v : *a) bury(v);
  delete a;
  drain();
}

void delete_object(Object* o) {
  for (auto& e : o->mutable_entries()) bury(e.second);
  delete o;
  drain();
}

}  // namespace

Value Value::array(Array items, Type t) {
  LP_CHECK(t == Type::kArray || t == Type::kTuple);
  Value v(t);
  v.ptr_ = std::shared_ptr<Array>(new Array(std::move(items)), delete_array);
  return v;
}

Value Value::object(Object o, Type t) {
  LP_CHECK(t == Type::kObject || t == Type::kKwargs || t == Type::kNamespace);
  Value v(t);
  v.ptr_ = std::shared_ptr<Object>(new Object(std::move(o)), delete_object);
  return v;
}

Value Value::function(NativeFn f) {
  Value v(Type::kFunction);
  v.ptr_ = std::make_shared<NativeFn>(std::move(f));
  return v;
}

const std::string& Value::as_str() const {
  LP_CHECK(type_ == Type::kString);
  return *static_cast<const std::string*>(ptr_.get());
}

Array& Value::as_array() const {
  LP_CHECK(is_array());
  return *static_cast<Array*>(ptr_.get());
}

Object& Value::as_object() const {
  LP_CHECK(is_attr_container());
  return *static_cast<Object*>(ptr_.get());
}

const NativeFn& Value::as_function() const {
  LP_CHECK(type_ == Type::kFunction);
  return *static_cast<const NativeFn*>(ptr_.get());
}

bool Value::truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNull:
      return false;
    case Type::kBool:
      return b_;
    case Type::kInt:
    case Type::kFloat:
      return num_ != 0 && !std::isnan(num_);
    case Type::kString:
      return !as_str().empty();
    case Type::kArray:
    case Type::kTuple:
      return !as_array().empty();
    case Type::kObject:
    case Type::kKwargs:
      return as_object().size() > 0;
    case Type::kNamespace:
    case Type::kFunction:
      return true;
  }
  return false;
}

const Value* Object::find(std::string_view key) const {
  if (entries_.size() <= kLinearSearchMax) {
    for (const auto& e : entries_) {
      if (e.first == key) return &e.second;
    }
    return nullptr;
  }
  if (index_.size() != entries_.size()) {
    index_.clear();
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
  }
  auto it = index_.find(std::string(key));
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

void Object::set(const std::string& key, Value v) {
  if (const Value* cur = find(key)) {
    *const_cast<Value*>(cur) = std::move(v);
    return;
  }
  entries_.emplace_back(key, std::move(v));
  if (!index_.empty()) index_.emplace(key, entries_.size() - 1);
}

void Object::clear() {
  index_.clear();
  entries_.clear();
}

std::string to_output(const Value& v, size_t max_bytes) {
  switch (v.type()) {
    case Type::kUndefined:
      return "undefined";
    case Type::kNull:
      return "null";
    case Type::kBool:
      return v.as_bool() ? "true" : "false";
    case Type::kInt:
      return js::number_to_string(v.as_num());
    case Type::kFloat: {
      const double x = v.as_num();
      if (x == 0 && std::signbit(x)) return "-0.0";
      if (std::isfinite(x) && std::fmod(x, 1.0) == 0) {
        return std::fabs(x) >= 1e21 ? js::number_to_string(x) : fmt::format("{:.1f}", x);
      }
      return js::number_to_string(x);
    }
    case Type::kString:
      return v.as_str();
    case Type::kArray:
    case Type::kTuple:
    case Type::kObject:
    case Type::kKwargs:
    case Type::kNamespace:
      return to_json(v, {}, /*undefined_as_null=*/false, max_bytes);
    case Type::kFunction:
      fail("jinja: cannot print a function");
  }
  return {};
}

std::string to_js_string(const Value& v, size_t max_bytes) {
  switch (v.type()) {
    case Type::kInt:
    case Type::kFloat:
      return js::number_to_string(v.as_num());
    case Type::kArray:
    case Type::kTuple: {
      std::string out;
      bool first = true;
      for (const Value& x : v.as_array()) {
        if (!first) out.push_back(',');
        first = false;
        out += to_output(x, max_bytes);
        check_size(out.size(), max_bytes);
      }
      return out;
    }
    case Type::kObject:
    case Type::kKwargs:
    case Type::kNamespace:
      return "[object Map]";
    default:
      return to_output(v, max_bytes);
  }
}

namespace {

struct JsonWriter {
  const JsonOptions& opt;
  bool undefined_as_null;
  size_t max_bytes;
  std::string item_sep, key_sep;
  std::string out;

  void write(const Value& v, int depth) {
    if (depth > kMaxTojsonDepth) fail("jinja: tojson: nesting deeper than {}", kMaxTojsonDepth);
    check_size(out.size(), max_bytes);
    switch (v.type()) {
      case Type::kNull:
        out += "null";
        return;
      case Type::kUndefined:
        out += undefined_as_null ? "null" : "undefined";
        return;
      case Type::kInt:
      case Type::kFloat:
        out += std::isfinite(v.as_num()) ? js::number_to_string(v.as_num()) : "null";
        return;
      case Type::kBool:
        out += v.as_bool() ? "true" : "false";
        return;
      case Type::kString:
        out += js::json_quote(v.as_str(), opt.ensure_ascii);
        return;
      case Type::kFunction:
      case Type::kTuple:
        fail("jinja: Cannot convert to JSON: {}", type_name(v.type()));
      default:
        break;
    }
    auto pad = [&](int d) {
      out.push_back('\n');
      for (int i = 0; i < d; ++i) {
        out.append(static_cast<size_t>(opt.indent), ' ');
        check_size(out.size(), max_bytes);
      }
    };
    if (v.is_array()) {
      const Array& a = v.as_array();
      out.push_back('[');
      for (size_t i = 0; i < a.size(); ++i) {
        if (i > 0) out += item_sep;
        if (opt.indent) pad(depth + 1);
        write(a[i], depth + 1);
      }
      if (opt.indent && !a.empty()) pad(depth);
      out.push_back(']');
      return;
    }
    std::vector<const Object::Entry*> entries;
    for (const auto& e : v.as_object().entries()) entries.push_back(&e);
    if (opt.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(), [](const Object::Entry* a, const Object::Entry* b) {
        return js::locale_compare(a->first, b->first) < 0;
      });
    }
    out.push_back('{');
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) out += item_sep;
      if (opt.indent) pad(depth + 1);
      out += js::json_quote(entries[i]->first, opt.ensure_ascii);
      out += key_sep;
      write(entries[i]->second, depth + 1);
    }
    if (opt.indent && !entries.empty()) pad(depth);
    out.push_back('}');
  }
};

}  // namespace

std::string to_json(const Value& v, const JsonOptions& opt, bool undefined_as_null, size_t max_bytes) {
  if (opt.indent < 0) fail("jinja: tojson: Invalid count value: {}", opt.indent);
  JsonWriter w{opt, undefined_as_null, max_bytes, ", ", ": ", {}};
  if (opt.separators) {
    w.item_sep = opt.separators->first;
    w.key_sep = opt.separators->second;
  } else if (opt.indent) {
    w.item_sep = ",";
  }
  w.write(v, 0);
  check_size(w.out.size(), max_bytes);
  return std::move(w.out);
}

namespace {

// ToPrimitive for loose equality: the string an object turns into.
std::string object_primitive(const Value& v) {
  if (v.is_array()) return to_js_string(v, 1 << 20);
  if (v.is_function()) return "function";
  return "[object Map]";
}

bool loose_primitive(JsKind ka, const Value& a, JsKind kb, const Value& b) {
  if (ka == kb) {
    switch (ka) {
      case JsKind::kBool:
        return a.as_bool() == b.as_bool();
      case JsKind::kNumber:
        return a.as_num() == b.as_num();
      case JsKind::kString:
        return a.as_str() == b.as_str();
      default:
        return true;
    }
  }
  // number/string/bool mixes: everything becomes a number.
  auto num = [](JsKind k, const Value& v) {
    return k == JsKind::kBool     ? (v.as_bool() ? 1.0 : 0.0)
           : k == JsKind::kNumber ? v.as_num()
                                  : js::to_number(v.as_str());
  };
  return num(ka, a) == num(kb, b);
}

}  // namespace

bool loose_equal(const Value& a, const Value& b) {
  const JsKind ka = js_kind(a), kb = js_kind(b);
  const bool a_nullish = ka == JsKind::kUndefined || ka == JsKind::kNull;
  const bool b_nullish = kb == JsKind::kUndefined || kb == JsKind::kNull;
  if (a_nullish || b_nullish) return a_nullish && b_nullish;
  if (ka == JsKind::kObject && kb == JsKind::kObject) return same_object(a, b);
  if (ka == JsKind::kObject || kb == JsKind::kObject) {
    const bool a_obj = ka == JsKind::kObject;
    const Value prim = Value::string(object_primitive(a_obj ? a : b));
    return a_obj ? loose_primitive(JsKind::kString, prim, kb, b)
                 : loose_primitive(ka, a, JsKind::kString, prim);
  }
  return loose_primitive(ka, a, kb, b);
}

bool strict_equal(const Value& a, const Value& b) {
  const JsKind ka = js_kind(a), kb = js_kind(b);
  if (ka != kb) return false;
  switch (ka) {
    case JsKind::kUndefined:
    case JsKind::kNull:
      return true;
    case JsKind::kBool:
      return a.as_bool() == b.as_bool();
    case JsKind::kNumber:
      return a.as_num() == b.as_num();
    case JsKind::kString:
      return a.as_str() == b.as_str();
    case JsKind::kObject:
      return same_object(a, b);
  }
  return false;
}

bool same_value_zero(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number() && std::isnan(a.as_num()) && std::isnan(b.as_num())) return true;
  return strict_equal(a, b);
}

int compare_values(const Value& a, const Value& b, bool case_sensitive) {
  if (a.is_null() && b.is_null()) return 0;
  if (a.is_null() || b.is_null())
    fail("jinja: Cannot compare {} with {}", type_name(a.type()), type_name(b.type()));
  if (a.is_undefined() && b.is_undefined()) return 0;
  if (a.is_undefined() || b.is_undefined()) {
    fail("jinja: Cannot compare {} with {}", type_name(a.type()), type_name(b.type()));
  }
  if (a.is_numeric_like() && b.is_numeric_like()) {
    const double x = a.numeric(), y = b.numeric();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.type() != b.type()) {
    fail("jinja: Cannot compare different types: {} and {}", type_name(a.type()), type_name(b.type()));
  }
  if (!a.is_string()) fail("jinja: Cannot compare type: {}", type_name(a.type()));
  if (case_sensitive) return js::compare_utf16(a.as_str(), b.as_str());
  return js::compare_utf16(js::to_lower(a.as_str()), js::to_lower(b.as_str()));
}

}  // namespace lp::text::jinja
