// Small server units: error mapping, response/chunk shapes and SSE framing, logprob formats, Prometheus text,
// API-key checks and --lora-root path containment (with real symlinks).
#include <gtest/gtest.h>

#include <filesystem>

#include "io/file_open.h"
#include "server/api_error.h"
#include "server/auth.h"
#include "server/lora_paths.h"
#include "server/metrics.h"
#include "server/openai_response.h"
#include "util/test_util.h"

namespace lp::server {
namespace {

using ojson = nlohmann::ordered_json;

ErrorReply reply_for(auto&& thrower) {
  try {
    thrower();
  } catch (...) {
    return error_reply(std::current_exception());
  }
  return {};
}

TEST(ApiErrorMapping, KindsToStatusAndType) {
  struct Case {
    ErrorKind kind;
    int status;
    const char* type;
  } cases[] = {{ErrorKind::kInvalid, 400, "BadRequestError"},
               {ErrorKind::kNotFound, 404, "NotFoundError"},
               {ErrorKind::kForbidden, 403, "PermissionDeniedError"},
               {ErrorKind::kTooLarge, 413, "RequestTooLargeError"},
               {ErrorKind::kUnavailable, 503, "ServiceUnavailableError"},
               {ErrorKind::kOverloaded, 429, "RateLimitError"}};
  for (const auto& c : cases) {
    ErrorReply r = reply_for([&] { throw Error("msg", c.kind); });
    EXPECT_EQ(r.status, c.status);
    EXPECT_EQ(r.body["error"]["type"], c.type);
    EXPECT_EQ(r.body["error"]["message"], "msg");
    EXPECT_TRUE(r.body["error"]["param"].is_null());
    EXPECT_EQ(r.retry_after_s > 0, c.status == 503 || c.status == 429);
  }
  ErrorReply p = reply_for([] { throw ApiError("too long", ErrorKind::kInvalid, "messages", "context_length_exceeded"); });
  EXPECT_EQ(p.body["error"]["param"], "messages");
  EXPECT_EQ(p.body["error"]["code"], "context_length_exceeded");
  ErrorReply u = reply_for([] { throw ApiError("no", ErrorKind::kInvalid, {}, {}, 401); });
  EXPECT_EQ(u.status, 401);
  EXPECT_EQ(u.body["error"]["type"], "AuthenticationError");
  EXPECT_EQ(reply_for([] { throw std::runtime_error("boom"); }).status, 500);
  EXPECT_EQ(reply_for([] { throw 42; }).status, 500);
  EXPECT_EQ(reply_for([] { (void)nlohmann::json::parse("{").at("x"); }).status, 400);
  // Invalid UTF-8 in a message never makes the dump throw.
  EXPECT_NO_THROW(dump_json(make_error(400, std::string("bad \xff byte")).body));
}

TEST(OpenAIResponse, SseFraming) {
  EXPECT_EQ(sse_event(ojson{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_STREQ(kSseDone, "data: [DONE]\n\n");
  // Text with newlines stays on one data line (JSON escapes them).
  std::string ev = sse_event(ojson{{"t", "x\ny"}});
  EXPECT_EQ(ev.find('\n'), ev.size() - 2);
}

TEST(OpenAIResponse, ChunksAndFullResponses) {
  ResponseMeta chat{Api::kChat, "chatcmpl-1", 5, "m"};
  ojson first = stream_chunk(chat, 0, "", true, nullptr, sched::FinishReason::kNone, false);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (ojson{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(first.contains("usage"));
  ojson last = stream_chunk(chat, 1, "", false, nullptr, sched::FinishReason::kStop, true);
  EXPECT_EQ(last["choices"][0]["delta"], ojson::object());
  EXPECT_EQ(last["choices"][0]["index"], 1);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["usage"].is_null());
  ojson usage = usage_chunk(chat, 3, 4);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);

  ResponseMeta cmpl{Api::kCompletion, "cmpl-1", 5, "m"};
  std::vector<ChoiceResult> choices(2);
  choices[0].text = "ab";
  choices[0].finish = sched::FinishReason::kLength;
  choices[0].completion_tokens = 2;
  choices[1].text = "c";
  choices[1].finish = sched::FinishReason::kStop;
  choices[1].completion_tokens = 1;
  ojson full = full_response(cmpl, choices, 10, -1, [](int32_t) { return std::string(); });
  EXPECT_EQ(full["object"], "text_completion");
  EXPECT_EQ(full["choices"][1]["text"], "c");
  EXPECT_EQ(full["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(full["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(full["usage"], (ojson{{"prompt_tokens", 10}, {"completion_tokens", 3}, {"total_tokens", 13}}));
  EXPECT_EQ(make_response_id(Api::kChat).rfind("chatcmpl-", 0), 0u);
  EXPECT_NE(make_response_id(Api::kCompletion), make_response_id(Api::kCompletion));
}

TEST(OpenAIResponse, LogprobShapes) {
  auto text = [](int32_t id) { return id == 1 ? std::string("é") : "t" + std::to_string(id); };
  std::vector<sched::TokenLogprob> lps = {{1, -0.25f, {{2, -1.0f}, {1, -0.25f}}},
                                          {3, -std::numeric_limits<float>::infinity(), {{4, -2.0f}}}};
  CompletionLogprobState st;
  ojson c = completion_logprobs(lps, text, st);
  EXPECT_EQ(c["tokens"], (ojson{"é", "t3"}));
  EXPECT_EQ(c["token_logprobs"][1], -9999.0);  // -inf is not JSON
  EXPECT_EQ(c["text_offset"], (ojson{0, 2}));  // byte offsets: "é" is two bytes
  EXPECT_EQ(c["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(c["top_logprobs"][1].size(), 2u);  // the sampled token is always listed
  EXPECT_EQ(st.text_offset, 4u);               // streaming continues from here
  ojson ch = chat_logprobs_content(lps, text, 1);
  EXPECT_EQ(ch[0]["token"], "é");
  EXPECT_EQ(ch[0]["bytes"], (ojson{0xC3, 0xA9}));
  ASSERT_EQ(ch[0]["top_logprobs"].size(), 1u);
  EXPECT_EQ(ch[0]["top_logprobs"][0]["token"], "t2");
}

TEST(Metrics, PrometheusText) {
  MetricsRegistry m;
  m.describe("a_total", MetricType::kCounter, "Help with \\ and\nnewline.");
  m.describe("g", MetricType::kGauge, "A gauge.");
  m.describe("h_seconds", MetricType::kHistogram, "A histogram.", {0.1, 1.0});
  m.add("a_total", {{"k", "v\"q\\\n"}}, 2);
  m.set("g", {}, 0.25);
  m.observe("h_seconds", {}, 0.05);
  m.observe("h_seconds", {}, 0.1);  // le is inclusive
  m.observe("h_seconds", {}, 5);
  m.describe("mirror", MetricType::kHistogram, "Mirrored.", {1, 2});
  m.set_histogram("mirror", {{"s", "x"}}, {1, 3}, 4, 9.5);
  std::string t = m.render();
  EXPECT_NE(t.find("# HELP a_total Help with \\\\ and\\nnewline.\n# TYPE a_total counter\n"), std::string::npos) << t;
  EXPECT_NE(t.find("a_total{k=\"v\\\"q\\\\\\n\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE g gauge\ng 0.25\n"), std::string::npos);
  EXPECT_NE(t.find("h_seconds_bucket{le=\"0.1\"} 2\nh_seconds_bucket{le=\"1\"} 2\nh_seconds_bucket{le=\"+Inf\"} 3\n"
                   "h_seconds_sum 5.15\nh_seconds_count 3\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("mirror_bucket{s=\"x\",le=\"1\"} 1\nmirror_bucket{s=\"x\",le=\"2\"} 3\n"
                   "mirror_bucket{s=\"x\",le=\"+Inf\"} 4\nmirror_sum{s=\"x\"} 9.5\nmirror_count{s=\"x\"} 4\n"),
            std::string::npos)
      << t;
  EXPECT_EQ(m.value("a_total", {{"k", "v\"q\\\n"}}), 2);
  EXPECT_EQ(m.value("h_seconds"), 3);
  m.clear("a_total");
  EXPECT_EQ(m.render().find("a_total{"), std::string::npos);
  EXPECT_EQ(prom_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(prom_value(std::nan("")), "NaN");
  EXPECT_EQ(prom_value(1e20), "1e+20");
  int collected = 0;
  m.add_collector([&](MetricsRegistry& r) { r.set("g", {}, ++collected); });
  EXPECT_NE(m.render().find("\ng 1\n"), std::string::npos);
}

TEST(Auth, BearerConstantTimeCompare) {
  EXPECT_TRUE(bearer_authorized("Bearer k3y", "k3y"));
  EXPECT_TRUE(bearer_authorized("bearer k3y", "k3y"));
  EXPECT_FALSE(bearer_authorized("Bearer k3", "k3y"));
  EXPECT_FALSE(bearer_authorized("Bearer k3yy", "k3y"));
  EXPECT_FALSE(bearer_authorized("Basic k3y", "k3y"));
  EXPECT_FALSE(bearer_authorized("", "k3y"));
  EXPECT_FALSE(bearer_authorized("Bearer ", ""));
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abd", "abc"));
  EXPECT_FALSE(constant_time_equal("", "abc"));
  EXPECT_TRUE(path_needs_auth("/v1/models"));
  EXPECT_FALSE(path_needs_auth("/health"));
  EXPECT_FALSE(path_needs_auth("/metrics"));
  EXPECT_TRUE(path_needs_auth("/tokenize"));
  EXPECT_TRUE(path_needs_auth("/detokenize"));
  EXPECT_FALSE(path_needs_auth("/version"));
  EXPECT_FALSE(path_needs_auth("/tokenizer"));  // exact paths only
}

int status_of_resolve(const std::optional<std::filesystem::path>& root, const std::string& p) {
  try {
    resolve_adapter_path(root, p);
  } catch (const Error& e) {
    return status_of(e.kind());
  }
  return 200;
}

TEST(LoraPaths, ContainmentUnderRoot) {
  namespace fs = std::filesystem;
  test::TempDir root("root"), outside("outside");
  fs::create_directories(root / "a" / "b");
  fs::create_directories(outside / "evil");
  fs::create_symlink(outside.path() / "evil", root / "link");
  fs::create_symlink(root.path() / "a", root / "inner");
  std::optional<fs::path> r = root.path();
  EXPECT_EQ(status_of_resolve(r, "a"), 200);
  EXPECT_EQ(status_of_resolve(r, (root / "a" / "b").string()), 200);
  EXPECT_EQ(status_of_resolve(r, "a/../a/b"), 200);
  EXPECT_EQ(status_of_resolve(r, "inner/b"), 200);          // a symlink that stays inside
  EXPECT_EQ(status_of_resolve(r, "link"), 403);             // a symlink that leaves
  EXPECT_EQ(status_of_resolve(r, "a/../../x"), 403);
  EXPECT_EQ(status_of_resolve(r, (outside / "evil").string()), 403);
  EXPECT_EQ(status_of_resolve(r, "missing"), 404);
  EXPECT_EQ(status_of_resolve(r, "nope/../../../etc"), 403);  // ".." after a missing part still folds
  EXPECT_EQ(status_of_resolve(r, ""), 400);
  EXPECT_EQ(status_of_resolve(std::nullopt, (outside / "evil").string()), 200);  // no root: anywhere
  EXPECT_EQ(status_of_resolve(std::nullopt, (outside / "nothing").string()), 404);

  EXPECT_TRUE(io::path_is_within("/a/b/c", "/a/b"));
  EXPECT_TRUE(io::path_is_within("/a/b", "/a/b"));
  EXPECT_FALSE(io::path_is_within("/a/bc", "/a/b"));
  EXPECT_FALSE(io::path_is_within("/a", "/a/b"));

  EXPECT_TRUE(find_adapter_under_root(root.path(), "a").has_value());
  EXPECT_FALSE(find_adapter_under_root(root.path(), "missing").has_value());
  EXPECT_FALSE(find_adapter_under_root(root.path(), "../outside").has_value());
  EXPECT_FALSE(find_adapter_under_root(root.path(), ".hidden").has_value());
  EXPECT_THROW(find_adapter_under_root(root.path(), "link"), Error);
  EXPECT_TRUE(is_plain_adapter_name("medical-qa_v1.2"));
  EXPECT_FALSE(is_plain_adapter_name("a/b"));
  EXPECT_FALSE(is_plain_adapter_name(".."));
}

}  // namespace
}  // namespace lp::server
