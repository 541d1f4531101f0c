// vLLM's request fields through the real HTTP server and a scripted backend (fake_backend.h): a list of prompts
// (choice indices prompt * n + j, usage per prompt), echo, prompt_logprobs, stop_reason, truncation, the
// per-request chat template (refused unless trusted, bounded when trusted), continue_final_message and the
// engine-request mapping of bad_words / allowed_token_ids.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <set>
#include <thread>

#include "server/http_client.h"
#include "server/server.h"
#include "text/chat_template.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/server_fixture.h"

namespace lp::server {
namespace {

using json = nlohmann::json;

struct Fixture : test::FakeServer {
  explicit Fixture(ServerOptions o = {}) : FakeServer("http-fields", std::move(o)) {}
  HttpClientResponse post(const std::string& path, const std::string& body) {
    HttpClient c("127.0.0.1", port, 10);
    HttpClientResponse r = c.request("POST", path, body, {{"Content-Type", "application/json"}});
    EXPECT_TRUE(r.error.empty()) << r.error;
    return r;
  }
  std::vector<int32_t> ids(const std::string& s, bool special = true) { return tok->encode(s, special); }
};

std::vector<json> sse_chunks(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\n\n", pos);
    std::string d = body.substr(pos + 6, end - pos - 6);
    if (d != "[DONE]") out.push_back(json::parse(d));
    pos = end;
  }
  return out;
}

std::string param_of(const HttpClientResponse& r) {
  EXPECT_EQ(r.status, 400) << r.body;
  json j = json::parse(r.body);
  return j["error"]["param"].is_string() ? j["error"]["param"].get<std::string>() : "";
}

TEST(HttpFields, ListOfPromptsIndexesChoicesPromptMajor) {
  Fixture f;
  auto r = f.post("/v1/completions", R"({"prompt":["hello","a b c"],"n":2,"max_tokens":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  const auto a = f.ids("hello"), b = f.ids("a b c");
  EXPECT_EQ(j["usage"]["prompt_tokens"], a.size() + b.size());  // once per prompt, not per choice
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  auto sub = f.backend.submitted();
  ASSERT_EQ(sub.size(), 4u);
  std::multiset<std::vector<int32_t>> prompts;
  for (const auto& s : sub) prompts.insert(s.prompt);
  EXPECT_EQ(prompts, (std::multiset<std::vector<int32_t>>{a, a, b, b}));

  auto s = f.post("/v1/completions", R"({"prompt":[[5,6],[7]],"n":2,"max_tokens":1,"stream":true})");
  ASSERT_EQ(s.status, 200);
  std::set<int> indices;
  for (const auto& c : sse_chunks(s.body)) indices.insert(c["choices"][0]["index"].get<int>());
  EXPECT_EQ(indices, (std::set<int>{0, 1, 2, 3}));
}

TEST(HttpFields, EchoPrependsThePrompt) {
  Fixture f;
  json j = json::parse(f.post("/v1/completions", R"({"prompt":"hello","echo":true,"max_tokens":2})").body);
  EXPECT_EQ(j["choices"][0]["text"], "hellot0 t1 ");
  // max_tokens 0: the prompt alone; the one token generated counts in usage (as vLLM).
  json only = json::parse(f.post("/v1/completions", R"({"prompt":"hello","echo":true,"max_tokens":0})").body);
  EXPECT_EQ(only["choices"][0]["text"], "hello");
  EXPECT_EQ(only["usage"]["completion_tokens"], 1);
  // With logprobs: the prompt tokens' first (the first null), then the generated ones.
  const auto prompt = f.ids("hello");
  json lp = json::parse(f.post("/v1/completions", R"({"prompt":"hello","echo":true,"max_tokens":2,"logprobs":1})").body);
  const json& l = lp["choices"][0]["logprobs"];
  ASSERT_EQ(l["tokens"].size(), prompt.size() + 2);
  EXPECT_TRUE(l["token_logprobs"][0].is_null());
  EXPECT_TRUE(l["top_logprobs"][0].is_null());
  if (prompt.size() > 1) {
    EXPECT_DOUBLE_EQ(l["token_logprobs"][1].get<double>(), -0.25);  // the fake's logprob of prompt token 1
  }
  EXPECT_DOUBLE_EQ(l["token_logprobs"][prompt.size()].get<double>(), -0.5);  // the first generated token
  // Streaming: the prompt comes first, in its own chunk.
  auto s = sse_chunks(f.post("/v1/completions", R"({"prompt":"hello","echo":true,"max_tokens":1,"stream":true})").body);
  ASSERT_GE(s.size(), 2u);
  EXPECT_EQ(s[0]["choices"][0]["text"], "hello");
  // Chat: the last message is echoed when it is the assistant's.
  json c = json::parse(f.post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"},
      {"role":"assistant","content":"Pre"}],"echo":true,"max_tokens":1})").body);
  EXPECT_EQ(c["choices"][0]["message"]["content"], "Pret0 ");
}

