#include "constrain/json_schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "constrain/json_lexical.h"
#include "constrain/regex.h"
#include "constrain/tree_util.h"
#include "core/check.h"

namespace lp::constrain {

namespace {

using ojson = nlohmann::ordered_json;

// Keywords that never change which documents are valid.
const std::set<std::string> kAnnotations = {
    "title",       "description",   "default",         "examples",        "$schema", "$id",
    "$comment",    "deprecated",    "readOnly",        "writeOnly",       "$anchor", "$defs",
    "definitions", "discriminator", "contentEncoding", "contentMediaType"};
// Keywords understood here, grouped by the type they constrain.
const std::set<std::string> kStringKeys = {"minLength", "maxLength", "pattern"};
const std::set<std::string> kArrayKeys = {"items", "minItems", "maxItems"};
const std::set<std::string> kObjectKeys = {"properties", "required", "additionalProperties"};
const std::set<std::string> kOtherKeys = {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref"};

const std::vector<std::string> kTypes = {"string", "integer", "number", "boolean", "null", "object", "array"};

// Work counted per schema visited, property, enum value: bounds the time spent before the size check.
constexpr int64_t kMaxWork = 100000;
// Properties of one object: the member list costs time quadratic in their number.
constexpr size_t kMaxProperties = 1000;

bool value_has_type(const ojson& v, const std::string& type) {
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    if (!v.is_number_float()) return false;
    const double d = v.get<double>();
    return d == static_cast<double>(static_cast<int64_t>(d));
  }
  if (type == "boolean") return v.is_boolean();
  if (type == "null") return v.is_null();
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  return false;
}

class SchemaCompiler {
 public:
  SchemaCompiler(const ojson& root, const JsonOptions& options)
      : root_(root),
        opt_(options),
        any_(options.max_whitespace),
        ws_(json::whitespace(options.max_whitespace)),
        sep_(concat({ws_, text(","), ws_})) {}

  NodePtr compile(const ojson& schema, int depth) {
    if (depth > opt_.max_schema_depth)
      fail("JSON schema nested deeper than {} levels", opt_.max_schema_depth);
    charge(1);
    if (schema.is_boolean()) return schema.get<bool>() ? any_.value(opt_.max_depth) : json::never();
    if (!schema.is_object()) fail("a JSON schema must be an object or a boolean, got {}", schema.dump());

    std::set<std::string> constraints;  // the non-annotation keywords present
    for (const auto& [key, value] : schema.items()) {
      if (kAnnotations.count(key)) continue;
      if (key == "uniqueItems" && value == ojson(false)) continue;  // no constraint
      if (key == "uniqueItems") fail("unsupported JSON Schema keyword 'uniqueItems'");
      if (key == "allOf" && !(value.is_array() && value.size() == 1))
        fail("unsupported JSON Schema keyword 'allOf'");
      if (!kStringKeys.count(key) && !kArrayKeys.count(key) && !kObjectKeys.count(key) &&
          !kOtherKeys.count(key))
        fail("unsupported JSON Schema keyword '{}'", key);
      constraints.insert(key);
    }

    // Composition keywords stand alone (with annotations): combining them with siblings would need an
    // intersection, which the tree can't express.
    for (const char* key : {"$ref", "allOf", "anyOf", "oneOf"}) {
      if (!constraints.count(key)) continue;
      for (const auto& other : constraints)
        if (other != key) fail("JSON Schema keyword '{}' together with '{}' is not supported", key, other);
      if (std::string(key) == "$ref") return resolve_ref(schema.at(key), depth);
      if (std::string(key) == "allOf") return compile(schema.at(key)[0], depth + 1);
      const ojson& list = schema.at(key);
      if (!list.is_array() || list.empty()) fail("JSON Schema '{}' must be a non-empty array", key);
      std::vector<NodePtr> alts;
      for (const auto& sub : list) alts.push_back(compile(sub, depth + 1));
      return alt(std::move(alts));
    }

    std::vector<std::string> types;
    if (schema.contains("type")) {
      const ojson& t = schema.at("type");
      if (t.is_string())
        types.push_back(t.get<std::string>());
      else if (t.is_array() && !t.empty())
        for (const auto& x : t) types.push_back(x.is_string() ? x.get<std::string>() : x.dump());
      else
        fail("JSON Schema 'type' must be a string or a non-empty array of strings");
      for (const auto& x : types)
        if (std::find(kTypes.begin(), kTypes.end(), x) == kTypes.end())
          fail("unknown JSON Schema type '{}'", x);
    }

    if (constraints.count("enum") || constraints.count("const"))
      return compile_enum(schema, constraints, types);

    if (types.empty()) {
      // Without "type", the keywords say which kind of value is meant (a subset of what the schema allows:
      // it would accept any other kind too).
      auto any_of = [&](const std::set<std::string>& keys) {
        return std::any_of(keys.begin(), keys.end(),
                           [&](const std::string& k) { return constraints.count(k) > 0; });
      };
      if (any_of(kStringKeys)) types.push_back("string");
      if (any_of(kArrayKeys)) types.push_back("array");
      if (any_of(kObjectKeys)) types.push_back("object");
      if (types.empty()) return any_.value(opt_.max_depth);
    }
    std::vector<NodePtr> alts;
    for (const auto& t : types) alts.push_back(compile_type(schema, t, depth));
    return alt(std::move(alts));
  }

