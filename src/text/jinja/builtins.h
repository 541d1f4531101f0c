// What a template can call besides filters: methods of strings and dicts (`s.strip()`, `d.items()`),
// tests (`x is defined`) and global functions (raise_exception, range, namespace, strftime_now), with the
// behaviour of @huggingface/jinja 0.5.11, quirks included (e.g. `strip('\n')` ignores its argument and
// strips all whitespace).
#pragma once

#include <optional>
#include <string>

#include "text/jinja/interpreter.h"
#include "text/jinja/value.h"

namespace lp::text::jinja {

// A string's member `name` (a bound method, or `length`); nullopt when there is none.
std::optional<Value> string_member(Interpreter& in, const Value& self, const std::string& name);
// A dict's builtin member (get, items, keys, values, dictsort); nullopt when there is none.
std::optional<Value> object_member(Interpreter& in, const Value& self, const std::string& name);

// Runs test `name` (`arg` is the second operand of equalto/eq when selectattr passes one). Throws
// lp::Error for unknown tests.
bool run_test(const std::string& name, const Value& operand, const Value* arg);
bool has_test(const std::string& name);

// Declares true/false/none (and title-case forms), raise_exception, range, strftime_now and the
// `namespace` builtin (under kNamespaceBuiltin, see Env::lookup) in `env`.
void install_globals(Interpreter& in, Env& env);

// Stable merge sort with a three-way comparator that may throw or be inconsistent (never UB).
void sort_values(Array& a, const std::function<int(const Value&, const Value&)>& cmp);

// JS-semantics helpers shared with filters.cpp.
std::string replace_all(Interpreter& in, const std::string& s, const std::string& from, const std::string& to,
                        int64_t count);  // count < 0: all
std::vector<Value> dict_items(const Value& obj);

// Call arguments: removes the trailing keyword-arguments value (Type::kKwargs) from `args` and returns
// its entries (none when there is no such value).
Object take_kwargs(std::vector<Value>& args);
// Argument `i` when given positionally, else keyword argument `key`, else `dflt`.
Value pick_arg(const std::vector<Value>& args, const Object& kw, size_t i, const char* key, Value dflt);

}  // namespace lp::text::jinja
