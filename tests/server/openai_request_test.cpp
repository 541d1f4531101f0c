// Parsing and validation of OpenAI request bodies: every rule names the offending field; defaults and the
// engine requests built from a parsed body (n seeds, max_tokens defaults, context-length errors).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <limits>

#include "server/api_error.h"
#include "server/openai_request.h"
#include "util/openai_util.h"

namespace lp::server {
namespace {

using ojson = nlohmann::ordered_json;
using test::refused_param;

TEST(OpenAIRequest, CompletionDefaultsAndFields) {
  auto r = parse_completion_request(ojson::parse(
      R"({"model":"m","prompt":"hi","temperature":0,"top_p":0.5,"top_k":4,"min_p":0.1,"seed":3,
          "presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.2,"stop":"END",
          "stop_token_ids":[5,6],"max_tokens":7,"ignore_eos":true,"logprobs":2,"stream":true,
          "stream_options":{"include_usage":true},"unknown_field":1})"));
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(*r.prompts.at(0).text, "hi");
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 4);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.sampling.seed, uint64_t{3});
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.2f);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.logprobs, 2);
  EXPECT_TRUE(r.stream && r.include_usage);

  auto d = parse_completion_request(ojson::parse(R"({"prompt":"x"})"));
  EXPECT_EQ(d.sampling.temperature, 1.0f);
  EXPECT_EQ(d.n, 1);
  EXPECT_FALSE(d.max_tokens);
  EXPECT_EQ(d.logprobs, -1);
  EXPECT_FALSE(d.stream);
}

TEST(OpenAIRequest, PromptForms) {
  EXPECT_EQ(parse_completion_request(ojson::parse(R"({"prompt":[1,2,3]})")).prompts.at(0).ids,
            (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*parse_completion_request(ojson::parse(R"({"prompt":["one"]})")).prompts.at(0).text, "one");
  EXPECT_EQ(parse_completion_request(ojson::parse(R"({"prompt":[[4,5]]})")).prompts.at(0).ids,
            (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(refused_param(R"({"prompt":""})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":[]})"), "prompt");
  EXPECT_EQ(refused_param(R"({})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":["a",[1]]})"), "prompt");  // a batch is never mixed
  EXPECT_EQ(refused_param(R"({"prompt":[1,-2]})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":5})"), "prompt");
}

TEST(OpenAIRequest, OutOfRangeAndWrongTypesNameTheField) {
  struct Case {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"prompt":"x","temperature":-0.1})", "temperature"},
      {R"({"prompt":"x","temperature":"hot"})", "temperature"},
      {R"({"prompt":"x","top_p":0})", "top_p"},
      {R"({"prompt":"x","top_p":1.5})", "top_p"},
      {R"({"prompt":"x","top_k":-2})", "top_k"},
      {R"({"prompt":"x","min_p":2})", "min_p"},
      {R"({"prompt":"x","n":0})", "n"},
      {R"({"prompt":"x","n":1.5})", "n"},
      {R"({"prompt":"x","max_tokens":0})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":"many"})", "max_tokens"},
      {R"({"prompt":"x","logprobs":21})", "logprobs"},
      {R"({"prompt":"x","logprobs":true})", "logprobs"},
      {R"({"prompt":"x","presence_penalty":3})", "presence_penalty"},
      {R"({"prompt":"x","frequency_penalty":-3})", "frequency_penalty"},
      {R"({"prompt":"x","repetition_penalty":0})", "repetition_penalty"},
      {R"({"prompt":"x","stop":5})", "stop"},
      {R"({"prompt":"x","stop":[""]})", "stop"},
      {R"({"prompt":"x","stop_token_ids":["a"]})", "stop_token_ids"},
      {R"({"prompt":"x","stream":"yes"})", "stream"},
      {R"({"prompt":"x","stream_options":{"include_usage":true}})", "stream_options"},
      {R"({"prompt":"x","model":7})", "model"},
      {R"({"prompt":"x","echo":1})", "echo"},
  };
  for (const auto& c : cases) EXPECT_EQ(refused_param(c.body), c.param) << c.body;
  EXPECT_EQ(refused_param(R"({"prompt":"x","n":2.0,"max_tokens":3.0})"), "");  // integral floats are integers
}

