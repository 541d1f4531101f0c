// Tool calling without a model: the hermes / llama3_json / mistral parsers on vLLM-style outputs (expected
// calls written out by hand), the streaming extractor against the whole-text parser on every way of cutting
// the text into 1-3 byte deltas (and never a marker or call JSON leaked as content), the constrained-mode
// schemas, tools validation and tool_choice rules, and the reply JSON.
#include "server/tool_parser.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "server/api_error.h"
#include "server/tool_calls.h"

namespace lp::server {
namespace {

using ojson = nlohmann::ordered_json;
using json = nlohmann::json;
using K = ToolParserKind;

struct Expected {
  std::string name, arguments;
};

void expect_calls(const ExtractedToolCalls& r, const std::string& content, const std::vector<Expected>& calls,
                  K kind) {
  EXPECT_EQ(r.content, content);
  ASSERT_EQ(r.calls.size(), calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(r.calls[i].name, calls[i].name) << i;
    EXPECT_EQ(r.calls[i].arguments, calls[i].arguments) << i;
    if (kind == K::kMistral) {
      EXPECT_EQ(r.calls[i].id.size(), 9u);
    } else {
      EXPECT_EQ(r.calls[i].id.rfind("chatcmpl-tool-", 0), 0u) << r.calls[i].id;
      EXPECT_EQ(r.calls[i].id.size(), 14u + 32u);
    }
  }
  for (size_t i = 1; i < r.calls.size(); ++i) EXPECT_NE(r.calls[i].id, r.calls[0].id);
}

// ---- whole text ----

TEST(HermesParser, OneCall) {
  auto r = extract_tool_calls(K::kHermes,
                              "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
                              "\"unit\": \"c\"}}\n</tool_call>");
  expect_calls(r, "", {{"get_weather", R"({"city":"Paris","unit":"c"})"}}, K::kHermes);
}

TEST(HermesParser, SeveralCallsAndContentAround) {
  auto r = extract_tool_calls(
      K::kHermes,
      "Let me check both.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, 2]}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\nDone.");
  expect_calls(r, "Let me check both.Done.", {{"a", R"({"x":[1,2]})"}, {"b", "{}"}}, K::kHermes);
}

TEST(HermesParser, UnicodeArgumentsStayUtf8) {
  auto r = extract_tool_calls(K::kHermes,
                              "<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"caf\u00e9 "
                              "\u6771\u4eac \\ud83d\\ude00 \\\"x\\\"\"}}</tool_call>");
  expect_calls(r, "", {{"search", "{\"q\":\"caf\u00e9 \u6771\u4eac \U0001F600 \\\"x\\\"\"}"}}, K::kHermes);
}

TEST(HermesParser, MalformedCallStaysContent) {
  for (std::string bad : {"<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": }</tool_call>",
                          "<tool_call>{\"arguments\": {}}</tool_call>",                  // no name
                          "<tool_call>{\"name\": \"f\", \"arguments\": 3}</tool_call>",  // not an object
                          "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}",      // cut short
                          "<tool_call>", "Hi <tool_call"})
    expect_calls(extract_tool_calls(K::kHermes, bad), bad, {}, K::kHermes);
}

TEST(HermesParser, UnclosedLastCallIsACall) {
  // vLLM's regex takes `<tool_call>` to the end of the text when the closing tag never came.
  expect_calls(
      extract_tool_calls(K::kHermes, "x <tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"}\"}}"), "x",
      {{"f", R"({"s":"}"})"}}, K::kHermes);
}

TEST(HermesParser, ClosingTagInsideAnArgumentDoesNotEndTheCall) {
  expect_calls(extract_tool_calls(
                   K::kHermes,
                   "<tool_call>{\"name\": \"echo\", \"arguments\": {\"s\": \"</tool_call>\"}}</tool_call>"),
               "", {{"echo", R"({"s":"</tool_call>"})"}}, K::kHermes);
}

