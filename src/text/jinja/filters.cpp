// Filters (`x | name` and `x | name(args)`), ported from @huggingface/jinja 0.5.11 Interpreter.applyFilter.
// The reference dispatches on the operand's type first, so e.g. `length` works on strings, arrays and
// dicts but not on undefined. A few Jinja filters it lacks are added (marked "extension"); they only apply
// where the reference would throw, so they never change a rendering the reference produces.
#include <cmath>

#include "core/check.h"
#include "text/jinja/builtins.h"
#include "text/jinja/interpreter.h"
#include "text/jinja/js_string.h"

namespace lp::text::jinja {

namespace {

using Args = std::vector<Value>;

// JS truthiness of `value.value` (containers are objects, hence always true).
bool raw_truthy(const Value& v) {
  if (v.is_array() || v.is_attr_container() || v.is_function()) return true;
  return v.truthy();
}

// One element of `array.map(x => x.value).join(sep)`.
std::string raw_join_piece(const Value& v, size_t max) {
  return v.is_null() || v.is_undefined() ? std::string() : to_js_string(v, max);
}

// getAttributeValue: "a.b.0" walks dict keys and array indices.
Value attribute_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (v.is_attr_container()) {
      const Value* x = v.as_object().find(part);
      v = x ? *x : Value();
    } else if (v.is_array()) {
      const auto idx = js::parse_int(part);
      if (!idx || *idx < 0 || *idx >= static_cast<double>(v.as_array().size())) return Value();
      v = v.as_array()[static_cast<size_t>(*idx)];
    } else {
      return Value();
    }
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

std::string indent_lines(Interpreter& in, const std::string& s, const Value& width, bool first, bool blank) {
  if (!width.is(Type::kInt)) fail("jinja: width must be a number");
  if (width.as_num() < 0)
    fail("jinja: indent: Invalid count value: {}", js::number_to_string(width.as_num()));
  in.check_string(static_cast<size_t>(std::min(width.as_num(), 1e12)));
  const std::string pad(static_cast<size_t>(width.as_num()), ' ');
  std::string out;
  size_t start = 0, line = 0;
  while (true) {
    const size_t nl = s.find('\n', start);
    const std::string_view x =
        std::string_view(s).substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!((!first && line == 0) || (!blank && x.empty()))) out += pad;
    out += x;
    in.check_string(out.size());
    if (nl == std::string::npos) break;
    out.push_back('\n');
    start = nl + 1;
    ++line;
  }
  return out;
}

// Jinja's round(value, precision=0, method='common') (extension).
Value round_number(const Value& v, const Args& args, const Object& kw) {
  const Value* p = args.size() > 0 ? &args[0] : kw.find("precision");
  const Value* m = args.size() > 1 ? &args[1] : kw.find("method");
  const double precision = p && p->is_number() ? p->as_num() : 0;
  const std::string method = m && m->is_string() ? m->as_str() : "common";
  const double scale = std::pow(10.0, precision);
  const double x = v.numeric() * scale;
  double r;
  if (method == "common") {
    r = std::round(x);
  } else if (method == "ceil") {
    r = std::ceil(x);
  } else if (method == "floor") {
    r = std::floor(x);
  } else {
    fail("jinja: round: method must be 'common', 'ceil' or 'floor'");
  }
  return Value::floating(r / scale);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

int64_t word_count(const std::string& s) {
  int64_t n = 0;
  bool in_word = false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    const bool w = std::isalnum(u) || c == '_' || u >= 0x80;
    if (w && !in_word) ++n;
    in_word = w;
  }
  return n;
}

Value length_of(const Value& v) {
  if (v.is_string()) return Value::integer(static_cast<double>(js::utf16_length(v.as_str())));
  if (v.is_array()) return Value::integer(static_cast<double>(v.as_array().size()));
  return Value::integer(static_cast<double>(v.as_object().size()));
}

[[noreturn]] void cannot_apply(const std::string& name, const Value& v) {
  fail("jinja: Cannot apply filter \"{}\" to type: {}", name, type_name(v.type()));
}

// `x | name` without arguments.
Value plain_filter(Interpreter& in, const Value& v, const std::string& name, Env& env) {
  const size_t max = in.limits().max_string_bytes;
  if (name == "safe") return v;
  if (name == "tojson") return in.make_string(to_json(v, {}, true, max));
  if (name == "d" || name == "default") return v.is_undefined() ? Value::string("") : v;  // extension
  if (v.is_array()) {
    const Array& a = v.as_array();
    if (name == "list") return v;
    if (name == "first") return a.empty() ? Value() : a.front();
    if (name == "last") return a.empty() ? Value() : a.back();
    if (name == "length" || name == "count") return length_of(v);
    if (name == "reverse") return Value::array(Array(a.rbegin(), a.rend()));
    if (name == "sort") {
      Array out = a;
      in.charge(static_cast<int64_t>(out.size()) * 8);
      sort_values(out, [](const Value& x, const Value& y) { return compare_values(x, y, false); });
      return Value::array(std::move(out));
    }
    if (name == "join") {
      std::string out;
      for (const Value& x : a) {
        out += raw_join_piece(x, max);
        in.check_string(out.size());
      }
      return in.make_string(std::move(out));
    }
    if (name == "string") return in.make_string(to_json(v, {}, false, max));
    if (name == "unique") {
      Array out;
      in.charge(static_cast<int64_t>(a.size() * a.size() / 4 + a.size()));
      for (const Value& x : a) {
        bool seen = false;
        for (const Value& y : out) seen = seen || same_value_zero(x, y);
        if (!seen) out.push_back(x);
      }
      return Value::array(std::move(out));
    }
    fail("jinja: Unknown ArrayValue filter: {}", name);
  }
  if (v.is_string()) {
    const std::string& s = v.as_str();
    if (name == "length" || name == "count") return length_of(v);
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      Value method = *string_member(in, v, name);
      Args none;
      return method.as_function()(none, env);
    }
    if (name == "trim") return Value::string(js::trim(s));
    if (name == "indent") return in.make_string(indent_lines(in, s, Value::integer(4), false, false));
    if (name == "join" || name == "string") return v;
    if (name == "int") return Value::integer(js::parse_int(s).value_or(0));
    if (name == "float") return Value::floating(js::parse_float(s).value_or(0));
    if (name == "e" || name == "escape") return in.make_string(html_escape(s));          // extension
    if (name == "wordcount") return Value::integer(static_cast<double>(word_count(s)));  // extension
    fail("jinja: Unknown StringValue filter: {}", name);
  }
  if (v.is_number()) {
    if (name == "abs")
      return v.is(Type::kInt) ? Value::integer(std::fabs(v.as_num()))
                              : Value::floating(std::fabs(v.as_num()));
    if (name == "int") return Value::integer(std::floor(v.as_num()));
    if (name == "float") return Value::floating(v.as_num());
    if (name == "string") return Value::string(to_output(v, max));
    if (name == "round") return round_number(v, {}, {});  // extension
    fail("jinja: Unknown NumericValue filter: {}", name);
  }
  if (v.is_object()) {
    if (name == "items") return Value::array(dict_items(v));
    if (name == "length" || name == "count") return length_of(v);
    if (auto builtin = object_member(in, v, name)) {
      Args none;
      return builtin->as_function()(none, env);
    }
    fail("jinja: Unknown ObjectValue filter: {}", name);
  }
  if (v.is(Type::kBool)) {
    if (name == "bool") return v;
    if (name == "int") return Value::integer(v.as_bool() ? 1 : 0);
    if (name == "float") return Value::floating(v.as_bool() ? 1 : 0);
    if (name == "string") return Value::string(v.as_bool() ? "true" : "false");
    fail("jinja: Unknown BooleanValue filter: {}", name);
  }
  cannot_apply(name, v);
}