TEST(OpenAIRequest, ChatMessagesAndLogprobs) {
  auto r = parse_chat_request(ojson::parse(
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},
          {"type":"text","text":"b"}]}],"logprobs":true,"top_logprobs":3,"max_completion_tokens":5,"max_tokens":9,
          "tools":[{"type":"function","function":{"name":"f"}}]})"));
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_EQ(r.logprobs, 3);
  EXPECT_EQ(*r.max_tokens, 5);  // max_completion_tokens wins
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(parse_chat_request(ojson::parse(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})")).logprobs, 0);
  EXPECT_EQ(refused_param(R"({"messages":[]})", true), "messages");
  EXPECT_EQ(refused_param(R"({"messages":"hi"})", true), "messages");
  EXPECT_EQ(refused_param(R"({"messages":[{"content":"x"}]})", true), "messages[0].role");
  EXPECT_EQ(refused_param(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", true),
            "messages[0].content[0].type");
  EXPECT_EQ(refused_param(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", true), "top_logprobs");
  EXPECT_EQ(refused_param(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":30})", true),
            "top_logprobs");
  EXPECT_FALSE(parse_chat_request(ojson::parse(R"({"messages":[{"role":"user","content":"x"}]})")).add_special_tokens);
  EXPECT_TRUE(parse_chat_request(ojson::parse(R"({"messages":[{"role":"user","content":"x"}],"add_special_tokens":true})"))
                  .add_special_tokens);
  EXPECT_EQ(refused_param(R"({"messages":[{"role":"user","content":"x"}],"add_special_tokens":"yes"})", true),
            "add_special_tokens");  // was silently ignored
}

TEST(OpenAIRequest, BodyMustBeAJsonObject) {
  EXPECT_THROW(parse_body("{"), ApiError);
  EXPECT_THROW(parse_body("[1]"), ApiError);
  EXPECT_THROW(parse_body(""), ApiError);
  EXPECT_TRUE(parse_body("{}").is_object());
}

TEST(OpenAIRequest, EngineRequestsSeedsAndLimits) {
  GenerateParams p;
  p.n = 3;
  p.sampling.seed = 10;
  p.logprobs = 2;
  p.stop = {"x"};
  auto reqs = make_engine_requests(p, {1, 2, 3}, "ad", 100, 16);
  ASSERT_EQ(reqs.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(reqs[i].sampling.seed, uint64_t(10 + i));
    EXPECT_EQ(reqs[i].max_tokens, 16);
    EXPECT_EQ(reqs[i].adapter, "ad");
    EXPECT_EQ(reqs[i].logprobs, 2);
    ASSERT_TRUE(reqs[i].stop);
    EXPECT_EQ(*reqs[i].stop, std::vector<std::string>{"x"});
  }
  // One stop list for all choices, not a copy per choice.
  EXPECT_EQ(reqs[0].stop.get(), reqs[2].stop.get());
  EXPECT_EQ(make_engine_requests(p, {1, 2, 3}, "", 100, -1)[0].max_tokens, 97);  // chat: the rest of the context
  p.sampling.seed.reset();
  EXPECT_FALSE(make_engine_requests(p, {1}, "", 100, 16)[2].sampling.seed);  // unseeded stays unseeded
  p.stop.clear();
  EXPECT_FALSE(make_engine_requests(p, {1}, "", 100, 16)[0].stop);

  auto code_of = [&](std::vector<int32_t> prompt, std::optional<int> max_tokens) -> std::string {
    GenerateParams q;
    q.max_tokens = max_tokens;
    try {
      make_engine_requests(q, std::move(prompt), "", 8, 16);
    } catch (const ApiError& e) {
      return e.code();
    }
    return "";
  };
  EXPECT_EQ(code_of(std::vector<int32_t>(8, 1), std::nullopt), "context_length_exceeded");
  EXPECT_EQ(code_of({1, 2}, 7), "context_length_exceeded");
  EXPECT_EQ(code_of({1, 2}, 6), "");
  EXPECT_EQ(code_of({1, 2}, std::nullopt), "");  // the default is clamped to what is left
}

// --- Bounds (request_limits.h): at each limit accepted, one over refused naming the field. ---

std::string stop_list(size_t count, size_t bytes) {
  std::string out = "[";
  for (size_t i = 0; i < count; ++i)
    out += fmt::format("{}\"{}\"", i ? "," : "", std::string(bytes, 'a' + i % 26));
  return out + "]";
}

std::string id_list(size_t count) {
  std::string out = "[";
  for (size_t i = 0; i < count; ++i) out += fmt::format("{}{}", i ? "," : "", i);
  return out + "]";
}

std::string bias_map(size_t count, double value = 1) {
  std::string out = "{";
  for (size_t i = 0; i < count; ++i) out += fmt::format("{}\"{}\":{}", i ? "," : "", i, value);
  return out + "}";
}

std::string completion_with(const std::string& field, const std::string& value) {
  return fmt::format(R"({{"prompt":"x","{}":{}}})", field, value);
}

TEST(RequestBounds, StopStrings) {
  // 16 strings of 1 KiB: the documented bound (OpenAI allows 4, vLLM has none).
  EXPECT_EQ(refused_param(completion_with("stop", stop_list(16, 1024))), "");
  EXPECT_EQ(refused_param(completion_with("stop", stop_list(17, 1))), "stop");
  EXPECT_EQ(refused_param(completion_with("stop", stop_list(1, 1025))), "stop");
  EXPECT_EQ(refused_param(completion_with("stop", "\"" + std::string(1025, 'z') + "\"")), "stop");
  EXPECT_EQ(refused_param(completion_with("stop", "20000")), "stop");
}

TEST(RequestBounds, StopTokenIds) {
  EXPECT_EQ(refused_param(completion_with("stop_token_ids", id_list(64))), "");
  EXPECT_EQ(refused_param(completion_with("stop_token_ids", id_list(65))), "stop_token_ids");
  GenerateParams p = parse_completion_request(ojson::parse(completion_with("stop_token_ids", "[0, 99]")));
  EXPECT_NO_THROW(check_token_ids(p, 100));
  try {
    check_token_ids(p, 99);  // id 99 is outside a 99-token vocabulary
    ADD_FAILURE() << "an id outside the vocabulary was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "stop_token_ids");
  }
}

TEST(RequestBounds, LogitBias) {
  EXPECT_EQ(refused_param(completion_with("logit_bias", bias_map(1024))), "");
  EXPECT_EQ(refused_param(completion_with("logit_bias", bias_map(1025))), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"5":100,"6":-100})")), "");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"5":100.5})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"5":-101})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"5":"big"})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"abc":1})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"-3":1})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"1.5":1})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"99999999999":1})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", R"({"7":1,"07":2})")), "logit_bias");
  EXPECT_EQ(refused_param(completion_with("logit_bias", "[1]")), "logit_bias");

  GenerateParams p =
      parse_completion_request(ojson::parse(completion_with("logit_bias", R"({"9":-2.5,"3":7})")));
  ASSERT_TRUE(p.sampling.logit_bias);
  const std::vector<std::pair<int32_t, float>> want = {{3, 7.0f}, {9, -2.5f}};
  EXPECT_EQ(*p.sampling.logit_bias, want);
  EXPECT_NO_THROW(check_token_ids(p, 10));
  try {
    check_token_ids(p, 9);
    ADD_FAILURE() << "a logit_bias key outside the vocabulary was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "logit_bias");
  }
  // The n choices share one bias list.
  p.n = 4;
  auto reqs = make_engine_requests(p, {1}, "", 100, 4);
  EXPECT_EQ(reqs[0].sampling.logit_bias.get(), reqs[3].sampling.logit_bias.get());
}