TEST(HermesParser, PlainTextUnchanged) {
  for (std::string t :
       {"", "Hello", "  spaced  ", "a <b> c </tool_call> {\"name\": \"f\", \"arguments\": {}}"})
    expect_calls(extract_tool_calls(K::kHermes, t), t, {}, K::kHermes);
}

TEST(Llama3JsonParser, CallsWithAndWithoutPythonTag) {
  expect_calls(
      extract_tool_calls(K::kLlama3Json, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}"), "",
      {{"f", R"({"x":1})"}}, K::kLlama3Json);
  expect_calls(extract_tool_calls(K::kLlama3Json,
                                  " {\"name\": \"f\", \"arguments\": {\"a\": {\"b\": {\"c\": null}}}}"),
               "", {{"f", R"({"a":{"b":{"c":null}}})"}}, K::kLlama3Json);
}

TEST(Llama3JsonParser, SeveralSeparatedBySemicolons) {
  expect_calls(
      extract_tool_calls(
          K::kLlama3Json,
          "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"y\": \"\u00fc;\"}}"),
      "", {{"a", "{}"}, {"b", "{\"y\":\"\u00fc;\"}"}}, K::kLlama3Json);
}

TEST(Llama3JsonParser, TextIsContent) {
  for (std::string t : {"The answer is {x}.", "{\"not\": \"a call\"}", "{\"name\": \"f\", \"parameters\": {",
                        "<|python", "{\"name\": \"f\" \"parameters\": {}}"})
    expect_calls(extract_tool_calls(K::kLlama3Json, t), t, {}, K::kLlama3Json);
}

TEST(Llama3JsonParser, TextAfterTheCallsIsContent) {
  expect_calls(extract_tool_calls(K::kLlama3Json, "{\"name\": \"a\", \"parameters\": {}} and then some"),
               "and then some", {{"a", "{}"}}, K::kLlama3Json);
}

TEST(MistralParser, ListOfCalls) {
  expect_calls(extract_tool_calls(K::kMistral,
                                  "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 3.5, \"b\": 4}}, "
                                  "{\"name\": \"mul\", \"arguments\": {\"a\": 2, \"b\": \"\u00e9]\"}}]"),
               "", {{"add", R"({"a":3.5,"b":4})"}, {"mul", "{\"a\":2,\"b\":\"\u00e9]\"}"}}, K::kMistral);
}

TEST(MistralParser, ContentBeforeAndV11Form) {
  expect_calls(extract_tool_calls(K::kMistral, "Sure. [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]"),
               "Sure.", {{"f", "{}"}}, K::kMistral);
  expect_calls(extract_tool_calls(K::kMistral, "[TOOL_CALLS]add{\"a\": 1}[TOOL_CALLS]neg{\"x\": -2}"), "",
               {{"add", R"({"a":1})"}, {"neg", R"({"x":-2})"}}, K::kMistral);
}

TEST(MistralParser, MalformedStaysContent) {
  for (std::string bad :
       {"[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {]", "[TOOL_CALLS][]",
        "[TOOL_CALLS][{\"name\": \"add\"}]", "[TOOL_CALLS] !", "[TOOL_CALLS]f{\"a\": 1", "no calls [TOOL_CA"})
    expect_calls(extract_tool_calls(K::kMistral, bad), bad, {}, K::kMistral);
}

// ---- streaming equals whole text ----

struct StreamResult {
  std::string content;
  std::vector<Expected> calls;
};

// Feeds `chunks` and checks the stream's shape on the way: every call opens with index k, an id, and its name
// (a later delta of the same call adds arguments only); the content sent so far is always a prefix of the
// final content, so no marker or call text was ever shown as content and then taken back.
StreamResult run_stream(K kind, const std::vector<std::string>& chunks, const std::string& final_content) {
  ToolCallStream s(kind);
  StreamResult r;
  auto take = [&](ToolStreamDelta d) {
    r.content += d.content;
    EXPECT_EQ(final_content.substr(0, r.content.size()), r.content) << "content leaked";
    for (auto& c : d.calls) {
      if (!c.id.empty()) {
        EXPECT_EQ(c.index, static_cast<int>(r.calls.size()));
        EXPECT_FALSE(c.name.empty());
        r.calls.push_back({c.name, c.arguments});
      } else {
        ASSERT_EQ(c.index + 1, static_cast<int>(r.calls.size()));
        r.calls.back().arguments += c.arguments;
      }
    }
  };
  for (const auto& c : chunks) take(s.feed(c));
  take(s.finish());
  return r;
}