 private:
  void charge(int64_t n) {
    work_ += n;
    if (work_ > kMaxWork)
      fail("JSON schema is too large (over {} schemas, properties and enum values)", kMaxWork);
  }

  int non_negative(const ojson& schema, const char* key, int limit, int fallback) {
    if (!schema.contains(key)) return fallback;
    const ojson& v = schema.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      fail("JSON Schema '{}' must be a non-negative integer, got {}", key, v.dump());
    if (v.get<int64_t>() > limit)
      fail("JSON Schema '{}' of {} is over the limit of {}", key, v.get<int64_t>(), limit);
    return static_cast<int>(v.get<int64_t>());
  }

  NodePtr resolve_ref(const ojson& ref, int depth) {
    if (!ref.is_string()) fail("JSON Schema '$ref' must be a string");
    const std::string r = ref.get<std::string>();
    if (r.empty() || r[0] != '#')
      fail("$ref '{}' is not supported: only local references ('#/$defs/...')", r);
    if (auto it = refs_done_.find(r); it != refs_done_.end()) return it->second;
    if (std::find(ref_stack_.begin(), ref_stack_.end(), r) != ref_stack_.end())
      fail("recursive $ref '{}' is not supported", r);
    const ojson* target = nullptr;
    try {
      const ojson::json_pointer ptr(r.substr(1));
      if (root_.contains(ptr)) target = &root_.at(ptr);
    } catch (const nlohmann::json::exception&) {
      fail("$ref '{}' is not a valid JSON pointer", r);
    }
    if (!target) fail("$ref '{}' does not name a schema in this document", r);
    ref_stack_.push_back(r);
    NodePtr n = compile(*target, depth + 1);
    ref_stack_.pop_back();
    refs_done_.emplace(r, n);
    return n;
  }

  NodePtr compile_enum(const ojson& schema, const std::set<std::string>& constraints,
                       const std::vector<std::string>& types) {
    for (const auto& k : constraints)
      if (k != "enum" && k != "const" && k != "type")
        fail("JSON Schema keyword '{}' together with 'enum'/'const' is not supported", k);
    std::vector<ojson> values;
    if (schema.contains("enum")) {
      const ojson& e = schema.at("enum");
      if (!e.is_array()) fail("JSON Schema 'enum' must be an array");
      values.assign(e.begin(), e.end());
    }
    if (schema.contains("const")) {
      const ojson& c = schema.at("const");
      if (schema.contains("enum"))
        std::erase_if(values, [&](const ojson& v) { return v != c; });
      else
        values.push_back(c);
    }
    std::vector<NodePtr> alts;
    for (const auto& v : values) {
      charge(1);
      if (!types.empty() && std::none_of(types.begin(), types.end(),
                                         [&](const std::string& t) { return value_has_type(v, t); }))
        continue;
      try {
        alts.push_back(text(v.dump()));
      } catch (const nlohmann::json::exception& e) {
        fail("JSON Schema enum value can't be written as JSON: {}", e.what());
      }
    }
    return alt(std::move(alts));
  }