TEST(RequestBounds, NAndBestOf) {
  EXPECT_EQ(refused_param(completion_with("n", "128")), "");
  EXPECT_EQ(refused_param(completion_with("n", "129")), "n");
  EXPECT_EQ(refused_param(R"({"prompt":"x","n":3,"best_of":3})"), "");
  EXPECT_EQ(refused_param(R"({"prompt":"x","n":3,"best_of":4})"), "best_of");
  EXPECT_EQ(refused_param(R"({"prompt":"x","best_of":2})"), "best_of");
}

TEST(RequestBounds, LogprobsAtTheLimit) {
  EXPECT_EQ(refused_param(completion_with("logprobs", "20")), "");
  EXPECT_EQ(refused_param(completion_with("logprobs", "21")), "logprobs");
}

TEST(RequestBounds, TemperatureBelowEpsilonIsGreedy) {
  auto temp = [](const char* t) {
    return parse_completion_request(ojson::parse(completion_with("temperature", t)));
  };
  EXPECT_TRUE(temp("0").sampling.greedy());
  EXPECT_TRUE(temp("0.000009").sampling.greedy());  // vLLM: < 1e-5
  EXPECT_FALSE(temp("0.00002").sampling.greedy());
  EXPECT_FALSE(temp("0.7").sampling.greedy());
}