void expect_stream_equals_whole(K kind, const std::string& text) {
  SCOPED_TRACE(text);
  ExtractedToolCalls whole = extract_tool_calls(kind, text);
  auto check = [&](const std::vector<std::string>& chunks) {
    StreamResult r = run_stream(kind, chunks, whole.content);
    ASSERT_EQ(r.content, whole.content);
    ASSERT_EQ(r.calls.size(), whole.calls.size());
    for (size_t i = 0; i < r.calls.size(); ++i) {
      ASSERT_EQ(r.calls[i].name, whole.calls[i].name);
      ASSERT_EQ(r.calls[i].arguments, whole.calls[i].arguments);
    }
  };
  // Every two-piece cut, fixed 1/2/3-byte chunks at every phase, and many random 1-3 byte cuttings.
  for (size_t cut = 0; cut <= text.size(); ++cut) check({text.substr(0, cut), text.substr(cut)});
  for (size_t size = 1; size <= 3; ++size)
    for (size_t phase = 0; phase < size; ++phase) {
      std::vector<std::string> chunks{text.substr(0, phase)};
      for (size_t i = phase; i < text.size(); i += size) chunks.push_back(text.substr(i, size));
      check(chunks);
    }
  std::mt19937 rng(static_cast<uint32_t>(text.size()));
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::string> chunks;
    for (size_t i = 0; i < text.size();) {
      size_t n = std::uniform_int_distribution<size_t>(1, 3)(rng);
      chunks.push_back(text.substr(i, n));
      i += n;
    }
    check(chunks);
  }
}

TEST(ToolCallStream, HermesEveryCuttingMatchesWholeText) {
  for (std::string t :
       {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "Let me see. <tool_call>{\"name\": \"a\", \"arguments\": {\"s\": \"</tool_call>\"}}</tool_call>\n"
        "<tool_call>{\"name\": \"b\", \"arguments\": {\"u\": \"\u00e9\u6771\"}}</tool_call> ok <",
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": }</tool_call> after",
        "a < b <tool and <tool_call", "<tool_call>{\"name\": \"f\", \"arguments\": {}}"})
    expect_stream_equals_whole(K::kHermes, t);
}

TEST(ToolCallStream, Llama3JsonEveryCuttingMatchesWholeText) {
  for (std::string t :
       {"<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": \"{;}\"}}",
        "  {\"name\": \"a\", \"parameters\": {}} ; {\"name\": \"b\", \"arguments\": {\"k\": [1]}}",
        "{\"name\": \"a\", \"parameters\": {}}; not json", "<|python_", "Plain {text} here", "{\"key\": 1}"})
    expect_stream_equals_whole(K::kLlama3Json, t);
}

TEST(ToolCallStream, MistralEveryCuttingMatchesWholeText) {
  for (std::string t :
       {"[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1}}, {\"name\": \"b\", \"arguments\": {}}]",
        "Hi [TOOL_CALLS]f{\"q\": \"\u00fc\"} bye", "[TOOL_CALLS][{\"name\": \"add\"", "[TOOL",
        "x [TOOL_CALLS] nope"})
    expect_stream_equals_whole(K::kMistral, t);
}