Value tojson_filter(Interpreter& in, const Value& v, const Object& kw) {
  JsonOptions opt;
  const Value* indent = kw.find("indent");
  if (indent && !indent->is(Type::kInt) && !indent->is_null()) fail("jinja: If set, indent must be a number");
  if (indent && indent->is(Type::kInt)) {
    const double n = indent->as_num();
    if (n > 1e6) fail("jinja: tojson: indent {} is too large", js::number_to_string(n));
    opt.indent = static_cast<int64_t>(n);
  }
  const Value* ascii = kw.find("ensure_ascii");
  if (ascii && !ascii->is(Type::kBool)) fail("jinja: If set, ensure_ascii must be a boolean");
  opt.ensure_ascii = ascii && ascii->as_bool();
  const Value* sort = kw.find("sort_keys");
  if (sort && !sort->is(Type::kBool)) fail("jinja: If set, sort_keys must be a boolean");
  opt.sort_keys = sort && sort->as_bool();
  if (const Value* seps = kw.find("separators"); seps && !seps->is_null()) {
    if (!seps->is_array()) fail("jinja: If set, separators must be a tuple of two strings");
    const Array& p = seps->as_array();
    if (p.size() != 2 || !p[0].is_string() || !p[1].is_string()) {
      fail("jinja: separators must be a tuple of two strings");
    }
    opt.separators = std::make_pair(p[0].as_str(), p[1].as_str());
  }
  return in.make_string(to_json(v, opt, true, in.limits().max_string_bytes));
}