TEST(HttpFields, PromptLogprobsAndStopReason) {
  Fixture f;
  const auto prompt = f.ids("a b c");
  ASSERT_GE(prompt.size(), 2u);
  json j = json::parse(f.post("/v1/completions", R"({"prompt":"a b c","max_tokens":1,"prompt_logprobs":1})").body);
  const json& pl = j["choices"][0]["prompt_logprobs"];
  ASSERT_EQ(pl.size(), prompt.size());
  EXPECT_TRUE(pl[0].is_null());
  const json& e1 = pl[1][std::to_string(prompt[1])];
  EXPECT_DOUBLE_EQ(e1["logprob"].get<double>(), -0.25);
  EXPECT_EQ(e1["rank"], 2);
  EXPECT_EQ(e1["decoded_token"], f.tok->decode(std::vector<int32_t>{prompt[1]}, false));
  EXPECT_TRUE(pl[1].contains("300"));  // the top-1 alternative
  EXPECT_TRUE(j["choices"][0]["stop_reason"].is_null());  // finished by length
  // Chat: top-level prompt_logprobs.
  json c = json::parse(f.post("/v1/chat/completions",
                              R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"prompt_logprobs":0})").body);
  EXPECT_TRUE(c["prompt_logprobs"].is_array());
  EXPECT_TRUE(c["prompt_logprobs"][0].is_null());
  EXPECT_TRUE(c["choices"][0].contains("stop_reason"));
  // stop_reason: the stop token id (the fake stops on the first stop_token_ids entry).
  json st = json::parse(f.post("/v1/completions", R"({"prompt":"x","max_tokens":2,"stop_token_ids":[5]})").body);
  EXPECT_EQ(st["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(st["choices"][0]["stop_reason"], 5);
  auto s = sse_chunks(f.post("/v1/completions", R"({"prompt":"x","max_tokens":2,"stop_token_ids":[5],"stream":true})").body);
  ASSERT_FALSE(s.empty());
  EXPECT_TRUE(s.front()["choices"][0]["stop_reason"].is_null());
  EXPECT_EQ(s.back()["choices"][0]["stop_reason"], 5);
}

TEST(HttpFields, ContinuousUsageStatsOnEveryChunk) {
  Fixture f;
  const int64_t n_prompt = static_cast<int64_t>(f.ids("hello").size());
  auto s = sse_chunks(f.post("/v1/completions", R"({"prompt":"hello","max_tokens":3,"stream":true,
      "stream_options":{"continuous_usage_stats":true}})").body);
  ASSERT_EQ(s.size(), 4u);  // 3 token chunks + the final usage chunk
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(s[k]["usage"]["prompt_tokens"], n_prompt);
    EXPECT_EQ(s[k]["usage"]["completion_tokens"], k + 1);
    EXPECT_EQ(s[k]["usage"]["total_tokens"], n_prompt + k + 1);
  }
  EXPECT_TRUE(s[3]["choices"].empty());
  EXPECT_EQ(s[3]["usage"]["completion_tokens"], 3);
}

TEST(HttpFields, ReturnTokensAsTokenIds) {
  Fixture f;  // the fake generates token 100 + i, alternatives 200 + k
  json j = json::parse(f.post("/v1/completions", R"({"prompt":"hello","max_tokens":2,"logprobs":1,
      "return_tokens_as_token_ids":true})").body);
  EXPECT_EQ(j["choices"][0]["logprobs"]["tokens"], (json{"token_id:100", "token_id:101"}));
  EXPECT_TRUE(j["choices"][0]["logprobs"]["top_logprobs"][0].contains("token_id:200"));
  json c = json::parse(f.post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":1,
      "logprobs":true,"return_tokens_as_token_ids":true})").body);
  EXPECT_EQ(c["choices"][0]["logprobs"]["content"][0]["token"], "token_id:100");
}