TEST(ToolCallStream, ALongCallStreamedByteByByteIsScannedOnce) {
  // 256 KiB of arguments fed one byte at a time: rescanning the open call on every delta would be ~3e10
  // steps.
  std::string big(256 << 10, 'x');
  for (K kind : {K::kHermes, K::kLlama3Json, K::kMistral}) {
    std::string text =
        kind == K::kHermes
            ? "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"" + big + "\"}}</tool_call>"
        : kind == K::kMistral ? "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"s\": \"" + big + "\"}}]"
                              : "{\"name\": \"f\", \"parameters\": {\"s\": \"" + big + "\"}}";
    auto t0 = std::chrono::steady_clock::now();
    ToolCallStream s(kind);
    int calls = 0;
    for (char c : text) calls += static_cast<int>(s.feed(std::string_view(&c, 1)).calls.size());
    calls += static_cast<int>(s.finish().calls.size());
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(calls, 1);
    EXPECT_LT(secs, 2.0) << "kind " << static_cast<int>(kind);
  }
}

TEST(ToolCallStream, ContentFlowsBeforeACallIsDecided) {
  ToolCallStream s(K::kHermes);
  EXPECT_EQ(s.feed("Hello world").content, "Hello world");
  EXPECT_EQ(s.feed(" <tool").content, "");  // maybe a marker: held back (and the space before it)
  ToolStreamDelta d = s.feed("_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>");
  EXPECT_EQ(d.content, "");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].name, "f");
  EXPECT_EQ(d.calls[0].arguments, R"({"a":1})");
  EXPECT_EQ(s.calls(), 1);
  EXPECT_TRUE(s.finish().empty());
}

// ---- constrained modes ----

const ojson kTools = ojson::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather",
   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
  {"type": "function", "function": {"name": "now"}},
  {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
   "properties": {"item": {"$ref": "#/$defs/Item"}}, "$defs": {"Item": {"type": "string", "maxLength": 8}}}}}
])");

// Schemas keep the client's key order (properties are generated in it); compared here as plain JSON values.
json unordered(const ojson& j) { return json::parse(j.dump()); }

TEST(ToolSchemas, ValidatedToolsAndDefaultParameters) {
  auto specs = validate_tools(kTools);
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].name, "get_weather");
  EXPECT_EQ(unordered(specs[1].parameters), json::parse(R"({"type": "object", "properties": {}})"));
  EXPECT_EQ(
      unordered(named_tool_schema(specs[0])),
      json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})"));
}

TEST(ToolSchemas, PropertiesKeepTheClientsOrder) {
  const auto specs = validate_tools(ojson::parse(R"([{"type": "function", "function": {"name": "f", "parameters":
      {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}}])"));
  EXPECT_EQ(named_tool_schema(specs[0])["properties"].dump(), R"({"zeta":{"type":"string"},"alpha":{"type":"integer"}})");
  const ojson req = required_tools_schema(specs, true);
  EXPECT_EQ(req["items"]["anyOf"][0]["properties"]["parameters"]["properties"].begin().key(), "zeta");
  EXPECT_EQ(req["items"]["anyOf"][0]["properties"].begin().key(), "name");  // the name before the arguments
}

TEST(ToolSchemas, RequiredIsAListOfAnyTool) {
  auto specs = validate_tools(kTools);
  json alt =
      json::parse(R"({"type": "object", "required": ["name", "parameters"], "additionalProperties": false})");
  json a = alt, b = alt, c = alt;
  a["properties"] = json::parse(R"({"name": {"type": "string", "enum": ["get_weather"]}, "parameters":
      {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})");
  b["properties"] = json::parse(R"({"name": {"type": "string", "enum": ["now"]}, "parameters":
      {"type": "object", "properties": {}}})");
  c["properties"] = json::parse(R"({"name": {"type": "string", "enum": ["lookup"]}, "parameters":
      {"type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}}})");
  json expected = {{"type", "array"},
                   {"minItems", 1},
                   {"items", {{"anyOf", {a, b, c}}}},
                   {"$defs", json::parse(R"({"Item": {"type": "string", "maxLength": 8}})")}};
  EXPECT_EQ(unordered(required_tools_schema(specs, true)), expected);
  expected["maxItems"] = 1;
  EXPECT_EQ(unordered(required_tools_schema(specs, false)), expected);
}