TEST(RequestBounds, SeedsWrapInsteadOfOverflowing) {
  // Any int64 seed is accepted; choice i gets seed + i modulo 2^64 (the sampler seed is unsigned).
  auto seeds_of = [](const std::string& seed) {
    GenerateParams p = parse_completion_request(ojson::parse(R"({"prompt":"x","n":3,"seed":)" + seed + "}"));
    std::vector<uint64_t> out;
    for (const auto& r : make_engine_requests(p, {1}, "", 100, 4)) out.push_back(r.sampling.seed.value());
    return out;
  };
  const uint64_t max = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(seeds_of("9223372036854775807"), (std::vector<uint64_t>{max, max + 1, max + 2}));
  EXPECT_EQ(seeds_of("-1"), (std::vector<uint64_t>{UINT64_MAX, 0, 1}));
  EXPECT_EQ(seeds_of("18446744073709551615"), (std::vector<uint64_t>{UINT64_MAX, 0, 1}));
  EXPECT_EQ(seeds_of("5"), (std::vector<uint64_t>{5, 6, 7}));
}

// --- Chat messages: roles and content checked before any template runs. ---

std::string chat_with(const std::string& message) {
  return R"({"messages":[{"role":"user","content":"hi"},)" + message + "]}";
}

TEST(ChatMessages, RolesAreTheFiveKnownOnes) {
  for (const char* role : {"system", "user", "assistant", "tool", "developer"})
    EXPECT_EQ(refused_param(chat_with(fmt::format(R"({{"role":"{}","content":"x"}})", role)), true), "")
        << role;
  EXPECT_EQ(refused_param(chat_with(R"({"role":"hacker","content":"x"})"), true), "messages[1].role");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"","content":"x"})"), true), "messages[1].role");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"User","content":"x"})"), true), "messages[1].role");
  EXPECT_EQ(refused_param(chat_with(R"({"role":5,"content":"x"})"), true), "messages[1].role");
  EXPECT_EQ(refused_param(chat_with(R"({"content":"x"})"), true), "messages[1].role");
  EXPECT_EQ(refused_param(chat_with(R"("just text")"), true), "messages[1]");
}

TEST(ChatMessages, ContentTypes) {
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":null})"), true), "messages[1].content");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user"})"), true), "messages[1].content");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"system","content":5})"), true), "messages[1].content");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":{"text":"x"}})"), true),
            "messages[1].content");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":["x"]})"), true), "messages[1].content[0]");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":[{"type":"text","text":5}]})"), true),
            "messages[1].content[0].text");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":[{"type":"text"}]})"), true),
            "messages[1].content[0].text");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"assistant","content":null})"), true), "messages[1].content");
  // An assistant message with tool_calls may have null or no content (OpenAI).
  const std::string call =
      R"("tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}])";
  EXPECT_EQ(refused_param(chat_with(R"({"role":"assistant","content":null,)" + call + "}"), true), "");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"assistant",)" + call + "}"), true), "");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":null,)" + call + "}"), true),
            "messages[1].tool_calls");
  EXPECT_EQ(
      refused_param(chat_with(R"({"role":"assistant","content":"x","tool_calls":[{"function":{}}]})"), true),
      "messages[1].tool_calls[0].function.name");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":"x","name":7})"), true), "messages[1].name");
  EXPECT_EQ(refused_param(chat_with(R"({"role":"user","content":""})"), true), "");  // empty text is text
  EXPECT_EQ(refused_param(chat_with(R"({"role":"tool","content":[{"type":"text","text":"r"}]})"), true), "");
}