  NodePtr compile_type(const ojson& schema, const std::string& type, int depth) {
    if (type == "string") return compile_string(schema);
    if (type == "integer") return json::integer_node();
    if (type == "number") return json::number_node();
    if (type == "boolean") return alt({text("true"), text("false")});
    if (type == "null") return text("null");
    if (type == "array") return compile_array(schema, depth);
    return compile_object(schema, depth);
  }

  NodePtr compile_string(const ojson& schema) {
    const int min_len = non_negative(schema, "minLength", opt_.max_string_length, 0);
    const int max_len = non_negative(schema, "maxLength", opt_.max_string_length, -1);
    if (max_len >= 0 && min_len > max_len)
      fail("JSON Schema minLength {} is over maxLength {}", min_len, max_len);
    if (!schema.contains("pattern")) return json::string_node(min_len, max_len);
    const ojson& p = schema.at("pattern");
    if (!p.is_string()) fail("JSON Schema 'pattern' must be a string");
    NodePtr content;
    try {
      content = parse_regex(p.get<std::string>());
    } catch (const Error& e) {
      fail("JSON Schema 'pattern': {}", e.what());
    }
    const LengthBounds b = length_bounds(*content);
    const bool implied = b.min >= min_len && (max_len < 0 || (b.max >= 0 && b.max <= max_len));
    if (b.min >= 0 && !implied)
      fail(
          "JSON Schema 'minLength'/'maxLength' together with 'pattern' is only supported when the pattern "
          "already implies them (the pattern's strings are {} to {} characters long)",
          b.min, b.max < 0 ? std::string("unboundedly") : std::to_string(b.max));
    return json::pattern_string(content);
  }

  NodePtr compile_array(const ojson& schema, int depth) {
    const int min_items = non_negative(schema, "minItems", opt_.max_items, 0);
    const int max_items = non_negative(schema, "maxItems", opt_.max_items, -1);
    if (max_items >= 0 && min_items > max_items)
      fail("JSON Schema minItems {} is over maxItems {}", min_items, max_items);
    NodePtr item = any_.value(opt_.max_depth);
    if (schema.contains("items")) {
      const ojson& items = schema.at("items");
      if (items.is_array()) fail("JSON Schema 'items' as an array (tuple validation) is not supported");
      item = compile(items, depth + 1);
    }
    if (max_items == 0) return concat({text("["), ws_, text("]")});
    return json::braced("[", "]", repeat(item, std::max(min_items, 1), max_items, sep_), min_items == 0,
                        opt_.max_whitespace);
  }

  // Members in a fixed order, each required, optional, or (extra keys) repeated: "key": value joined by
  // commas, where the first member present has no comma before it. One alternative per possible first
  // member; the tails after it are shared.
  enum class Presence { kRequired, kOptional, kAnyNumber };
  struct Member {
    NodePtr node;
    Presence presence;
  };