TEST(ToolSchemas, ConstrainedOutputsToCalls) {
  ToolCall named = call_from_named_output("get_weather", R"({"city": "Oslo"})");
  EXPECT_EQ(named.name, "get_weather");
  EXPECT_EQ(named.arguments, R"({"city": "Oslo"})");  // the output is the arguments, verbatim (vLLM)
  auto calls = calls_from_required_output(R"([{"name": "now", "parameters": {}}, {"name": "get_weather",
      "parameters": {"city": "R\u00f8ros"}}])");
  ASSERT_TRUE(calls);
  ASSERT_EQ(calls->size(), 2u);
  EXPECT_EQ((*calls)[0].name, "now");
  EXPECT_EQ((*calls)[0].arguments, "{}");
  EXPECT_EQ((*calls)[1].arguments, "{\"city\":\"R\u00f8ros\"}");
  EXPECT_FALSE(calls_from_required_output(R"([{"name": "now", "parameters": {}})"));  // cut by max_tokens
  EXPECT_FALSE(calls_from_required_output("[]"));
  EXPECT_FALSE(calls_from_required_output(R"({"name": "now", "parameters": {}})"));
}

// The param a tools list / tool_choice is refused for ("" when accepted).
std::string refused(const ojson& tools, ToolChoice choice = {}, ToolFlags flags = {true, "hermes"}) {
  try {
    setup_tools(tools, choice, true, flags);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    return e.param();
  }
  return "";
}

TEST(ToolValidation, EveryBadFieldIsNamed) {
  auto with = [](const char* second) {
    return ojson::parse(std::string(R"([{"type": "function", "function": {"name": "ok"}}, )") + second + "]");
  };
  EXPECT_EQ(refused(kTools), "");
  EXPECT_EQ(refused(with(R"({"type": "function", "function": {}})")), "tools[1].function.name");
  EXPECT_EQ(refused(with(R"({"type": "function", "function": {"name": 3}})")), "tools[1].function.name");
  EXPECT_EQ(refused(with(R"({"type": "function", "function": {"name": "get weather"}})")),
            "tools[1].function.name");
  EXPECT_EQ(refused(with(R"({"type": "function", "function": {"name": ""}})")), "tools[1].function.name");
  EXPECT_EQ(refused(with(R"({"type": "code_interpreter", "function": {"name": "f"}})")), "tools[1].type");
  EXPECT_EQ(refused(with(R"({"type": "function"})")), "tools[1].function");
  EXPECT_EQ(refused(with(R"("f")")), "tools[1]");
  EXPECT_EQ(refused(with(R"({"function": {"name": "f", "parameters": []}})")),
            "tools[1].function.parameters");
  EXPECT_EQ(refused(with(R"({"function": {"name": "f", "parameters": {"type": "string"}}})")),
            "tools[1].function.parameters");
  EXPECT_EQ(refused(with(R"({"function": {"name": "f", "description": 1}})")),
            "tools[1].function.description");
  EXPECT_EQ(refused(ojson::parse(R"({"name": "f"})")), "tools");
}

TEST(ToolValidation, ToolChoiceRules) {
  ToolChoice named{ToolChoice::Kind::kNamed, "now"}, absent{ToolChoice::Kind::kNamed, "nope"};
  ToolChoice required{ToolChoice::Kind::kRequired, ""}, none{ToolChoice::Kind::kNone, ""}, automatic{};
  EXPECT_EQ(refused(kTools, absent), "tool_choice");
  EXPECT_EQ(refused(nullptr, named), "tool_choice");  // a named or required choice needs tools
  EXPECT_EQ(refused(nullptr, required), "tool_choice");
  EXPECT_EQ(refused(kTools, automatic, ToolFlags{}), "tool_choice");  // "auto" needs the server flags
  EXPECT_EQ(refused(kTools, automatic, ToolFlags{true, ""}), "tool_choice");
  EXPECT_EQ(refused(kTools, automatic, ToolFlags{false, "hermes"}), "tool_choice");
  try {
    setup_tools(kTools, automatic, true, ToolFlags{});
  } catch (const ApiError& e) {
    EXPECT_STREQ(e.what(),
                 "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set");
  }
  EXPECT_EQ(setup_tools(nullptr, automatic, true, ToolFlags{}).mode, ToolSetup::Mode::kNone);
  EXPECT_EQ(setup_tools(kTools, none, true, ToolFlags{}).mode, ToolSetup::Mode::kNone);
  ToolSetup a = setup_tools(kTools, automatic, true, ToolFlags{true, "mistral"});
  EXPECT_EQ(a.mode, ToolSetup::Mode::kAuto);
  EXPECT_EQ(a.parser, K::kMistral);
  ToolSetup n = setup_tools(kTools, named, true, ToolFlags{});
  EXPECT_EQ(n.mode, ToolSetup::Mode::kNamed);
  EXPECT_EQ(unordered(n.schema), json::parse(R"({"type": "object", "properties": {}})"));
  ToolSetup r = setup_tools(kTools, required, false, ToolFlags{});
  EXPECT_EQ(r.mode, ToolSetup::Mode::kRequired);
  EXPECT_EQ(r.schema["maxItems"], 1);
  EXPECT_EQ(tool_parser_from_name("llama3_json"), K::kLlama3Json);
  EXPECT_FALSE(tool_parser_from_name("pythonic"));
}

