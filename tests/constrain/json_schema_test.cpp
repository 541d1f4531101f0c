// json_schema_node / json_object_node / choice_node against hand-written expectations: for each schema,
// documents marked valid or invalid by hand (plus sampled and mutated ones judged by a reference
// validator written here from the JSON Schema spec) must be accepted by PCRE2(to_pcre(tree)) exactly when
// expected, and whatever the tree accepts must parse as JSON and satisfy the schema.
#include "constrain/json_schema.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "pcre_oracle.h"
#include "util/string_edits.h"

namespace lp::constrain {
namespace {

using ojson = nlohmann::ordered_json;
using testing::Pcre;

int64_t codepoints(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool has_type(const ojson& v, const std::string& t) {
  if (t == "string") return v.is_string();
  if (t == "integer")  // a mathematical integer, however the parser stored it
    return v.is_number_integer() || (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>());
  if (t == "number") return v.is_number();
  if (t == "boolean") return v.is_boolean();
  if (t == "null") return v.is_null();
  if (t == "object") return v.is_object();
  if (t == "array") return v.is_array();
  return false;
}

// Containers nested in v (0 for a scalar).
int nesting(const ojson& v) {
  if (!v.is_structured()) return 0;
  int inner = 0;
  for (const auto& x : v) inner = std::max(inner, nesting(x));
  return 1 + inner;
}

// The reference: JSON Schema semantics of the supported keywords (any_depth -1). With any_depth >= 0, also
// the documented form of what the grammar writes: listed properties in schema order and before extra keys,
// no extra keys unless additionalProperties allows them (or the object schema lists no properties), type
// inferred from the keywords when absent, numbers within the digit bounds, and "any value" nested at most
// any_depth containers deep.
// Every number in v within the documented digit bounds: 19 integer digits, 16 fraction digits, 2 exponent
// digits (as v dumps; the callers compare compact documents).
bool numbers_bounded(const ojson& v) {
  static const Pcre bounded(R"(-?(0|[1-9]\d{0,18})(\.\d{1,16})?([eE][+-]?\d{1,2})?)");
  if (v.is_number()) return bounded.full_match(v.dump());
  if (!v.is_structured()) return true;  // (nlohmann iterates a scalar as itself)
  for (const auto& x : v)
    if (!numbers_bounded(x)) return false;
  return true;
}

bool valid(const ojson& s, const ojson& v, const ojson& root, int any_depth) {
  const bool produced = any_depth >= 0;
  // "Any value" (true, no type keywords, missing items, an object schema without properties): nested at
  // most any_depth deep, numbers bounded.
  auto any_ok = [&](const ojson& x, int depth) { return nesting(x) <= depth && numbers_bounded(x); };
  if (s.is_boolean()) return s.get<bool>() && (!produced || any_ok(v, any_depth));
  if (produced) {
    bool typed = false;
    for (const char* k :
         {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required",
          "additionalProperties", "items", "minItems", "maxItems", "pattern", "minLength", "maxLength"})
      typed = typed || s.contains(k);
    if (!typed && !any_ok(v, any_depth)) return false;
    if (v.is_array() && !s.contains("items"))
      for (const auto& x : v)
        if (!any_ok(x, any_depth)) return false;
    if (v.is_object() && !s.contains("properties") && !s.contains("additionalProperties"))
      for (const auto& x : v)
        if (!any_ok(x, any_depth - 1)) return false;
    // A number under a type (not an enum value, written as the schema has it) keeps the digit bounds.
    if (v.is_number() && s.contains("type") && !s.contains("enum") && !s.contains("const") &&
        !numbers_bounded(v))
      return false;
  }
  if (s.contains("$ref"))
    return valid(root.at(ojson::json_pointer(s["$ref"].get<std::string>().substr(1))), v, root, any_depth);
  if (s.contains("anyOf") || s.contains("oneOf")) {
    int n = 0;
    for (const auto& sub : s.contains("anyOf") ? s["anyOf"] : s["oneOf"]) n += valid(sub, v, root, any_depth);
    return s.contains("anyOf") ? n > 0 : n == 1;
  }
  if (s.contains("allOf")) {
    for (const auto& sub : s["allOf"])
      if (!valid(sub, v, root, any_depth)) return false;
    return true;
  }
  // In the produced form an enum value is written exactly as the schema's value dumps (1, never 1.0).
  auto same = [&](const ojson& x) { return produced ? x.dump() == v.dump() : x == v; };
  if (s.contains("const") && !same(s["const"])) return false;
  if (s.contains("enum") && std::none_of(s["enum"].begin(), s["enum"].end(), same)) return false;
  if (s.contains("type")) {
    const ojson& t = s["type"];
    bool any = false;
    for (const auto& x : t.is_array() ? t : ojson::array({t})) any = any || has_type(v, x.get<std::string>());
    if (!any) return false;
  } else if (produced && !s.contains("enum") && !s.contains("const")) {
    if ((s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) &&
        !v.is_object())
      return false;
    if ((s.contains("items") || s.contains("minItems") || s.contains("maxItems")) && !v.is_array())
      return false;
    if ((s.contains("pattern") || s.contains("maxLength") || s.contains("minLength")) && !v.is_string())
      return false;
  }
  if (v.is_string()) {
    const std::string str = v.get<std::string>();
    if (s.contains("minLength") && codepoints(str) < s["minLength"].get<int64_t>()) return false;
    if (s.contains("maxLength") && codepoints(str) > s["maxLength"].get<int64_t>()) return false;
    if (s.contains("pattern") && !Pcre(s["pattern"].get<std::string>(), true).full_match(str)) return false;
  }
  if (v.is_array()) {
    if (s.contains("minItems") && static_cast<int64_t>(v.size()) < s["minItems"].get<int64_t>()) return false;
    if (s.contains("maxItems") && static_cast<int64_t>(v.size()) > s["maxItems"].get<int64_t>()) return false;
    if (s.contains("items"))
      for (const auto& x : v)
        if (!valid(s["items"], x, root, any_depth)) return false;
  }
  if (v.is_object()) {
    const ojson props = s.value("properties", ojson::object());
    for (const auto& r : s.value("required", ojson::array()))
      if (!v.contains(r.get<std::string>())) return false;
    size_t next_listed = 0;  // produced form: listed keys in schema order, extras after them
    std::vector<std::string> order;
    for (const auto& [k, _] : props.items()) order.push_back(k);
    bool seen_extra = false;
    for (const auto& [k, x] : v.items()) {
      if (props.contains(k)) {
        if (!valid(props[k], x, root, any_depth)) return false;
        if (produced) {
          if (seen_extra) return false;
          while (next_listed < order.size() && order[next_listed] != k) ++next_listed;
          if (next_listed == order.size()) return false;
          ++next_listed;
        }
        continue;
      }
      seen_extra = true;
      if (s.contains("additionalProperties")) {
        if (!valid(s["additionalProperties"], x, root, any_depth)) return false;
      } else if (produced && !props.empty()) {
        return false;
      }
    }
  }
  return true;
}

// A shallower "any value" (2) than the default 6: to_pcre prints every shared subtree at each use, and PCRE2
// refuses patterns of the depth-6 size.
struct SchemaCase {
  std::string name;
  std::string schema;
  std::vector<std::pair<std::string, bool>> docs;  // the expectation, by hand
  int any_depth = 2;
};

JsonOptions case_options(const SchemaCase& c) {
  JsonOptions o;
  o.max_depth = c.any_depth;
  return o;
}

const std::vector<SchemaCase>& schema_cases() {
  static const std::vector<SchemaCase> c = {
      {"flat object",
       R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"ok":{"type":"boolean"}},
           "required":["name","age","ok"]})",
       {{R"({"name":"Bob","age":42,"ok":true})", true},
        {"{ \"name\" : \"A\\\"b\\u00e9\\ud83d\\ude00\" ,\n\"age\":-7,\t\"ok\":false }", true},
        {R"({  "name"  :  "x"  ,  "age"  :  0  ,  "ok"  :  true  })", true},
        {R"({   "name":"x","age":0,"ok":true})", false},  // three spaces in one gap
        {R"( {"name":"x","age":0,"ok":true})", false},    // whitespace before the document
        {"{\"name\":\"x\",\"age\":0,\"ok\":true}\n", false},
        {R"({"name":"Bob","age":42})", false},
        {R"({"age":42,"name":"Bob","ok":true})", false},  // not in schema order
        {R"({"name":"Bob","age":42,"ok":true,"x":1})", false},
        {R"({"name":"Bob","age":4.5,"ok":true})", false},
        {R"({"name":"Bob","age":"42","ok":true})", false},
        {R"({"name":"Bob","age":01,"ok":true})", false},
        {R"({"name":"Bob","age":1234567890123456789,"ok":true})", true},
        {R"({"name":"Bob","age":12345678901234567890,"ok":true})", false},  // 20 digits
        {"{\"name\":\"a\tb\",\"age\":1,\"ok\":true}", false},               // raw control character
        {R"({"name":"\ud800","age":1,"ok":true})", false},                  // lone surrogate escape
        {R"({"name":"\x","age":1,"ok":true})", false},
        {R"({"name":"Bob","age":42,"ok":true,})", false}}},
      {"nested objects and arrays",
       R"({"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer"},
           "tags":{"type":"array","items":{"type":"string"},"maxItems":2}},"required":["id"]}},"required":["user"]})",
       {{R"({"user":{"id":1}})", true},
        {R"({"user":{"id":1,"tags":[]}})", true},
        {R"({"user":{"id":1,"tags":["a", "b"]}})", true},
        {R"({"user":{"id":1,"tags":["a","b","c"]}})", false},
        {R"({"user":{"tags":["a"]}})", false},
        {R"({"user":{"id":1,"tags":[1]}})", false},
        {R"({"user":{}})", false}}},
      {"array with min and max items",
       R"({"type":"array","items":{"type":"number"},"minItems":1,"maxItems":3})",
       {{"[1]", true},
        {"[]", false},
        {"[1,2.5,-3e10]", true},
        {"[ 1 , 2 ]", true},
        {"[1,2,3,4]", false},
        {"[1,]", false},
        {"[0.1234567890123456]", true},
        {"[0.12345678901234567]", false},
        {"[1e99]", true},
        {"[1E-99]", true},
        {"[1e100]", false},
        {"[1e999]", false},
        {"[.5]", false},
        {"[1.]", false}}},
      {"enum of mixed values",
       R"({"enum":["red","green",1,null,{"a":[1,2]},"say \"hi\""]})",
       {{R"("red")", true},
        {"1", true},
        {"null", true},
        {R"({"a":[1,2]})", true},
        {R"({"a": [1,2]})", false},
        {R"("blue")", false},
        {R"("say \"hi\"")", true},
        {"1.0", false}}},
      {"integer enum values as written",
       R"({"type":"integer","enum":[1,2.5,3.0,1e300,"4"]})",
       {{"1", true}, {"2.5", false}, {"3.0", true}, {"3", false}, {"1e+300", true}, {"\"4\"", false}}},
      {"enum filtered by type",
       R"({"type":"string","enum":["a",2,"b"]})",
       {{R"("a")", true}, {R"("b")", true}, {"2", false}}},
      {"const object",
       R"({"const":{"x":[true,null],"y":"z"}})",
       {{R"({"x":[true,null],"y":"z"})", true}, {R"({"y":"z","x":[true,null]})", false}, {"{}", false}}},
      {"anyOf with null",
       R"({"anyOf":[{"type":"string","maxLength":3},{"type":"null"}]})",
       {{R"("abc")", true}, {R"("a\nb")", true}, {R"("abcd")", false}, {"null", true}, {"0", false}}},
      {"type list",
       R"({"type":["string","null"],"minLength":2})",
       {{R"("ab")", true}, {R"("a")", false}, {"null", true}, {"true", false}}},
      {"$ref to $defs",
       R"({"$defs":{"Pt":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}},
           "type":"object","properties":{"a":{"$ref":"#/$defs/Pt"},"b":{"$ref":"#/definitions/Q"}},"required":["a"],
           "definitions":{"Q":{"$ref":"#/$defs/Pt"}}})",
       {{R"({"a":{"x":1,"y":2}})", true},
        {R"({"a":{"x":1,"y":2},"b":{"x":0.5,"y":-1}})", true},
        {R"({"a":{"x":1}})", false},
        {R"({"b":{"x":1,"y":2}})", false}}},
      {"string with maxLength, minLength and pattern",
       R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{3}-\\d{3}$","maxLength":7},
           "note":{"type":"string","maxLength":5,"minLength":1}},"required":["code","note"]})",
       {{R"({"code":"ABC-123","note":"hi"})", true},
        {R"({"code":"ABC-1234","note":"hi"})", false},
        {R"({"code":"abc-123","note":"hi"})", false},
        {R"({"code":"ABC-123","note":""})", false},
        {"{\"code\":\"ABC-123\",\"note\":\"é\\n😀ab\"}", true},  // 5 characters, an escape counts one
        {"{\"code\":\"ABC-123\",\"note\":\"é\\n😀abc\"}", false},
        {R"({"code":"ABC-123","note":"\ud83d\ude00\u0041\"\\"})", true}}},
      {"pattern with characters JSON escapes",
       R"({"type":"string","pattern":"a[\"\\\\]b\\n?[^x]?"})",
       {{R"("a\"b")", true},
        {R"("a\\b\n")", true},
        {"\"a\\\"b\n\"", false},
        {R"("a"b")", false},
        {R"("a\\b\n\t")", true},
        {R"("a\\b\n\u0001")", true},
        {R"("a\\b\nx")", false},
        {R"("a\u0022b")", false}}},  // the grammar writes each character one way: \" not \u0022
      {"pydantic model",
       R"({"$defs":{"Color":{"enum":["red","green"],"title":"Color","type":"string"},
           "Address":{"properties":{"street":{"title":"Street","type":"string"},
             "zip":{"anyOf":[{"type":"string","pattern":"^\\d{5}$"},{"type":"null"}],"default":null,"title":"Zip"}},
             "required":["street"],"title":"Address","type":"object"}},
           "properties":{"name":{"title":"Name","type":"string","maxLength":20,"description":"who"},
             "age":{"title":"Age","type":"integer"},"color":{"$ref":"#/$defs/Color"},
             "tags":{"items":{"type":"string"},"title":"Tags","type":"array"},
             "address":{"$ref":"#/$defs/Address"},
             "score":{"anyOf":[{"type":"number"},{"type":"null"}],"default":null,"title":"Score"}},
           "required":["name","age","color","tags","address"],"title":"Person","type":"object",
           "$schema":"https://json-schema.org/draft/2020-12/schema"})",
       {{R"({"name":"Ann","age":30,"color":"red","tags":[],"address":{"street":"Main"}})", true},
        {R"({"name":"Ann","age":30,"color":"green","tags":["x","y"],"address":{"street":"Main","zip":"12345"},"score":1.5})",
         true},
        {R"({"name":"Ann","age":30,"color":"red","tags":[],"address":{"street":"M","zip":null},"score":null})",
         true},
        {R"({"name":"Ann","age":30,"color":"blue","tags":[],"address":{"street":"Main"}})", false},
        {R"({"name":"Ann","age":30,"color":"red","tags":[],"address":{"street":"Main","zip":"1234"}})",
         false},
        {R"({"name":"Annnnnnnnnnnnnnnnnnnn","age":30,"color":"red","tags":[],"address":{"street":"Main"}})",
         false},
        {R"({"name":"Ann","age":30,"color":"red","tags":[]})", false}}},
      {"additionalProperties schema",
       R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":{"type":"string"}})",
       {{R"({"a":1})", true},
        {R"({"a":1,"b":"x","c":"y"})", true},
        {R"({"b":"x","a":1})", false},
        {R"({"a":1,"b":2})", false},
        {R"({"a":1,"a":"x"})", false},       // an extra key never repeats a listed one...
        {R"({"a":1,"\u0061":"x"})", false},  // ...nor spells it with an escape
        {R"({"a":1,"ab":"x","":"y"})", true}}},
      {"extra keys avoid listed names sharing prefixes",
       R"({"type":"object","properties":{"ab":{"type":"null"},"abc":{"type":"null"},"b":{"type":"null"}},
           "additionalProperties":{"type":"integer"}})",
       {{R"({"a":1})", true},
        {R"({"abcd":1})", true},
        {R"({"c":1,"":2})", true},
        {R"({"ab":null,"abc":1})", false},
        {R"({"ab":1})", false},
        {R"({"abc":1})", false},
        {R"({"b":1})", false},
        {R"({"b":null,"ba":1})", true},
        {R"({"a\n":1})", true},
        {R"({"a\u000a":1})", false}}},  // controls written the one way nlohmann does
      {"additionalProperties with all listed optional",
       R"({"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":true})",
       {{"{}", true},
        {R"({"a":1})", true},
        {R"({"z":[1,"q"]})", true},
        {R"({"a":1,"z":2,"y":{}})", true},
        {R"({"a":true})", false},
        {R"({"aa":true})", true},
        {R"({,"z":2})", false},
        {R"({"a":1,,"z":2})", false},
        {R"({"z":[[]]})", false}},
       /*any_depth=*/1},
      {"any object",
       R"({"type":"object"})",
       {{"{}", true},
        {R"({"a":{"b":1},"c":[1,"x",null]})", true},
        {"[]", false},
        {R"({"a":1,})", false},
        {R"({"a":{"b":[1]}})", false}}},  // deeper than max_depth 2
      {"no type: any value",
       R"({"title":"anything"})",
       {{"1", true},
        {R"("s")", true},
        {"[1,\"x\"]", true},
        {"[1,[2]]", false},
        {"{\"a\":null}", true},
        {"{\"a\":{}}", false},
        {"nul", false}},
       /*any_depth=*/1},
      {"true schema", "true", {{"1", true}, {"[{}]", false}, {"[]", true}, {"", false}}, /*any_depth=*/1},
      {"no type, object keywords",
       R"({"properties":{"a":{"type":"null"}},"required":["a"]})",
       {{R"({"a":null})", true}, {"null", false}}},
      {"oneOf with a discriminator annotation",
       R"({"oneOf":[{"type":"object","properties":{"kind":{"const":"a"}},"required":["kind"]},
           {"type":"object","properties":{"kind":{"const":"b"},"n":{"type":"integer"}},"required":["kind","n"]}],
           "discriminator":{"propertyName":"kind"}})",
       {{R"({"kind":"a"})", true},
        {R"({"kind":"b","n":1})", true},
        {R"({"kind":"b"})", false},
        {R"({"kind":"c"})", false},
        {R"({"kind":"a","n":1})", false}}},
      {"items false", R"({"type":"array","items":false})", {{"[]", true}, {"[1]", false}}},
  };
  return c;
}