TEST(HttpFields, TruncationAndEngineMapping) {
  Fixture f;  // the fake's max_model_len is 64
  ASSERT_EQ(f.post("/v1/completions", R"({"prompt":[1,2,3,4,5,6],"max_tokens":1,"truncate_prompt_tokens":3})").status,
            200);
  EXPECT_EQ(f.backend.submitted().back().prompt, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(param_of(f.post("/v1/completions", R"({"prompt":"x","truncate_prompt_tokens":65})")),
            "truncate_prompt_tokens");
  EXPECT_EQ(param_of(f.post("/v1/completions", R"({"prompt":"x","allowed_token_ids":[600]})")), "allowed_token_ids");
  ASSERT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":3,"min_tokens":2,"allowed_token_ids":[9,4],
      "bad_words":["hello"]})").status, 200);
  const sched::Request last = f.backend.submitted().back();
  EXPECT_EQ(last.min_tokens, 2);
  ASSERT_TRUE(last.allowed_token_ids);
  EXPECT_EQ(*last.allowed_token_ids, (std::vector<int32_t>{4, 9}));
  ASSERT_TRUE(last.bad_words);
  EXPECT_EQ(last.bad_words->at(0), f.ids("hello", false));
  EXPECT_EQ(param_of(f.post("/v1/completions", R"({"prompt":"x","max_tokens":3,"min_tokens":4})")), "min_tokens");
  EXPECT_EQ(param_of(f.post("/v1/completions", R"({"prompt":"x","use_beam_search":true})")), "use_beam_search");
}

// loraplex's "adapters" field: the model's adapter leads at scale 1 (or at its listed scale), the others
// follow in the listed order; every refusal names the field.
TEST(HttpFields, AdaptersFieldBuildsTheStack) {
  ServerOptions o;
  o.max_stacked_loras = 3;
  Fixture f(o);
  for (const char* n : {"med", "fr", "code", "legal"}) f.backend.register_adapter(n, "/x", false, false, std::nullopt);
  auto last = [&] { return f.backend.submitted().back(); };
  auto stack_of = [&](const sched::Request& r) {
    std::vector<std::pair<std::string, float>> v = {{r.adapter, r.adapter_scale}};
    for (const auto& m : r.more_adapters) v.emplace_back(m.name, m.scale);
    return v;
  };
  using Stack = std::vector<std::pair<std::string, float>>;
  ASSERT_EQ(f.post("/v1/completions", R"({"model":"med","prompt":"x","max_tokens":1})").status, 200);
  EXPECT_EQ(stack_of(last()), (Stack{{"med", 1.f}}));
  EXPECT_TRUE(last().more_adapters.empty());
  ASSERT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":1,
      "adapters":[{"name":"med","scale":0.5},{"name":"fr","scale":1.0}]})").status, 200);
  EXPECT_EQ(stack_of(last()), (Stack{{"med", 0.5f}, {"fr", 1.f}}));
  ASSERT_EQ(f.post("/v1/completions", R"({"model":"code","prompt":"x","max_tokens":1,
      "adapters":[{"name":"fr"},{"name":"med","scale":-2}]})").status, 200);
  EXPECT_EQ(stack_of(last()), (Stack{{"code", 1.f}, {"fr", 1.f}, {"med", -2.f}}));
  ASSERT_EQ(f.post("/v1/chat/completions", R"({"model":"fr","messages":[{"role":"user","content":"hi"}],
      "max_tokens":1,"adapters":[{"name":"med","scale":0.25},{"name":"fr","scale":0}]})").status, 200);
  EXPECT_EQ(stack_of(last()), (Stack{{"fr", 0.f}, {"med", 0.25f}}));
  ASSERT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":1,"adapters":[]})").status, 200);
  EXPECT_EQ(stack_of(last()), (Stack{{"", 1.f}}));

  auto refused = [&](const std::string& fields) {
    auto r = f.post("/v1/completions", R"({"prompt":"x","max_tokens":1,)" + fields + "}");
    EXPECT_EQ(param_of(r), "adapters") << fields;
    return json::parse(r.body)["error"]["message"].get<std::string>();
  };
  EXPECT_NE(refused(R"("adapters":{"name":"med"})").find("must be a list"), std::string::npos);
  EXPECT_NE(refused(R"("adapters":[{"name":"med","weight":1}])").find("unknown key 'weight'"), std::string::npos);
  EXPECT_NE(refused(R"("adapters":[{"scale":1}])").find("non-empty"), std::string::npos);
  EXPECT_NE(refused(R"("adapters":[{"name":"med","scale":17}])").find("within [-16, 16]"), std::string::npos);
  EXPECT_NE(refused(R"("adapters":[{"name":"med"},{"name":"med"}])").find("twice"), std::string::npos);
  EXPECT_NE(refused(R"("adapters":[{"name":"med"},{"name":"fr"},{"name":"code"},{"name":"legal"}])")
                .find("at most 3 (--max-stacked-loras)"),
            std::string::npos);
  EXPECT_NE(refused(R"("model":"med","adapters":[{"name":"fr"},{"name":"code"},{"name":"legal"}])")
                .find("stacks 4 adapters"),
            std::string::npos);
  EXPECT_NE(refused(R"("adapters":[{"name":"base"}])").find("base model"), std::string::npos);
  auto unknown = f.post("/v1/completions", R"({"prompt":"x","adapters":[{"name":"nope"}]})");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  const auto before = f.backend.submitted().size();
  EXPECT_EQ(f.post("/v1/completions", R"({"prompt":"x","adapters":[{"name":"med","scale":"1"}]})").status, 400);
  EXPECT_EQ(f.backend.submitted().size(), before) << "a refused request reached the engine";
}

