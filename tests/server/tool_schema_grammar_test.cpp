// The tool_choice schemas (server/tool_parser.h) through the constrained decoder's own front and back end
// (constrain/json_schema.h, constrain/grammar.h): every output the grammar accepts is read back as the calls
// it spells, and the outputs a tool's schema forbids (unknown name, missing argument, too many calls without
// parallel_tool_calls) are never accepted.
#include <gtest/gtest.h>

#include "constrain/grammar.h"
#include "constrain/json_schema.h"
#include "server/tool_parser.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/test_util.h"

namespace lp::server {
namespace {

std::shared_ptr<const constrain::Vocabulary> demo_vocab() {
  static lp::test::TempDir* dir = [] {
    auto* d = new lp::test::TempDir("tool-schema-tok");
    text::write_demo_tokenizer(d->path(), 4096, 5);
    return d;
  }();
  static const text::Tokenizer tok = text::Tokenizer::from_dir(dir->path());
  static const auto vocab = std::make_shared<const constrain::Vocabulary>(tok);
  return vocab;
}

std::shared_ptr<const constrain::Grammar> grammar_of(const nlohmann::ordered_json& schema) {
  return constrain::Grammar::compile(constrain::json_schema_node(schema), demo_vocab());
}

const std::vector<ToolSpec>& tools() {
  static const auto specs = validate_tools(nlohmann::ordered_json::parse(R"([
    {"type": "function", "function": {"name": "get_weather",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "now"}},
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
     "properties": {"item": {"$ref": "#/$defs/Item"}}, "required": ["item"],
     "$defs": {"Item": {"type": "string", "maxLength": 8}}}}}])"));
  return specs;
}

TEST(ToolSchemaGrammar, RequiredAcceptsExactlyListsOfTheTools) {
  auto g = grammar_of(required_tools_schema(tools(), true));
  struct Ok {
    std::string text;
    std::vector<std::string> names;
  };
  for (
      const Ok& ok : std::vector<Ok>{
          {R"([{"name": "now", "parameters": {}}])", {"now"}},
          {R"([{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "lookup", "parameters": {"item": "abc"}}])",
           {"get_weather", "lookup"}},
          {R"([{"name":"now","parameters":{}},{"name":"now","parameters":{}}])", {"now", "now"}}}) {
    EXPECT_TRUE(g->matches(ok.text)) << ok.text;
    auto calls = calls_from_required_output(ok.text);
    ASSERT_TRUE(calls) << ok.text;
    ASSERT_EQ(calls->size(), ok.names.size());
    for (size_t i = 0; i < ok.names.size(); ++i) EXPECT_EQ((*calls)[i].name, ok.names[i]);
  }
  for (std::string bad :
       {"[]", R"([{"name": "send_email", "parameters": {}}])",
        R"([{"name": "get_weather", "parameters": {}}])",                   // city is required
        R"([{"name": "lookup", "parameters": {"item": "far too long"}}])",  // $ref'd maxLength
        R"([{"name": "now"}])", R"({"name": "now", "parameters": {}})",
        R"([{"name": "now", "parameters": {}, "extra": 1}])"})
    EXPECT_FALSE(g->matches(bad)) << bad;
}

TEST(ToolSchemaGrammar, OneCallWithoutParallelToolCalls) {
  auto g = grammar_of(required_tools_schema(tools(), false));
  EXPECT_TRUE(g->matches(R"([{"name": "now", "parameters": {}}])"));
  EXPECT_FALSE(g->matches(R"([{"name": "now", "parameters": {}}, {"name": "now", "parameters": {}}])"));
}

TEST(ToolSchemaGrammar, NamedIsTheFunctionsParameters) {
  auto g = grammar_of(named_tool_schema(tools()[0]));
  EXPECT_TRUE(g->matches(R"({"city": "Oslo"})"));
  EXPECT_FALSE(g->matches("{}"));
  EXPECT_FALSE(g->matches(R"({"city": 3})"));
  auto empty = grammar_of(named_tool_schema(tools()[1]));  // no parameters: the empty object
  EXPECT_TRUE(empty->matches("{}"));
}

}  // namespace
}  // namespace lp::server