TEST(ToolValidation, NamedAndRequiredBecomeAJsonSchemaOutput) {
  StructuredOutput so;
  constrain_tool_output(
      setup_tools(kTools, ToolChoice{ToolChoice::Kind::kNamed, "get_weather"}, true, ToolFlags{}), so);
  EXPECT_EQ(so.kind, StructuredOutput::Kind::kJsonSchema);
  EXPECT_EQ(so.param, "tool_choice");
  EXPECT_EQ(
      unordered(so.schema),
      json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})"));
  StructuredOutput req;
  ToolSetup r = setup_tools(kTools, ToolChoice{ToolChoice::Kind::kRequired, ""}, true, ToolFlags{});
  constrain_tool_output(r, req);
  EXPECT_EQ(req.schema, r.schema);
  StructuredOutput untouched;
  constrain_tool_output(setup_tools(kTools, ToolChoice{}, true, ToolFlags{true, "hermes"}), untouched);
  EXPECT_EQ(untouched.kind, StructuredOutput::Kind::kNone);
  StructuredOutput both;
  both.kind = StructuredOutput::Kind::kJsonObject;
  both.param = "response_format";
  try {
    constrain_tool_output(r, both);
    ADD_FAILURE() << "tool_choice required with response_format must be refused";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "tool_choice");
    EXPECT_NE(std::string(e.what()).find("response_format"), std::string::npos) << e.what();
  }
}

// ---- per-choice state and reply JSON ----

TEST(ChoiceTools, NamedStreamsTheOutputAsArguments) {
  ToolSetup s = setup_tools(kTools, ToolChoice{ToolChoice::Kind::kNamed, "get_weather"}, true, ToolFlags{});
  ChoiceTools t(s);
  ToolStreamDelta d1 = t.feed("{\"city\"");
  ToolStreamDelta d2 = t.feed(": \"Oslo\"}");
  ASSERT_EQ(d1.calls.size(), 1u);
  EXPECT_EQ(d1.calls[0].name, "get_weather");
  EXPECT_FALSE(d1.calls[0].id.empty());
  EXPECT_EQ(d1.calls[0].arguments, "{\"city\"");
  ASSERT_EQ(d2.calls.size(), 1u);
  EXPECT_TRUE(d2.calls[0].id.empty());
  EXPECT_EQ(d2.calls[0].arguments, ": \"Oslo\"}");
  EXPECT_TRUE(t.finish().empty());
  EXPECT_FALSE(t.finish_as_tool_calls());  // vLLM: a named function finishes with "stop"
}