std::vector<std::string> mutations(const std::string& s, std::mt19937& rng) {
  static const std::string inserts = " \n\t,:{}[]\"\\0aeu-.";
  const auto any = [&](const std::string&, size_t) { return inserts[rng() % inserts.size()]; };
  return lp::test::one_edit_mutations(s, rng, 12, any, any);
}

// Whatever the tree accepts is JSON the schema accepts, in the documented form.
void expect_sound(const std::string& doc, const ojson& schema, int any_depth) {
  ojson parsed;
  try {
    parsed = ojson::parse(doc);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "accepted a document that does not parse: " << doc << " (" << e.what() << ")";
    return;
  }
  EXPECT_TRUE(valid(schema, parsed, schema, -1)) << "accepted an invalid document: " << doc;
  EXPECT_TRUE(valid(schema, parsed, schema, any_depth))
      << "accepted a document outside the documented form: " << doc;
}

TEST(JsonSchema, HandWrittenDocumentsAreJudgedAsExpected) {
  for (const auto& c : schema_cases()) {
    SCOPED_TRACE(c.name);
    const ojson schema = ojson::parse(c.schema);
    const NodePtr tree = json_schema_node(schema, case_options(c));
    const Pcre re(to_pcre(*tree));
    ASSERT_TRUE(re.ok()) << re.error();
    for (const auto& [doc, want] : c.docs) {
      EXPECT_EQ(re.full_match(doc), want) << doc;
      if (re.full_match(doc)) expect_sound(doc, schema, c.any_depth);
    }
  }
}

