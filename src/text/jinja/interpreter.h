// Tree-walking interpreter for parsed Jinja templates, a port of @huggingface/jinja's runtime.ts
// (Interpreter + Environment). Statements and expressions live in interpreter.cpp, filters in filters.cpp,
// methods / tests / global functions in builtins.cpp.
//
// Sandbox: a template reaches only the variables it is given and the methods listed in builtins.cpp;
// attribute names starting with "__" are refused. Every render is bounded by Limits (loop iterations,
// evaluation depth, macro call depth, string size, total work), so a hostile template ends in lp::Error.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/value.h"

namespace lp::text::jinja {

struct Limits {
  size_t max_string_bytes = 8u << 20;       // any string value, the rendered output included
  int64_t max_loop_iterations = 1'000'000;  // items visited by all for-loops of one render
  int64_t max_items = 1'000'000;            // elements of one array (range(), concatenation)
  int max_call_depth = 200;                 // nested macro / caller() calls
  int max_eval_depth = 1500;                // nested evaluation frames (bounds stack use)
  int64_t max_work = 300'000'000;           // evaluated nodes + copied items + copied bytes / 16
};

// Local time for strftime_now(); injectable so tests are deterministic.
using NowFn = std::function<std::tm()>;
std::tm local_now();

// Name under which install_globals stores the `namespace` builtin (not a valid identifier).
inline constexpr const char* kNamespaceBuiltin = "\x01namespace";

// One scope. Lookups walk up the parents; `namespace` resolves in the innermost scope (each
// @huggingface/jinja Environment starts with its own `namespace` entry).
class Env {
 public:
  explicit Env(Env* parent) : parent_(parent) {}
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  ~Env();

  void set(const std::string& name, Value v) { vars_[name] = std::move(v); }
  // Environment.set for user variables: fails when the name exists in this scope.
  void declare(const std::string& name, Value v);
  Value lookup(const std::string& name) const;
  // Expires when this scope is destroyed (lets caller() refuse to run after its call block ended).
  std::weak_ptr<int> liveness();

 private:
  Env* parent_;
  std::unordered_map<std::string, Value> vars_;
  std::shared_ptr<int> alive_;
};

class Interpreter {
 public:
  Interpreter(const Limits& limits, NowFn now);
  ~Interpreter();  // empties every namespace created by the render, breaking reference cycles
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders a program in `globals` (see install_globals in builtins.h).
  std::string render(const std::vector<NodePtr>& program, Env& globals);

  // --- used by filters.cpp and builtins.cpp ---
  Value eval(const Node* n, Env& env);
  // evaluateArguments: positional values (with * unpacking) then keyword values, in that order.
  void eval_args(const std::vector<NodePtr>& args, Env& env, std::vector<Value>* positional,
                 Object* keywords);
  Value apply_filter(const Value& operand, const Node* filter, Env& env);
  // Counts work units; throws lp::Error past Limits::max_work.
  void charge(int64_t units);
  // Throws lp::Error when a string of this size would exceed Limits::max_string_bytes.
  void check_string(size_t bytes) const;
  // Throws lp::Error when an array of n items would exceed Limits::max_items.
  void check_items(size_t n) const;
  Value make_string(std::string s);
  Value make_namespace(Object entries);
  const Limits& limits() const { return limits_; }
  std::tm now() const { return now_(); }

 private:
  struct DepthGuard;
  struct CallDepthGuard;
  std::string eval_block(const std::vector<NodePtr>& stmts, Env& env);
  Value eval_binary(const Node* n, Env& env);
  Value eval_unary(const Node* n, Env& env);
  Value eval_member(const Node* n, Env& env);
  Value eval_slice(const Value& object, const Node* slice, Env& env);
  Value eval_call(const Node* n, Env& env);
  Value eval_set(const Node* n, Env& env);
  Value eval_for(const Node* n, Env& env);
  Value eval_macro(const Node* n, Env& env);
  Value eval_call_block(const Node* n, Env& env);
  Value eval_test(const Node* n, Env& env);
  void bind_macro_args(const std::string& display, const Node* def, const std::vector<NodePtr>& params,
                       std::vector<Value>& args, Env& scope);
  Value call_function(const Value& fn, std::vector<Value>& args, Env& scope);

  Limits limits_;
  NowFn now_;
  int64_t work_ = 0;
  int64_t loop_iterations_ = 0;
  int eval_depth_ = 0;
  int call_depth_ = 0;
  std::vector<std::weak_ptr<Object>> namespaces_;
};

// Attribute / subscript lookup (`obj.name`, `obj[key]`) with the sandbox check.
Value get_member(Interpreter& in, const Value& object, const Value& property);

}  // namespace lp::text::jinja
