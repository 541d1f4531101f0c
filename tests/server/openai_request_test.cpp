// Parsing and validation of OpenAI request bodies: every rule names the offending field; defaults and the
// engine requests built from a parsed body (n seeds, max_tokens defaults, context-length errors).
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/openai_request.h"

namespace lp::server {
namespace {

using ojson = nlohmann::ordered_json;

// The param an invalid body is refused for ("" when it is accepted).
std::string refused_param(const std::string& body, bool chat = false) {
  try {
    ojson j = parse_body(body);
    if (chat) parse_chat_request(j);
    else parse_completion_request(j);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    return e.param().empty() ? "<none>" : e.param();
  }
  return "";
}

TEST(OpenAIRequest, CompletionDefaultsAndFields) {
  auto r = parse_completion_request(ojson::parse(
      R"({"model":"m","prompt":"hi","temperature":0,"top_p":0.5,"top_k":4,"min_p":0.1,"seed":3,
          "presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.2,"stop":"END",
          "stop_token_ids":[5,6],"max_tokens":7,"ignore_eos":true,"logprobs":2,"stream":true,
          "stream_options":{"include_usage":true},"unknown_field":1})"));
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(*r.prompt_text, "hi");
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 4);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.sampling.seed, 3);
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
  EXPECT_EQ(parse_completion_request(ojson::parse(R"({"prompt":[1,2,3]})")).prompt_ids,
            (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*parse_completion_request(ojson::parse(R"({"prompt":["one"]})")).prompt_text, "one");
  EXPECT_EQ(parse_completion_request(ojson::parse(R"({"prompt":[[4,5]]})")).prompt_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(refused_param(R"({"prompt":""})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":[]})"), "prompt");
  EXPECT_EQ(refused_param(R"({})"), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt":["a","b"]})"), "prompt");
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
      {R"({"prompt":"x","echo":true})", "echo"},
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
  EXPECT_EQ(refused_param(R"({"messages":[{"content":"x"}]})", true), "messages");
  EXPECT_EQ(refused_param(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", true), "messages");
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
    EXPECT_EQ(reqs[i].sampling.seed, 10 + i);
    EXPECT_EQ(reqs[i].max_tokens, 16);
    EXPECT_EQ(reqs[i].adapter, "ad");
    EXPECT_EQ(reqs[i].logprobs, 2);
    EXPECT_EQ(reqs[i].stop, std::vector<std::string>{"x"});
  }
  EXPECT_EQ(make_engine_requests(p, {1, 2, 3}, "", 100, -1)[0].max_tokens, 97);  // chat: the rest of the context
  p.sampling.seed = -1;
  EXPECT_EQ(make_engine_requests(p, {1}, "", 100, 16)[2].sampling.seed, -1);  // unseeded stays unseeded

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

}  // namespace
}  // namespace lp::server
