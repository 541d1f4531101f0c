// Runtime values of the Jinja interpreter, modelled on @huggingface/jinja's RuntimeValue classes so that
// truthiness, equality, string conversion and JSON output match it byte for byte.
// A Value is 32 bytes: a type tag, a bool/number payload, and a shared pointer to the string, array,
// object or function it refers to. Arrays and objects are never mutated after creation, except namespace
// objects (`ns.x = ...`), so only namespaces can close a reference cycle: the interpreter tracks every
// namespace it creates and empties them all when it is destroyed (after the render), which breaks the
// cycles. Containers are destroyed iteratively, which bounds destructor recursion.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lp::text::jinja {

class Env;
class Value;
class Object;

using Array = std::vector<Value>;
// A callable: positional arguments (keyword arguments arrive as one trailing kKwargs value, as in
// @huggingface/jinja) and the caller's scope (macros see the scope they are called from).
using NativeFn = std::function<Value(std::vector<Value>& args, Env& scope)>;

// The names are @huggingface/jinja's class names (they appear in error messages).
enum class Type : uint8_t {
  kUndefined,  // UndefinedValue
  kNull,       // NullValue
  kBool,       // BooleanValue
  kInt,        // IntegerValue (a JS number without a fraction)
  kFloat,      // FloatValue
  kString,     // StringValue
  kArray,      // ArrayValue
  kTuple,      // TupleValue (an ArrayValue)
  kObject,     // ObjectValue (insertion-ordered)
  kKwargs,     // KeywordArgumentsValue (an ObjectValue)
  kNamespace,  // NamespaceValue (mutable attributes, no methods)
  kFunction,   // FunctionValue
};
const char* type_name(Type t);

class Value {
 public:
  Value() = default;  // undefined
  static Value null() { return Value(Type::kNull); }
  static Value boolean(bool b);
  static Value integer(double v);
  static Value floating(double v);
  static Value string(std::string s);
  // Containers are destroyed iteratively (no recursion however deeply they nest).
  static Value array(Array items, Type t = Type::kArray);
  static Value object(Object o, Type t = Type::kObject);
  static Value function(NativeFn f);

  Type type() const { return type_; }
  bool is(Type t) const { return type_ == t; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kFloat; }
  bool is_numeric_like() const { return is_number() || type_ == Type::kBool; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray || type_ == Type::kTuple; }  // instanceof ArrayValue
  bool is_object() const {
    return type_ == Type::kObject || type_ == Type::kKwargs;
  }  // instanceof ObjectValue
  bool is_attr_container() const { return is_object() || type_ == Type::kNamespace; }
  bool is_function() const { return type_ == Type::kFunction; }

  bool as_bool() const { return b_; }
  double as_num() const { return num_; }
  // Booleans count as 0/1 where @huggingface/jinja treats them as numbers.
  double numeric() const { return type_ == Type::kBool ? (b_ ? 1 : 0) : num_; }
  const std::string& as_str() const;
  Array& as_array() const;
  Object& as_object() const;
  const NativeFn& as_function() const;
  const std::shared_ptr<void>& storage() const { return ptr_; }

  // __bool__: Python truthiness for containers, JS `!!value` otherwise (a namespace is always true).
  bool truthy() const;

 private:
  explicit Value(Type t) : type_(t) {}
  Type type_ = Type::kUndefined;
  bool b_ = false;
  double num_ = 0;
  std::shared_ptr<void> ptr_;
};

// Insertion-ordered string -> Value map (JS Map). Small maps are searched linearly; larger ones get a
// hash index.
class Object {
 public:
  using Entry = std::pair<std::string, Value>;
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
  size_t size() const { return entries_.size(); }
  const std::vector<Entry>& entries() const { return entries_; }
  void clear();
  std::vector<Entry>& mutable_entries() { return entries_; }  // for the container deleter

 private:
  std::vector<Entry> entries_;
  mutable std::unordered_map<std::string, size_t> index_;  // built once the map outgrows linear search
};

// RuntimeValue#toString(): what `{{ x }}` prints (floats keep ".0", containers print as JSON).
std::string to_output(const Value& v, size_t max_bytes);
// `x.value.toString()` in JS: what `~` and string `+` concatenate (floats lose ".0", arrays join with ",",
// objects print "[object Map]").
std::string to_js_string(const Value& v, size_t max_bytes);

struct JsonOptions {
  int64_t indent = 0;  // 0: single line
  bool ensure_ascii = false;
  std::optional<std::pair<std::string, std::string>> separators;  // item, key
  bool sort_keys = false;
};
// @huggingface/jinja's toJSON (the `tojson` filter and container printing). Throws lp::Error for
// functions, nesting deeper than 512, or output over max_bytes.
std::string to_json(const Value& v, const JsonOptions& opt, bool undefined_as_null, size_t max_bytes);

bool loose_equal(const Value& a, const Value& b);      // JS `a.value == b.value`
bool strict_equal(const Value& a, const Value& b);     // JS `a.value === b.value`
bool same_value_zero(const Value& a, const Value& b);  // JS Set membership
// compareRuntimeValues: numbers (bools count) and strings only; throws lp::Error otherwise.
int compare_values(const Value& a, const Value& b, bool case_sensitive);

}  // namespace lp::text::jinja
