// Jinja interpreter core: scopes, statements and expressions, ported from @huggingface/jinja 0.5.11
// src/runtime.ts (see interpreter.h). Filters are in filters.cpp, methods/tests/globals in builtins.cpp.
#include "text/jinja/interpreter.h"

#include <cmath>

#include "core/check.h"
#include "text/jinja/builtins.h"
#include "text/jinja/js_string.h"

namespace lp::text::jinja {

namespace {

// {% break %} / {% continue %} travel as exceptions to the nearest loop, as in the reference (they even
// cross macro calls).
struct BreakSignal {};
struct ContinueSignal {};

bool is_reserved_name(std::string_view name) {
  return name.size() >= 2 && name[0] == '_' && name[1] == '_';
}

}  // namespace

std::tm local_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

Env::~Env() = default;

void Env::declare(const std::string& name, Value v) {
  if (name == "namespace" || vars_.count(name)) fail("jinja: Variable already declared: {}", name);
  vars_[name] = std::move(v);
}

Value Env::lookup(const std::string& name) const {
  if (name == "namespace") {
    auto it = vars_.find(name);
    return it != vars_.end() ? it->second : lookup(kNamespaceBuiltin);
  }
  for (const Env* e = this; e; e = e->parent_) {
    auto it = e->vars_.find(name);
    if (it != e->vars_.end()) return it->second;
  }
  return Value();
}

std::weak_ptr<int> Env::liveness() {
  if (!alive_) alive_ = std::make_shared<int>(0);
  return alive_;
}

struct Interpreter::DepthGuard {
  explicit DepthGuard(Interpreter* in) : in(in) {
    if (++in->eval_depth_ > in->limits_.max_eval_depth) {
      fail("jinja: evaluation nested deeper than {} levels", in->limits_.max_eval_depth);
    }
  }
  ~DepthGuard() { --in->eval_depth_; }
  Interpreter* in;
};

// One macro or caller() call in progress, counted against Limits::max_call_depth.
struct Interpreter::CallDepthGuard {
  explicit CallDepthGuard(Interpreter* in) : in(in) {
    if (++in->call_depth_ > in->limits_.max_call_depth) {
      --in->call_depth_;
      fail("jinja: macro calls nested deeper than {}", in->limits_.max_call_depth);
    }
  }
  ~CallDepthGuard() { --in->call_depth_; }
  Interpreter* in;
};

Interpreter::Interpreter(const Limits& limits, NowFn now) : limits_(limits), now_(std::move(now)) {
  if (!now_) now_ = local_now;
}

Interpreter::~Interpreter() {
  for (auto& w : namespaces_) {
    if (auto ns = w.lock()) {
      Object doomed = std::move(*ns);  // destroyed (iteratively) after the namespace is emptied
      ns->clear();
    }
  }
}

void Interpreter::charge(int64_t units) {
  work_ += units;
  if (work_ > limits_.max_work) fail("jinja: template exceeds the work limit of {} steps", limits_.max_work);
}

void Interpreter::check_string(size_t bytes) const {
  if (bytes > limits_.max_string_bytes) {
    fail("jinja: string grows past the limit of {} bytes", limits_.max_string_bytes);
  }
}

void Interpreter::check_items(size_t n) const {
  if (static_cast<int64_t>(n) > limits_.max_items) fail("jinja: list grows past {} items", limits_.max_items);
}

Value Interpreter::make_string(std::string s) {
  check_string(s.size());
  charge(static_cast<int64_t>(s.size() / 16));
  return Value::string(std::move(s));
}

Value Interpreter::make_namespace(Object entries) {
  Value v = Value::object(std::move(entries), Type::kNamespace);
  namespaces_.push_back(std::static_pointer_cast<Object>(v.storage()));
  return v;
}

std::string Interpreter::render(const std::vector<NodePtr>& program, Env& globals) {
  try {
    return eval_block(program, globals);
  } catch (const BreakSignal&) {
    fail("jinja: {{% break %}} outside a loop");
  } catch (const ContinueSignal&) {
    fail("jinja: {{% continue %}} outside a loop");
  }
}

std::string Interpreter::eval_block(const std::vector<NodePtr>& stmts, Env& env) {
  std::string out;
  for (const auto& s : stmts) {
    Value v = eval(s.get(), env);
    if (v.is_null() || v.is_undefined()) continue;
    if (v.is_string()) {
      out += v.as_str();
    } else {
      out += to_output(v, limits_.max_string_bytes);
    }
    check_string(out.size());
  }
  charge(static_cast<int64_t>(out.size() / 16));
  return out;
}

Value Interpreter::eval(const Node* n, Env& env) {
  if (!n) return Value();
  DepthGuard guard(this);
  charge(1);
  switch (n->kind) {
    case NodeKind::kText:
    case NodeKind::kStringLit:
      return Value::string(n->str);
    case NodeKind::kIntLit:
      return Value::integer(n->num);
    case NodeKind::kFloatLit:
      return Value::floating(n->num);
    case NodeKind::kIdentifier:
      return env.lookup(n->str);
    case NodeKind::kArrayLit:
    case NodeKind::kTupleLit: {
      Array items;
      items.reserve(n->list.size());
      for (const auto& x : n->list) items.push_back(eval(x.get(), env));
      return Value::array(std::move(items), n->kind == NodeKind::kTupleLit ? Type::kTuple : Type::kArray);
    }
    case NodeKind::kObjectLit: {
      Object o;
      for (const auto& [k, v] : n->pairs) {
        Value key = eval(k.get(), env);
        if (!key.is_string()) fail("jinja: Object keys must be strings: got {}", type_name(key.type()));
        o.set(key.as_str(), eval(v.get(), env));
      }
      return Value::object(std::move(o));
    }
    case NodeKind::kMember:
      return eval_member(n, env);
    case NodeKind::kCall:
      return eval_call(n, env);
    case NodeKind::kBinary:
      return eval_binary(n, env);
    case NodeKind::kUnary:
      return eval_unary(n, env);
    case NodeKind::kFilter: {
      Value operand = eval(n->a.get(), env);
      return apply_filter(operand, n->b.get(), env);
    }
    case NodeKind::kFilterBlock: {
      Value rendered = make_string(eval_block(n->body, env));
      return apply_filter(rendered, n->b.get(), env);
    }
    case NodeKind::kTest:
      return eval_test(n, env);
    case NodeKind::kSelect: {
      if (!eval(n->b.get(), env).truthy()) return Value();
      return eval(n->a.get(), env);
    }
    case NodeKind::kTernary:
      return eval(n->a.get(), env).truthy() ? eval(n->b.get(), env) : eval(n->c.get(), env);
    case NodeKind::kIf:
      return Value::string(eval_block(eval(n->a.get(), env).truthy() ? n->body : n->alt, env));
    case NodeKind::kFor:
      return eval_for(n, env);
    case NodeKind::kSet:
      return eval_set(n, env);
    case NodeKind::kMacro:
      return eval_macro(n, env);
    case NodeKind::kCallBlock:
      return eval_call_block(n, env);
    case NodeKind::kBreak:
      throw BreakSignal{};
    case NodeKind::kContinue:
      throw ContinueSignal{};
    case NodeKind::kComment:
      return Value::null();
    case NodeKind::kSlice:
    case NodeKind::kKwArg:
    case NodeKind::kSpread:
    case NodeKind::kKwSpread:
      break;
  }
  fail("jinja: Unknown node type: {}", node_kind_name(n->kind));
}

Value Interpreter::eval_test(const Node* n, Env& env) {
  Value operand = eval(n->a.get(), env);
  const bool result = run_test(n->str, operand, nullptr);
  return Value::boolean(n->flag ? !result : result);
}

Value Interpreter::eval_unary(const Node* n, Env& env) {
  Value arg = eval(n->a.get(), env);
  if (n->str == "not") return Value::boolean(!arg.truthy());
  if (!arg.is_numeric_like()) fail("jinja: Unknown operator \"{}\" for {}", n->str, type_name(arg.type()));
  const double r = (n->str == "-" ? -1.0 : 1.0) * arg.numeric();
  return arg.is(Type::kFloat) ? Value::floating(r) : Value::integer(r);
}

Value Interpreter::eval_binary(const Node* n, Env& env) {
  const std::string& op = n->str;
  Value left = eval(n->a.get(), env);
  if (op == "and") return left.truthy() ? eval(n->b.get(), env) : left;
  if (op == "or") return left.truthy() ? left : eval(n->b.get(), env);
  Value right = eval(n->b.get(), env);
  if (op == "==") return Value::boolean(loose_equal(left, right));
  if (op == "!=") return Value::boolean(!loose_equal(left, right));
  const size_t max = limits_.max_string_bytes;

  if (left.is_undefined() || right.is_undefined()) {
    if (right.is_undefined() && (op == "in" || op == "not in")) return Value::boolean(op == "not in");
    fail("jinja: Cannot perform operation {} on undefined values", op);
  } else if (left.is_null() || right.is_null()) {
    fail("jinja: Cannot perform operation on null values");
  } else if (op == "~") {
    std::string s = to_js_string(left, max);
    s += to_js_string(right, max);
    return make_string(std::move(s));
  } else if (op == "**" && left.is_numeric_like() && right.is_numeric_like()) {
    const double a = left.numeric(), b = right.numeric();
    if (a == 0 && b < 0) fail("jinja: 0.0 cannot be raised to a negative power");
    const double r = std::pow(a, b);
    if (!std::isfinite(r)) fail("jinja: Exponentiation result is not a finite real number");
    const bool is_float = left.is(Type::kFloat) || right.is(Type::kFloat) || b < 0;
    return is_float ? Value::floating(r) : Value::integer(r);
  } else if (left.is_number() && right.is_number()) {
    const double a = left.as_num(), b = right.as_num();
    const bool is_float = left.is(Type::kFloat) || right.is(Type::kFloat);
    auto num = [&](double r) { return is_float ? Value::floating(r) : Value::integer(r); };
    if (op == "+") return num(a + b);
    if (op == "-") return num(a - b);
    if (op == "*") return num(a * b);
    if (op == "/") return Value::floating(a / b);
    if (op == "//") return num(std::floor(a / b));
    if (op == "%") return num(std::fmod(a, b));
    if (op == "<") return Value::boolean(a < b);
    if (op == ">") return Value::boolean(a > b);
    if (op == ">=") return Value::boolean(a >= b);
    if (op == "<=") return Value::boolean(a <= b);
  } else if (left.is_array() && right.is_array()) {
    if (op == "+") {
      const Array &l = left.as_array(), &r = right.as_array();
      check_items(l.size() + r.size());
      charge(static_cast<int64_t>(l.size() + r.size()));
      Array out;
      out.reserve(l.size() + r.size());
      out.insert(out.end(), l.begin(), l.end());
      out.insert(out.end(), r.begin(), r.end());
      return Value::array(std::move(out));
    }
  } else if (right.is_array()) {
    if (op == "in" || op == "not in") {
      bool member = false;
      charge(static_cast<int64_t>(right.as_array().size()));
      for (const Value& x : right.as_array()) {
        if (strict_equal(x, left)) {
          member = true;
          break;
        }
      }
      return Value::boolean(op == "in" ? member : !member);
    }
  }
  if ((left.is_string() || right.is_string()) && op == "+") {
    std::string s = to_js_string(left, max);
    s += to_js_string(right, max);
    return make_string(std::move(s));
  }
  if (left.is_string() && right.is_string() && (op == "in" || op == "not in")) {
    charge(static_cast<int64_t>(right.as_str().size() / 16));
    const bool found = right.as_str().find(left.as_str()) != std::string::npos;
    return Value::boolean(op == "in" ? found : !found);
  }
  if (left.is_string() && right.is_object() && (op == "in" || op == "not in")) {
    const bool found = right.as_object().find(left.as_str()) != nullptr;
    return Value::boolean(op == "in" ? found : !found);
  }
  fail("jinja: Unknown operator \"{}\" between {} and {}", op, type_name(left.type()),
       type_name(right.type()));
}

Value get_member(Interpreter& in, const Value& object, const Value& property) {
  if (property.is_string() && is_reserved_name(property.as_str()) &&
      !(object.is_attr_container() && object.as_object().find(property.as_str()))) {
    fail("jinja: access to attribute '{}' is not allowed", property.as_str());
  }
  if (object.is_attr_container()) {
    if (!property.is_string()) {
      fail("jinja: Cannot access property with non-string: got {}", type_name(property.type()));
    }
    if (const Value* v = object.as_object().find(property.as_str())) return *v;
    if (object.is_object()) return object_member(in, object, property.as_str()).value_or(Value());
    return Value();
  }
  if (object.is_array() || object.is_string()) {
    if (property.is(Type::kInt)) {
      const double d = property.as_num();
      if (!std::isfinite(d)) return Value();
      const auto i = static_cast<int64_t>(std::trunc(d));
      if (object.is_string()) {
        auto ch = js::utf16_at(object.as_str(), i);
        return ch ? Value::string(std::move(*ch)) : Value();
      }
      const Array& a = object.as_array();
      const int64_t idx = i < 0 ? i + static_cast<int64_t>(a.size()) : i;
      if (idx < 0 || idx >= static_cast<int64_t>(a.size())) return Value();
      return a[static_cast<size_t>(idx)];
    }
    if (property.is_string()) {
      if (object.is_string()) return string_member(in, object, property.as_str()).value_or(Value());
      if (property.as_str() == "length") return Value::integer(static_cast<double>(object.as_array().size()));
      return Value();
    }
    fail("jinja: Cannot access property with non-string/non-number: got {}", type_name(property.type()));
  }
  if (!property.is_string())
    fail("jinja: Cannot access property with non-string: got {}", type_name(property.type()));
  return Value();
}

Value Interpreter::eval_member(const Node* n, Env& env) {
  Value object = eval(n->a.get(), env);
  Value property;
  if (n->flag) {
    if (n->b->kind == NodeKind::kSlice) return eval_slice(object, n->b.get(), env);
    property = eval(n->b.get(), env);
  } else if (n->b->kind == NodeKind::kIntLit) {
    property = Value::integer(n->b->num);
  } else {
    property = Value::string(n->b->str);
  }
  return get_member(*this, object, property);
}

Value Interpreter::eval_slice(const Value& object, const Node* slice, Env& env) {
  if (!object.is_array() && !object.is_string()) fail("jinja: Slice object must be an array or string");
  const Value start = eval(slice->a.get(), env), stop = eval(slice->b.get(), env),
              step = eval(slice->c.get(), env);
  for (const Value* v : {&start, &stop, &step}) {
    if (!v->is(Type::kInt) && !v->is_undefined()) fail("jinja: Slice start, stop and step must be integers");
  }
  // utils.ts slice(), in JS number arithmetic.
  std::vector<char32_t> chars;
  if (object.is_string()) chars = js::decode(object.as_str());
  const double len =
      object.is_string() ? static_cast<double>(chars.size()) : static_cast<double>(object.as_array().size());
  const double st = step.is_undefined() ? 1 : step.as_num();
  const double dir = st > 0 ? 1 : st < 0 ? -1 : 0;
  double b, e;
  if (dir >= 0) {
    b = start.is_undefined() ? 0 : start.as_num();
    b = b < 0 ? std::max(len + b, 0.0) : std::min(b, len);
    e = stop.is_undefined() ? len : stop.as_num();
    e = e < 0 ? std::max(len + e, 0.0) : std::min(e, len);
  } else {
    b = start.is_undefined() ? len - 1 : start.as_num();
    b = b < 0 ? std::max(len + b, -1.0) : std::min(b, len - 1);
    e = stop.is_undefined() ? -1 : stop.as_num();
    e = e < -1 ? std::max(len + e, -1.0) : std::min(e, len - 1);
  }
  Array items;
  std::vector<char32_t> picked;
  if (dir != 0 && !std::isnan(b) && !std::isnan(e)) {
    for (double i = b; dir * i < dir * e; i += st) {
      const auto k = static_cast<size_t>(i);
      if (object.is_string()) {
        picked.push_back(chars[k]);
      } else {
        items.push_back(object.as_array()[k]);
      }
    }
  }
  charge(static_cast<int64_t>(items.size() + picked.size()));
  if (object.is_string()) return Value::string(js::encode(picked));
  return Value::array(std::move(items));
}

void Interpreter::eval_args(const std::vector<NodePtr>& args, Env& env, std::vector<Value>* positional,
                            Object* keywords) {
  for (const auto& a : args) {
    if (a->kind == NodeKind::kSpread) {
      Value v = eval(a->a.get(), env);
      if (!v.is_array()) fail("jinja: Cannot unpack non-iterable type: {}", type_name(v.type()));
      for (const Value& x : v.as_array()) positional->push_back(x);
    } else if (a->kind != NodeKind::kKwArg && a->kind != NodeKind::kKwSpread) {
      positional->push_back(eval(a.get(), env));
    }
  }
  auto add = [&](const std::string& key, Value v) {
    if (keywords->find(key)) fail("jinja: Got multiple values for keyword argument '{}'", key);
    keywords->set(key, std::move(v));
  };
  for (const auto& a : args) {
    if (a->kind == NodeKind::kKwArg) {
      add(a->str, eval(a->a.get(), env));
    } else if (a->kind == NodeKind::kKwSpread) {
      Value v = eval(a->a.get(), env);
      if (!v.is_object()) fail("jinja: Argument after ** must be a mapping, not {}", type_name(v.type()));
      for (const auto& [k, x] : v.as_object().entries()) add(k, x);
    }
  }
}

Value Interpreter::call_function(const Value& fn, std::vector<Value>& args, Env& scope) {
  if (!fn.is_function())
    fail("jinja: Cannot call something that is not a function: got {}", type_name(fn.type()));
  return fn.as_function()(args, scope);
}

Value Interpreter::eval_call(const Node* n, Env& env) {
  std::vector<Value> args;
  Object kwargs;
  eval_args(n->list, env, &args, &kwargs);
  if (kwargs.size() > 0) args.push_back(Value::object(std::move(kwargs), Type::kKwargs));
  Value fn = eval(n->a.get(), env);
  return call_function(fn, args, env);
}

Value Interpreter::eval_set(const Node* n, Env& env) {
  Value rhs = n->b ? eval(n->b.get(), env) : make_string(eval_block(n->body, env));
  const Node* target = n->a.get();
  if (target->kind == NodeKind::kIdentifier) {
    env.set(target->str, std::move(rhs));
  } else if (target->kind == NodeKind::kTupleLit) {
    if (!rhs.is_array()) fail("jinja: Cannot unpack non-iterable type in set: {}", type_name(rhs.type()));
    const Array& arr = rhs.as_array();
    if (arr.size() != target->list.size()) {
      fail("jinja: Too {} items to unpack in set", target->list.size() > arr.size() ? "few" : "many");
    }
    for (size_t i = 0; i < arr.size(); ++i) {
      const Node* elem = target->list[i].get();
      if (elem->kind != NodeKind::kIdentifier) {
        fail("jinja: Cannot unpack to non-identifier in set: {}", node_kind_name(elem->kind));
      }
      env.set(elem->str, arr[i]);
    }
  } else if (target->kind == NodeKind::kMember) {
    Value object = eval(target->a.get(), env);
    if (!object.is(Type::kNamespace)) fail("jinja: cannot assign attribute on non-namespace object");
    if (target->b->kind != NodeKind::kIdentifier)
      fail("jinja: Cannot assign to member with non-identifier property");
    if (is_reserved_name(target->b->str))
      fail("jinja: access to attribute '{}' is not allowed", target->b->str);
    object.as_object().set(target->b->str, std::move(rhs));
  } else {
    fail("jinja: Invalid LHS inside assignment expression: {}", node_kind_name(target->kind));
  }
  return Value::null();
}

Value Interpreter::eval_for(const Node* n, Env& env) {
  Env scope(&env);
  const Node* test = nullptr;
  Value iterable;
  if (n->b->kind == NodeKind::kSelect) {
    iterable = eval(n->b->a.get(), scope);
    test = n->b->b.get();
  } else {
    iterable = eval(n->b.get(), scope);
  }
  if (!iterable.is_array() && !iterable.is_object()) {
    fail("jinja: Expected iterable or object type in for loop: got {}", type_name(iterable.type()));
  }
  if (iterable.is_object()) {
    Array keys;
    for (const auto& e : iterable.as_object().entries()) keys.push_back(Value::string(e.first));
    iterable = Value::array(std::move(keys));
  }
  const Node* loopvar = n->a.get();
  // Binds the loop variable(s) for one item (scopeUpdateFunction).
  auto bind = [&](Env& s, const Value& item) {
    if (loopvar->kind == NodeKind::kIdentifier) {
      s.set(loopvar->str, item);
      return;
    }
    for (size_t j = 0; j < loopvar->list.size(); ++j) {
      const Node* v = loopvar->list[j].get();
      if (v->kind != NodeKind::kIdentifier) {
        fail("jinja: Cannot unpack non-identifier type: {}", node_kind_name(v->kind));
      }
      s.set(v->str, item.as_array()[j]);
    }
  };
  const Array& all = iterable.as_array();
  Array items;
  for (const Value& current : all) {
    if (++loop_iterations_ > limits_.max_loop_iterations) {
      fail("jinja: loops exceed the limit of {} iterations", limits_.max_loop_iterations);
    }
    if (loopvar->kind == NodeKind::kTupleLit) {
      if (!current.is(Type::kArray))
        fail("jinja: Cannot unpack non-iterable type: {}", type_name(current.type()));
      const size_t want = loopvar->list.size(), got = current.as_array().size();
      if (want != got) fail("jinja: Too {} items to unpack", want > got ? "few" : "many");
    }
    if (test) {
      Env loop_scope(&scope);
      bind(loop_scope, current);
      if (!eval(test, loop_scope).truthy()) continue;
    }
    items.push_back(current);
  }
  std::string out;
  bool no_iteration = true;
  const double count = static_cast<double>(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const double d = static_cast<double>(i);
    Object loop;
    loop.set("index", Value::integer(d + 1));
    loop.set("index0", Value::integer(d));
    loop.set("revindex", Value::integer(count - d));
    loop.set("revindex0", Value::integer(count - d - 1));
    loop.set("first", Value::boolean(i == 0));
    loop.set("last", Value::boolean(i + 1 == items.size()));
    loop.set("length", Value::integer(count));
    loop.set("previtem", i > 0 ? items[i - 1] : Value());
    loop.set("nextitem", i + 1 < items.size() ? items[i + 1] : Value());
    scope.set("loop", Value::object(std::move(loop)));
    bind(scope, items[i]);
    try {
      out += eval_block(n->body, scope);
      check_string(out.size());
    } catch (const ContinueSignal&) {
      continue;
    } catch (const BreakSignal&) {
      break;
    }
    no_iteration = false;
  }
  if (no_iteration) out += eval_block(n->alt, scope);
  return make_string(std::move(out));
}

void Interpreter::bind_macro_args(const std::string& display, const Node* def,
                                  const std::vector<NodePtr>& params, std::vector<Value>& args, Env& scope) {
  Object kwargs = take_kwargs(args);
  std::vector<std::string> used;  // keyword arguments bound to named parameters
  std::vector<std::pair<std::string, const Node*>> pending_defaults;
  for (size_t i = 0; i < params.size(); ++i) {
    const Node* p = params[i].get();
    const std::string& name = p->str;
    const Node* default_expr = p->kind == NodeKind::kKwArg ? p->a.get() : nullptr;
    Value v;
    bool have = i < args.size();
    if (have) v = args[i];
    if (!have && kwargs.find(name) && std::find(used.begin(), used.end(), name) == used.end()) {
      v = *kwargs.find(name);
      used.push_back(name);
      have = true;
    }
    if (!have && default_expr) pending_defaults.emplace_back(name, default_expr);
    scope.set(name, have ? v : Value());
  }
  Object rest;
  for (const auto& [k, v] : kwargs.entries()) {
    if (std::find(used.begin(), used.end(), k) == used.end()) rest.set(k, v);
  }
  if (def->uses_kwargs) {
    scope.set("kwargs", Value::object(std::move(rest)));
  } else if (rest.size() > 0) {
    fail("jinja: macro {} takes no keyword argument '{}'", display, rest.entries()[0].first);
  }
  if (def->uses_varargs) {
    Array extra;
    for (size_t i = params.size(); i < args.size(); ++i) extra.push_back(args[i]);
    scope.set("varargs", Value::array(std::move(extra)));
  } else if (args.size() > params.size()) {
    fail("jinja: macro {} takes not more than {} argument(s)", display, params.size());
  }
  for (const auto& [name, expr] : pending_defaults) scope.set(name, eval(expr, scope));
}

Value Interpreter::eval_macro(const Node* n, Env& env) {
  env.set(n->str, Value::function([this, n](std::vector<Value>& args, Env& caller_scope) {
            CallDepthGuard guard(this);
            Env scope(&caller_scope);
            bind_macro_args("'" + n->str + "'", n, n->list, args, scope);
            return make_string(eval_block(n->body, scope));
          }));
  return Value::null();
}

Value Interpreter::eval_call_block(const Node* n, Env& env) {
  std::weak_ptr<int> env_alive = env.liveness();
  Env* env_ptr = &env;
  Value caller = Value::function([this, n, env_alive, env_ptr](std::vector<Value>& args, Env&) {
    if (env_alive.expired()) fail("jinja: caller() used after its call block ended");
    CallDepthGuard guard(this);
    Env scope(env_ptr);
    bind_macro_args("None", n, n->list, args, scope);
    return make_string(eval_block(n->body, scope));
  });
  const Node* call = n->a.get();
  std::vector<Value> args;
  Object kwargs;
  eval_args(call->list, env, &args, &kwargs);
  args.push_back(Value::object(std::move(kwargs), Type::kKwargs));
  Value fn = eval(call->a.get(), env);
  Env call_env(&env);
  call_env.set("caller", std::move(caller));
  return call_function(fn, args, call_env);
}

}  // namespace lp::text::jinja