// --- JSON shape: refused by the linear pre-pass before any DOM is built. ---

std::string flat_object(size_t keys) {
  std::string out = "{";
  for (size_t i = 0; i < keys; ++i) out += fmt::format("{}\"k{}\":{}", i ? "," : "", i, i);
  return out + "}";
}

TEST(JsonShape, DepthLimit) {
  auto nested = [](int depth) {  // {"prompt":"x","a":[[...[]...]]} with `depth` levels in all
    return R"({"prompt":"x","a":)" + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
  };
  EXPECT_NO_THROW(parse_body(nested(64)));
  EXPECT_THROW(parse_body(nested(65)), ApiError);
  EXPECT_THROW(parse_body(std::string(100000, '[')), ApiError);
}

TEST(JsonShape, KeyLimits) {
  EXPECT_NO_THROW(parse_body(R"({"a":)" + flat_object(2048) + "}"));
  EXPECT_THROW(parse_body(R"({"a":)" + flat_object(2049) + "}"), ApiError);
  // Four objects of 2,048 keys: each within the object bound, but 4 x 2048^2/2 = 8.4M key comparisons in the
  // ordered map, over the 4M budget.
  auto objects = [](int count, size_t keys) {
    std::string out = "{";
    for (int i = 0; i < count; ++i) out += fmt::format("{}\"o{}\":{}", i ? "," : "", i, flat_object(keys));
    return out + "}";
  };
  EXPECT_NO_THROW(parse_body(objects(1, 2048)));
  EXPECT_THROW(parse_body(objects(4, 2048)), ApiError);
  // Many small objects are cheap; 65,536 keys in all is the total bound.
  auto array_of = [](int count, size_t keys) {
    std::string out = R"({"a":[)";
    for (int i = 0; i < count; ++i) out += (i ? "," : "") + flat_object(keys);
    return out + "]}";
  };
  EXPECT_NO_THROW(parse_body(array_of(8191, 8)));  // 1 + 65,528 keys
  EXPECT_THROW(parse_body(array_of(8193, 8)), ApiError);
  // 100,000 keys spread over many objects: refused by the total bound.
  EXPECT_THROW(parse_body(array_of(12500, 8)), ApiError);
}

TEST(JsonShape, HundredThousandKeysRefusedFast) {
  // This body took 10-12 s of CPU in the ordered map before anything looked at it.
  const std::string body = R"({"prompt":"x","logit_bias":)" + bias_map(100000) + "}";
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(parse_body(body), ApiError);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 1.0);
}

TEST(JsonShape, NormalBodiesParseExactlyAsBefore) {
  const std::string body =
      R"({"model":"m","messages":[{"role":"user","content":"h\u00e9\ud83d\ude00"}],"tools":[{"type":"function",)"
      R"("function":{"name":"f","parameters":{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"integer"}},)"
      R"("required":["z"]}}}],"temperature":0.5,"n":2,"seed":-3,"big":18446744073709551615,"f":1e-7,"nul":null})";
  const ojson ours = parse_body(body);
  const ojson plain = ojson::parse(body);
  EXPECT_EQ(ours, plain);
  EXPECT_EQ(ours.dump(), plain.dump());  // same key order (the chat template sees it)
  EXPECT_THROW(parse_body(R"({"a":1,})"), ApiError);
  EXPECT_THROW(parse_body("{\"a\":\"\xff\"}"), ApiError);  // invalid UTF-8
}

}  // namespace
}  // namespace lp::server