TEST(HttpFields, RequestChatTemplateNeedsTrust) {
  const std::string body =
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Once upon"}],"max_tokens":1,
          "chat_template":"{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}")";
  {
    Fixture f;
    EXPECT_EQ(param_of(f.post("/v1/chat/completions", body + "}")), "chat_template");
  }
  ServerOptions o;
  o.trust_request_chat_template = true;
  Fixture f(o);
  ASSERT_EQ(f.post("/v1/chat/completions", body + "}").status, 200);
  EXPECT_EQ(f.backend.submitted().back().prompt, f.ids("<user>hi</s><assistant>Once upon</s>", false));
  // continue_final_message: the prompt ends inside the assistant's message.
  ASSERT_EQ(f.post("/v1/chat/completions", body + R"(,"continue_final_message":true})").status, 200);
  EXPECT_EQ(f.backend.submitted().back().prompt, f.ids("<user>hi</s><assistant>Once upon", false));
  // A hostile template ends in a 400 quickly, under the request-template bounds.
  const auto t0 = std::chrono::steady_clock::now();
  auto r = f.post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"chat_template":
      "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'xxxxxxxx' * 1000 }}{% endfor %}{% endfor %}"})");
  EXPECT_EQ(param_of(r), "chat_template");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(param_of(f.post("/v1/chat/completions",
                            R"({"messages":[{"role":"user","content":"hi"}],"chat_template":"{% for %}"})")),
            "chat_template");
}

// The request-template bounds leave room for real templates: Qwen 2.5's over 200 long messages and 3 tools.
TEST(HttpFields, RealTemplateOverALongChatFitsTheRequestBounds) {
  ServerOptions o;
  o.trust_request_chat_template = true;
  Fixture f(o);
  f.backend.max_len = 1 << 20;
  std::ifstream in(test::source_dir() / "tests/fixtures/chat/templates/qwen2.5-instruct.jinja");
  ASSERT_TRUE(in) << "tests/fixtures/chat/templates/qwen2.5-instruct.jinja is missing";
  std::stringstream src;
  src << in.rdbuf();
  json body = {{"max_tokens", 1}, {"chat_template", src.str()}, {"messages", json::array()}, {"tools", json::array()},
               {"tool_choice", "none"}};  // tools for the template only ("auto" needs the tool-choice flags)
  for (int i = 0; i < 200; ++i)
    body["messages"].push_back({{"role", i % 2 ? "assistant" : "user"},
                                {"content", "message " + std::to_string(i) + std::string(400, 'x')}});
  for (int t = 0; t < 3; ++t)
    body["tools"].push_back({{"type", "function"},
                             {"function", {{"name", "tool" + std::to_string(t)}, {"description", "does things"},
                                           {"parameters", {{"type", "object"}, {"properties", {{"a", {{"type", "string"}}}}}}}}}});
  auto r = f.post("/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 500);
  const auto prompt = f.backend.submitted().back().prompt;
  EXPECT_GT(prompt.size(), 200u * 400u / 8);  // the whole chat was rendered
}

}  // namespace
}  // namespace lp::server