TEST(ChoiceTools, RequiredReadsTheListAtTheEnd) {
  ToolSetup s = setup_tools(kTools, ToolChoice{ToolChoice::Kind::kRequired, ""}, true, ToolFlags{});
  ChoiceTools t(s);
  EXPECT_TRUE(t.feed("[{\"name\": \"now\", ").empty());
  EXPECT_TRUE(t.feed("\"parameters\": {}}]").empty());
  ToolStreamDelta d = t.finish();
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].name, "now");
  EXPECT_TRUE(t.finish_as_tool_calls());
  ChoiceTools cut(s);
  cut.feed("[{\"name\": \"now\"");
  EXPECT_EQ(cut.finish().content, "[{\"name\": \"now\"");
  EXPECT_FALSE(cut.finish_as_tool_calls());
}

TEST(ChoiceTools, AutoAndNone) {
  ToolSetup a = setup_tools(kTools, ToolChoice{}, true, ToolFlags{true, "hermes"});
  ChoiceTools t(a);
  auto w = t.whole("Hi <tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>");
  EXPECT_EQ(w.content, "Hi");
  EXPECT_EQ(w.calls.size(), 1u);
  EXPECT_TRUE(t.finish_as_tool_calls());
  ToolSetup n = setup_tools(kTools, ToolChoice{ToolChoice::Kind::kNone, ""}, true, ToolFlags{true, "hermes"});
  ChoiceTools u(n);
  std::string text = "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>";
  EXPECT_EQ(u.feed(text).content, text);  // "none": the text is the reply, whatever it holds
  EXPECT_EQ(u.whole(text).content, text);
  EXPECT_FALSE(u.finish_as_tool_calls());
}

// parallel_tool_calls false in auto mode: the first call only, streamed or whole.
TEST(ChoiceTools, AutoWithoutParallelCallsKeepsTheFirst) {
  const std::string text = "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>\n"
                           "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>";
  for (bool parallel : {true, false}) {
    ToolSetup a = setup_tools(kTools, ToolChoice{}, parallel, ToolFlags{true, "hermes"});
    ChoiceTools whole(a);
    auto w = whole.whole(text);
    ChoiceTools streamed(a);
    std::vector<std::string> names;
    for (size_t i = 0; i < text.size(); i += 3)
      for (const auto& c : streamed.feed(text.substr(i, 3)).calls) names.push_back(c.name);
    for (const auto& c : streamed.finish().calls) names.push_back(c.name);
    if (parallel) {
      ASSERT_EQ(w.calls.size(), 2u);
      EXPECT_EQ(names, (std::vector<std::string>{"now", "get_weather"}));
    } else {
      ASSERT_EQ(w.calls.size(), 1u);
      EXPECT_EQ(w.calls[0].name, "now");
      EXPECT_EQ(names, (std::vector<std::string>{"now"}));
    }
  }
}

TEST(ToolReplyJson, MessageAndDeltaShapes) {
  ojson choice = ojson::parse(
      R"({"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": "stop"})");
  apply_tool_calls(choice, {ToolCall{"chatcmpl-tool-1", "now", "{}"}}, true);
  EXPECT_EQ(choice,
            ojson::parse(R"({"index": 0, "message": {"role": "assistant", "content": null, "tool_calls":
      [{"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
      "logprobs": null, "finish_reason": "tool_calls"})"));
  ojson kept = ojson::parse(
      R"({"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"})");
  apply_tool_calls(kept, {}, false);
  EXPECT_EQ(
      kept,
      ojson::parse(
          R"({"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"})"));

  ojson chunk = ojson::parse(
      R"({"id": "x", "choices": [{"index": 1, "delta": {}, "logprobs": null, "finish_reason": null}]})");
  add_tool_call_deltas(chunk,
                       {ToolCallDelta{0, "chatcmpl-tool-2", "f", ""}, ToolCallDelta{0, "", "", "{\"a\""}});
  set_finish_tool_calls(chunk);
  EXPECT_EQ(chunk, ojson::parse(R"({"id": "x", "choices": [{"index": 1, "delta": {"tool_calls": [
      {"index": 0, "id": "chatcmpl-tool-2", "type": "function", "function": {"name": "f", "arguments": ""}},
      {"index": 0, "function": {"arguments": "{\"a\""}}]}, "logprobs": null, "finish_reason": "tool_calls"}]})"));
}

}  // namespace
}  // namespace lp::server