Value select_filter(Interpreter& in, const Value& v, const std::string& name, const Node* call) {
  const bool select = name == "selectattr";
  for (const Value& item : v.as_array()) {
    if (!item.is_attr_container()) fail("jinja: `{}` can only be applied to array of objects", name);
  }
  for (const auto& a : call->list) {
    if (a->kind != NodeKind::kStringLit) fail("jinja: arguments of `{}` must be strings", name);
  }
  if (call->list.empty()) fail("jinja: `{}` needs an attribute name", name);
  const std::string attr = call->list[0]->str;
  const std::string test = call->list.size() > 1 ? call->list[1]->str : std::string();
  const Value arg = call->list.size() > 2 ? Value::string(call->list[2]->str) : Value();
  if (!test.empty() && !has_test(test)) fail("jinja: Unknown test: {}", test);
  Array out;
  in.charge(static_cast<int64_t>(v.as_array().size()));
  for (const Value& item : v.as_array()) {
    const Value* a = item.as_object().find(attr);
    bool result = false;
    if (a) result = test.empty() ? a->truthy() : run_test(test, *a, call->list.size() > 2 ? &arg : nullptr);
    if (result == select) out.push_back(item);
  }
  return Value::array(std::move(out));
}

// `x | name(args)`.
Value call_filter(Interpreter& in, const Value& v, const std::string& name, const Node* call, Env& env) {
  const size_t max = in.limits().max_string_bytes;
  auto eval_args = [&](Args* args, Object* kw) { in.eval_args(call->list, env, args, kw); };
  Args args;
  Object kw;
  if (name == "tojson") {
    eval_args(&args, &kw);
    return tojson_filter(in, v, kw);
  }
  if (name == "join") {
    std::vector<std::string> pieces;
    if (v.is_string()) {
      for (char32_t c : js::decode(v.as_str())) {
        pieces.emplace_back();
        js::append_utf8(pieces.back(), c);
      }
    } else if (v.is_array()) {
      for (const Value& x : v.as_array()) pieces.push_back(raw_join_piece(x, max));
    } else {
      cannot_apply(name, v);
    }
    eval_args(&args, &kw);
    const Value* sep = !args.empty() ? &args[0] : kw.find("separator");
    if (sep && !sep->is_string()) fail("jinja: separator must be a string");
    std::string out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (i > 0 && sep) out += sep->as_str();
      out += pieces[i];
      in.check_string(out.size());
    }
    return in.make_string(std::move(out));
  }
  if (name == "int" || name == "float") {
    eval_args(&args, &kw);
    const bool is_int = name == "int";
    const Value* d = !args.empty() ? &args[0] : kw.find("default");
    const Value dflt = d ? *d : (is_int ? Value::integer(0) : Value::floating(0));
    if (v.is_string()) {
      const auto x = is_int ? js::parse_int(v.as_str()) : js::parse_float(v.as_str());
      if (!x) return dflt;
      return is_int ? Value::integer(*x) : Value::floating(*x);
    }
    if (v.is_number()) return v;
    if (v.is(Type::kBool)) return is_int ? Value::integer(v.as_bool()) : Value::floating(v.as_bool());
    cannot_apply(name, v);
  }
  if (name == "default" || name == "d") {  // "d" is an extension
    eval_args(&args, &kw);
    const Value dflt = !args.empty() ? args[0] : Value::string("");
    const Value flag =
        args.size() > 1 ? args[1] : (kw.find("boolean") ? *kw.find("boolean") : Value::boolean(false));
    if (!flag.is(Type::kBool)) fail("jinja: `default` filter flag must be a boolean");
    if (v.is_undefined() || (flag.as_bool() && !v.truthy())) return dflt;
    return v;
  }
  if (v.is_array()) {
    if (name == "sort") {
      eval_args(&args, &kw);
      const Value reverse = pick_arg(args, kw, 0, "reverse", Value::boolean(false));
      if (!reverse.is(Type::kBool)) fail("jinja: reverse must be a boolean");
      const Value cs = pick_arg(args, kw, 1, "case_sensitive", Value::boolean(false));
      if (!cs.is(Type::kBool)) fail("jinja: case_sensitive must be a boolean");
      const Value attr = pick_arg(args, kw, 2, "attribute", Value::null());
      if (!attr.is_string() && !attr.is(Type::kInt) && !attr.is_null()) {
        fail("jinja: attribute must be a string, integer, or null");
      }
      const std::string path = attr.is_null()     ? ""
                               : attr.is_string() ? attr.as_str()
                                                  : js::number_to_string(attr.as_num());
      auto key = [&](const Value& x) { return attr.is_null() ? x : attribute_path(x, path); };
      Array out = v.as_array();
      in.charge(static_cast<int64_t>(out.size()) * 8);
      sort_values(out, [&](const Value& a, const Value& b) {
        const int r = compare_values(key(a), key(b), cs.as_bool());
        return reverse.as_bool() ? -r : r;
      });
      return Value::array(std::move(out));
    }
    if (name == "selectattr" || name == "rejectattr") return select_filter(in, v, name, call);
    if (name == "map") {
      eval_args(&args, &kw);
      const Value* attr = kw.find("attribute");
      if (!attr) fail("jinja: `map` expressions without `attribute` set are not currently supported.");
      if (!attr->is_string()) fail("jinja: attribute must be a string");
      const Value* dflt = kw.find("default");
      Array out;
      for (const Value& item : v.as_array()) {
        if (!item.is_attr_container()) fail("jinja: items in map must be an object");
        Value x = attribute_path(item, attr->as_str());
        out.push_back(x.is_undefined() && dflt ? *dflt : x);
      }
      in.charge(static_cast<int64_t>(out.size()));
      return Value::array(std::move(out));
    }
    fail("jinja: Unknown ArrayValue filter: {}", name);
  }
  if (v.is_string()) {
    if (name == "indent") {
      eval_args(&args, &kw);
      const Value width = pick_arg(args, kw, 0, "width", Value::integer(4));
      const bool first = raw_truthy(pick_arg(args, kw, 1, "first", Value::boolean(false)));
      const bool blank = raw_truthy(pick_arg(args, kw, 2, "blank", Value::boolean(false)));
      return in.make_string(indent_lines(in, v.as_str(), width, first, blank));
    }
    if (name == "replace") {
      eval_args(&args, &kw);
      args.push_back(Value::object(std::move(kw), Type::kKwargs));
      Value fn = *string_member(in, v, "replace");
      return fn.as_function()(args, env);
    }
    fail("jinja: Unknown StringValue filter: {}", name);
  }
  if (v.is_object()) {
    if (auto builtin = object_member(in, v, name)) {
      eval_args(&args, &kw);
      if (kw.size() > 0) args.push_back(Value::object(std::move(kw), Type::kKwargs));
      return builtin->as_function()(args, env);
    }
    fail("jinja: Unknown ObjectValue filter: {}", name);
  }
  if (v.is_number() && name == "round") {  // extension
    eval_args(&args, &kw);
    return round_number(v, args, kw);
  }
  cannot_apply(name, v);
}

}  // namespace

Value Interpreter::apply_filter(const Value& operand, const Node* filter, Env& env) {
  if (filter->kind == NodeKind::kIdentifier) return plain_filter(*this, operand, filter->str, env);
  if (filter->kind == NodeKind::kCall) {
    if (filter->a->kind != NodeKind::kIdentifier)
      fail("jinja: Unknown filter: {}", node_kind_name(filter->a->kind));
    return call_filter(*this, operand, filter->a->str, filter, env);
  }
  fail("jinja: Unknown filter: {}", node_kind_name(filter->kind));
}

}  // namespace lp::text::jinja