TEST(JsonSchema, SampledAndMutatedDocumentsAgreeWithTheReference) {
  std::mt19937 rng(77);
  int accepted = 0, must_accept = 0;
  for (const auto& c : schema_cases()) {
    SCOPED_TRACE(c.name);
    const ojson schema = ojson::parse(c.schema);
    const NodePtr tree = json_schema_node(schema, case_options(c));
    const Pcre re(to_pcre(*tree));
    std::vector<std::string> docs;
    for (const auto& [doc, want] : c.docs) docs.push_back(doc);
    for (int i = 0; i < 60; ++i) {
      const auto s = testing::sample(*tree, rng);
      ASSERT_TRUE(s.has_value());
      EXPECT_TRUE(re.full_match(*s)) << *s;
      docs.push_back(*s);
    }
    const size_t originals = docs.size();
    for (size_t i = 0; i < originals; ++i)
      for (auto& m : mutations(docs[i], rng)) docs.push_back(std::move(m));
    for (const auto& doc : docs) {
      if (re.full_match(doc)) {
        ++accepted;
        expect_sound(doc, schema, c.any_depth);
        continue;
      }
      // A rejected document that is compact JSON in the documented form and valid must not be rejected.
      try {
        const ojson parsed = ojson::parse(doc);
        if (parsed.dump() == doc && valid(schema, parsed, schema, c.any_depth)) {
          ++must_accept;
          ADD_FAILURE() << "rejected a valid compact document: " << doc;
        }
      } catch (const std::exception&) {
      }
    }
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_EQ(must_accept, 0);
}

TEST(JsonSchema, OptionalPropertiesInEverySubset) {
  const std::vector<std::string> names = {"a", "b", "c", "d"};
  const std::vector<std::vector<std::string>> required_sets = {
      {}, {"a"}, {"c"}, {"a", "c"}, {"b", "d"}, {"d"}, {"a", "b", "c", "d"}};
  for (bool extras : {false, true}) {
    for (const auto& required : required_sets) {
      ojson schema = {{"type", "object"}, {"properties", ojson::object()}, {"required", required}};
      for (const auto& n : names) schema["properties"][n] = {{"type", "integer"}};
      if (extras) schema["additionalProperties"] = {{"type", "boolean"}};
      const Pcre re(to_pcre(*json_schema_node(schema)));
      for (int subset = 0; subset < 16; ++subset) {
        for (int extra_count : {0, 1, 2}) {
          if (!extras && extra_count > 0) continue;
          std::string doc = "{";
          bool want = true;
          for (size_t i = 0; i < names.size(); ++i) {
            const bool present = subset & (1 << i);
            if (!present && std::find(required.begin(), required.end(), names[i]) != required.end())
              want = false;
            if (present) doc += (doc.size() > 1 ? ",\"" : "\"") + names[i] + "\":" + std::to_string(i);
          }
          for (int e = 0; e < extra_count; ++e)
            doc += (doc.size() > 1 ? "," : "") + std::string("\"x\":true");
          doc += "}";
          EXPECT_EQ(re.full_match(doc), want) << schema.dump() << " vs " << doc;
        }
      }
    }
  }
}

TEST(JsonSchema, EachUnsupportedKeywordIsNamed) {
  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"({"type":"integer","minimum":0})", "minimum"},
      {R"({"type":"integer","maximum":9})", "maximum"},
      {R"({"type":"number","exclusiveMinimum":0})", "exclusiveMinimum"},
      {R"({"type":"integer","multipleOf":2})", "multipleOf"},
      {R"({"type":"string","format":"date-time"})", "format"},
      {R"({"type":"object","patternProperties":{"^a":{}}})", "patternProperties"},
      {R"({"type":"array","uniqueItems":true})", "uniqueItems"},
      {R"({"if":{"type":"string"},"then":{"maxLength":2}})", "if"},
      {R"({"not":{"type":"null"}})", "not"},
      {R"({"allOf":[{"type":"string"},{"maxLength":2}]})", "allOf"},
      {R"({"type":"object","minProperties":1})", "minProperties"},
      {R"({"type":"object","propertyNames":{"pattern":"a"}})", "propertyNames"},
      {R"({"type":"array","prefixItems":[{}]})", "prefixItems"},
      {R"({"type":"array","contains":{}})", "contains"},
      {R"({"$defs":{"N":{"type":"object","properties":{"next":{"$ref":"#/$defs/N"}}}},"$ref":"#/$defs/N"})",
       "recursive $ref"},
      {R"({"type":"object","properties":{"kids":{"type":"array","items":{"$ref":"#"}}}})", "recursive $ref"},
      {R"({"$ref":"https://example.com/s.json"})", "$ref"},
      {R"({"$ref":"#/$defs/Missing"})", "$ref"},
      {R"({"type":"array","items":[{"type":"string"}]})", "items"},
      {R"({"type":"strin"})", "strin"},
      {R"({"type":"object","properties":{"a":{}},"required":["b"]})", "'b'"},
      {R"({"type":"string","pattern":"(a)\\1"})", "backreference"},
      {R"({"type":"string","pattern":"a+","maxLength":3})", "maxLength"},
      {R"({"type":"array","minItems":3,"maxItems":2})", "minItems"},
      {"false", "accepts no document"},
      {R"({"enum":[]})", "accepts no document"},
      {R"({"anyOf":[{"type":"string"}],"type":"string"})", "anyOf"},
  };
  for (const auto& [schema, word] : refused) {
    try {
      json_schema_node(ojson::parse(schema));
      ADD_FAILURE() << "accepted " << schema;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << schema << " -> " << e.what();
    }
  }
  // Named by the message the issue asks for.
  try {
    json_schema_node(ojson::parse(R"({"type":"integer","minimum":0})"));
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unsupported JSON Schema keyword 'minimum'");
  }
}

TEST(JsonSchema, HostileSchemasAreRefusedQuickly) {
  double seconds = 0;  // spent refusing; building the hostile schemas is the test's own work
  auto refused = [&seconds](const ojson& schema, const std::string& word) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      json_schema_node(schema);
      ADD_FAILURE() << "accepted a hostile schema: " << schema.dump().substr(0, 200);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  ojson deep = {{"type", "string"}};
  for (int i = 0; i < 2000; ++i) deep = {{"type", "array"}, {"items", deep}};
  refused(deep, "nested deeper");
  ojson big_enum = {{"enum", ojson::array()}};
  for (int i = 0; i < 200000; ++i) big_enum["enum"].push_back(i);
  refused(big_enum, "too large");
  ojson many = {{"type", "object"}, {"properties", ojson::object()}};
  for (int i = 0; i < 5000; ++i) many["properties"]["p" + std::to_string(i)] = {{"type", "integer"}};
  refused(many, "too large");
  many["properties"].erase("p999");
  while (many["properties"].size() > 999) many["properties"].erase(many["properties"].begin());
  refused(many, "too large");  // under the property limit, over the size limit: optional members pair up
  // Each definition uses the previous one four times: 4^10 copies once inlined.
  ojson doubling = {{"$defs", ojson::object()}};
  doubling["$defs"]["d0"] = {{"type", "integer"}};
  for (int i = 1; i <= 10; ++i) {
    const std::string prev = "#/$defs/d" + std::to_string(i - 1);
    ojson props = ojson::object();
    for (const char* p : {"a", "b", "c", "d"}) props[p] = {{"$ref", prev}};
    doubling["$defs"]["d" + std::to_string(i)] = {{"type", "object"}, {"properties", props}};
  }
  doubling["$ref"] = "#/$defs/d10";
  refused(doubling, "too large");
  refused({{"type", "array"}, {"maxItems", 5000}}, "maxItems");
  refused({{"type", "string"}, {"maxLength", 1 << 20}}, "maxLength");
  EXPECT_LT(seconds, 5.0);
}

TEST(JsonSchema, WhitespaceBoundFollowsTheOptions) {
  JsonOptions none;
  none.max_whitespace = 0;
  const Pcre compact(
      to_pcre(*json_schema_node(ojson::parse(R"({"type":"array","items":{"type":"integer"}})"), none)));
  EXPECT_TRUE(compact.full_match("[1,2]"));
  EXPECT_FALSE(compact.full_match("[1, 2]"));
  JsonOptions four;
  four.max_whitespace = 4;
  const Pcre loose(
      to_pcre(*json_schema_node(ojson::parse(R"({"type":"array","items":{"type":"integer"}})"), four)));
  EXPECT_TRUE(loose.full_match("[ \n\t 1    ,2]"));
  EXPECT_FALSE(loose.full_match("[     1]"));
}

TEST(JsonObject, AnyObjectNestedUpToMaxDepth) {
  JsonOptions two;  // PCRE2 can't compile the default depth 6 as to_pcre prints it
  two.max_depth = 2;
  const Pcre re(to_pcre(*json_object_node(two)));
  ASSERT_TRUE(re.ok()) << re.error();
  for (const char* yes : {"{}", R"({"a":1})", R"({"a":{"b":null},"d":"e\u00e9","c":[1,"x"]})",
                          "{ \"x\" : [ ] }", R"({"1":{"2":3}})", R"({"a":[]})"})
    EXPECT_TRUE(re.full_match(yes)) << yes;
  for (const char* no :
       {"[1]", "1", R"({"a":1,})", R"({a:1})", R"({"1":{"2":{}}})", R"({"a":[[1]]})", " {}", "{}\n"})
    EXPECT_FALSE(re.full_match(no)) << no;
}

TEST(JsonObject, DepthThatWouldExplodeIsRefused) {
  JsonOptions deep;
  deep.max_depth = 40;  // 2^40 nodes once every shared level is counted at each use
  EXPECT_THROW(json_object_node(deep), Error);
  JsonOptions bad;
  bad.max_depth = 0;
  EXPECT_THROW(json_object_node(bad), Error);
}

TEST(JsonObject, SamplesAtTheDefaultDepthParseAsObjects) {
  std::mt19937 rng(5);
  const NodePtr tree = json_object_node();
  for (int i = 0; i < 300; ++i) {
    const auto s = testing::sample(*tree, rng);
    ASSERT_TRUE(s.has_value());
    try {
      const ojson v = ojson::parse(*s);
      EXPECT_TRUE(v.is_object()) << *s;
      EXPECT_LE(nesting(v), 6) << *s;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "does not parse: " << *s << " (" << e.what() << ")";
    }
  }
}

TEST(Choice, ExactlyOneOfTheStrings) {
  const Pcre re(to_pcre(*choice_node({"yes", "no", "a|b (c)*", "", "日本"})));
  for (const char* yes : {"yes", "no", "a|b (c)*", "", "日本"}) EXPECT_TRUE(re.full_match(yes)) << yes;
  for (const char* no : {"ye", "yesno", "a", "b (c)", "日"}) EXPECT_FALSE(re.full_match(no)) << no;
  EXPECT_THROW(choice_node({}), Error);
  EXPECT_THROW(choice_node({"\xc3"}), Error);
}

}  // namespace
}  // namespace lp::constrain