  NodePtr compile_object(const ojson& schema, int depth) {
    std::vector<Member> members;
    std::vector<std::string> names;
    std::set<std::string> required;
    if (schema.contains("required")) {
      const ojson& r = schema.at("required");
      if (!r.is_array()) fail("JSON Schema 'required' must be an array of strings");
      for (const auto& x : r) {
        if (!x.is_string()) fail("JSON Schema 'required' must be an array of strings");
        required.insert(x.get<std::string>());
      }
    }
    const bool has_props = schema.contains("properties");
    if (has_props) {
      const ojson& props = schema.at("properties");
      if (!props.is_object()) fail("JSON Schema 'properties' must be an object");
      if (props.size() > kMaxProperties)
        fail("JSON schema is too large: an object with {} properties (the limit is {})", props.size(),
             kMaxProperties);
      for (const auto& [name, sub] : props.items()) {
        charge(1);
        NodePtr key = text(ojson(name).dump());
        NodePtr value = compile(sub, depth + 1);
        members.push_back({concat({key, ws_, text(":"), ws_, value}),
                           required.count(name) ? Presence::kRequired : Presence::kOptional});
        names.push_back(name);
      }
    }
    for (const auto& r : required)
      if (std::find(names.begin(), names.end(), r) == names.end())
        fail("JSON Schema required property '{}' is not listed in 'properties'", r);

    NodePtr extra_value;
    if (schema.contains("additionalProperties")) {
      const ojson& a = schema.at("additionalProperties");
      if (!(a.is_boolean() && !a.get<bool>())) extra_value = compile(a, depth + 1);
    } else if (!has_props) {
      extra_value = any_.value(std::max(opt_.max_depth - 1, 0));  // {"type": "object"}: any object
    }
    if (extra_value)
      members.push_back(
          {concat({json::string_node(0, -1), ws_, text(":"), ws_, extra_value}), Presence::kAnyNumber});

    if (members.empty()) return concat({text("{"), ws_, text("}")});
    // tails[i]: what may follow once member i-1 is settled (each piece with its leading separator).
    std::vector<NodePtr> tails(members.size() + 1);
    tails[members.size()] = empty();
    for (size_t i = members.size(); i-- > 0;) {
      const NodePtr piece = concat({sep_, members[i].node});
      NodePtr p = members[i].presence == Presence::kRequired   ? piece
                  : members[i].presence == Presence::kOptional ? optional(piece)
                                                               : repeat(piece, 0, -1);
      tails[i] = concat({p, tails[i + 1]});
    }
    std::vector<NodePtr> firsts;
    bool all_optional = true;
    for (size_t i = 0; i < members.size(); ++i) {
      const Member& m = members[i];
      const NodePtr first = m.presence == Presence::kAnyNumber ? repeat(m.node, 1, -1, sep_) : m.node;
      firsts.push_back(concat({first, tails[i + 1]}));
      if (m.presence == Presence::kRequired) {
        all_optional = false;
        break;
      }
    }
    return json::braced("{", "}", alt(std::move(firsts)), all_optional, opt_.max_whitespace);
  }

  const ojson& root_;
  const JsonOptions& opt_;
  json::AnyValue any_;
  NodePtr ws_, sep_;
  int64_t work_ = 0;
  std::vector<std::string> ref_stack_;
  std::map<std::string, NodePtr> refs_done_;
};

void check_options(const JsonOptions& o) {
  if (o.max_whitespace < 0 || o.max_depth < 1)
    fail("bad JSON grammar options: max_whitespace {} (>= 0), max_depth {} (>= 1)", o.max_whitespace,
         o.max_depth);
}

void check_size(const NodePtr& n, const JsonOptions& o) {
  if (expanded_size(n, o.max_tree_nodes + 1) > o.max_tree_nodes)
    fail("JSON schema is too large: its grammar has over {} nodes", o.max_tree_nodes);
}

}  // namespace

NodePtr json_schema_node(const nlohmann::ordered_json& schema, const JsonOptions& options) {
  check_options(options);
  SchemaCompiler c(schema, options);
  NodePtr n = c.compile(schema, 0);
  if (length_bounds(*n).min < 0) fail("JSON schema accepts no document");
  check_size(n, options);
  return n;
}

NodePtr json_object_node(const JsonOptions& options) {
  check_options(options);
  json::AnyValue any(options.max_whitespace);
  NodePtr n = any.object(options.max_depth);
  check_size(n, options);  // each level doubles the size: a large max_depth is refused, not built
  return n;
}

NodePtr choice_node(const std::vector<std::string>& choices) {
  if (choices.empty()) fail("choice list is empty");
  std::vector<NodePtr> alts;
  for (const auto& c : choices) {
    if (!decode_utf8(c)) fail("choice is not valid UTF-8");
    alts.push_back(text(c));
  }
  return alt(std::move(alts));
}

}  // namespace lp::constrain
