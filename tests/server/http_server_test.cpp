// The HTTP layer in-process against a scripted backend (fake_backend.h): response shapes, SSE framing, n > 1
// seeds, every error class with the OpenAI error shape, auth, health/draining, adapter admin endpoints and
// --lora-root, and that a client going away (mid-stream, or before the first token) aborts its requests.
#include <gtest/gtest.h>
#include <httplib.h>

#include <csignal>
#include <filesystem>
#include <set>
#include <thread>

#include "fake_backend.h"
#include "server/metrics.h"
#include "server/server.h"
#include "text/chat_template.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/test_util.h"

namespace lp::server {
namespace {

using json = nlohmann::json;

struct Fixture {
  test::TempDir dir{"http"};
  test::FakeBackend backend;
  std::optional<text::Tokenizer> tok;
  std::optional<text::ChatTemplate> tmpl;
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = 0;

  explicit Fixture(ServerOptions o = {}, bool attach = true) {
    std::signal(SIGPIPE, SIG_IGN);
    text::write_demo_tokenizer(dir.path() / "model", 600, 1);
    tok.emplace(text::Tokenizer::from_dir(dir.path() / "model"));
    tmpl.emplace(text::ChatTemplate::from_dir(dir.path() / "model"));
    o.port = 0;
    o.served_model_name = "base";
    o.model_dir = (dir.path() / "model").string();
    server = std::make_unique<Server>(o);
    port = server->bind();
    thread = std::thread([this] { server->listen(); });
    if (attach) server->attach(&backend, &*tok, &*tmpl);
  }
  ~Fixture() {
    server->stop();
    thread.join();
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(10, 0);
    return c;
  }
  httplib::Result post(const std::string& path, const std::string& body, httplib::Headers h = {}) {
    return client().Post(path.c_str(), h, body, "application/json");
  }
};

json error_of(const httplib::Result& r) {
  json j = json::parse(r->body);
  EXPECT_TRUE(j.contains("error")) << r->body;
  return j["error"];
}

TEST(HttpServer, CompletionNonStreamingHasChoicesAndUsage) {
  Fixture f;
  auto r = f.post("/v1/completions", R"({"model":"base","prompt":"hello","max_tokens":3})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "base");
  EXPECT_EQ(j["choices"][0]["text"], "t0 t1 t2 ");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["prompt_tokens"], static_cast<int>(f.tok->encode("hello", true).size()));
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + 3);
  // The prompt reached the engine with BOS (completions add special tokens).
  auto sub = f.backend.submitted();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].prompt, f.tok->encode("hello", true));
}

std::vector<std::string> sse_data_lines(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated SSE event at " << pos;
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    if (ev.rfind("data: ", 0) == 0) out.push_back(ev.substr(6));
    else EXPECT_EQ(ev[0], ':') << "not an SSE data or comment line: " << ev;
    pos = end + 2;
  }
  return out;
}

TEST(HttpServer, StreamIsSseWithUsageChunkAndDone) {
  Fixture f;
  auto r = f.post("/v1/completions",
                  R"({"prompt":"hi","max_tokens":4,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  auto lines = sse_data_lines(r->body);
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 2 < lines.size(); ++i) {
    json c = json::parse(lines[i]);
    EXPECT_TRUE(c.contains("usage") && c["usage"].is_null());
    text += c["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, "t0 t1 t2 t3 ");
  json last = json::parse(lines[lines.size() - 3]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  json usage = json::parse(lines[lines.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 4);
}

TEST(HttpServer, ChatStreamSendsRoleFirstAndLogprobs) {
  Fixture f;
  auto r = f.post("/v1/chat/completions",
                  R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true,
                      "logprobs":true,"top_logprobs":2})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto lines = sse_data_lines(r->body);
  json first = json::parse(lines[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  json second = json::parse(lines[1]);
  EXPECT_EQ(second["choices"][0]["delta"]["content"], "t0 ");
  auto lp = second["choices"][0]["logprobs"]["content"][0];
  EXPECT_FLOAT_EQ(lp["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(lp["top_logprobs"].size(), 2u);
  // The chat prompt is the rendered template, tokenized without adding BOS again.
  std::string rendered = f.tmpl->render(nlohmann::ordered_json::parse(R"([{"role":"user","content":"hi"}])"), true);
  EXPECT_EQ(f.backend.submitted()[0].prompt, f.tok->encode(rendered, false));
}

TEST(HttpServer, NChoicesGetConsecutiveSeeds) {
  Fixture f;
  auto r = f.post("/v1/completions", R"({"prompt":"x","max_tokens":2,"n":3,"seed":7,"temperature":0.8})");
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);
  auto sub = f.backend.submitted();
  ASSERT_EQ(sub.size(), 3u);
  std::set<int64_t> seeds;
  for (auto& s : sub) seeds.insert(static_cast<int64_t>(s.sampling.seed.value_or(0)));
  EXPECT_EQ(seeds, (std::set<int64_t>{7, 8, 9}));
}

TEST(HttpServer, ErrorsHaveOpenAIShapeAndStatus) {
  ServerOptions o;
  o.max_request_bytes = 4096;
  Fixture f(o);
  auto r = f.post("/v1/completions", "{not json");
  ASSERT_EQ(r->status, 400);
  EXPECT_EQ(error_of(r)["type"], "BadRequestError");

  r = f.post("/v1/completions", R"({"prompt":"x","temperature":-1})");
  ASSERT_EQ(r->status, 400);
  EXPECT_EQ(error_of(r)["param"], "temperature");

  r = f.post("/v1/completions", R"({"prompt":"x","model":"nope"})");
  ASSERT_EQ(r->status, 404);
  EXPECT_EQ(error_of(r)["type"], "NotFoundError");

  r = f.post("/v1/completions", json{{"prompt", std::string(10000, 'a')}}.dump());
  ASSERT_EQ(r->status, 413);
  EXPECT_EQ(error_of(r)["type"], "RequestTooLargeError");

  r = f.post("/v1/completions", R"({"prompt":"x","max_tokens":1000})");  // max_len 64
  ASSERT_EQ(r->status, 400);
  EXPECT_EQ(error_of(r)["code"], "context_length_exceeded");

  f.backend.queue_full = true;
  r = f.post("/v1/completions", R"({"prompt":"x"})");
  ASSERT_EQ(r->status, 503);
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  f.backend.queue_full = false;

  f.backend.throw_internal = true;
  r = f.post("/v1/completions", R"({"prompt":"x"})");
  ASSERT_EQ(r->status, 500);
  EXPECT_EQ(error_of(r)["type"], "InternalServerError");
  f.backend.throw_internal = false;

  r = f.client().Get("/v1/nothing-here");
  ASSERT_EQ(r->status, 404);
  EXPECT_EQ(error_of(r)["type"], "NotFoundError");

  // Admin endpoints are off by default.
  ASSERT_EQ(f.post("/v1/load_lora_adapter", "{}")->status, 404);
  // Still healthy after all of them, and a normal request still works.
  EXPECT_EQ(f.client().Get("/health")->status, 200);
  EXPECT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":1})")->status, 200);
}

TEST(HttpServer, ApiKeyGuardsV1Only) {
  ServerOptions o;
  o.api_key = "sekret";
  Fixture f(o);
  auto r = f.client().Get("/v1/models");
  ASSERT_EQ(r->status, 401);
  EXPECT_EQ(error_of(r)["type"], "AuthenticationError");
  EXPECT_EQ(f.client().Get("/v1/models", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(f.client().Get("/v1/models", {{"Authorization", "Bearer sekre"}})->status, 401);
  EXPECT_EQ(f.client().Get("/v1/models", {{"Authorization", "Bearer sekret"}})->status, 200);
  EXPECT_EQ(f.client().Get("/health")->status, 200);
  EXPECT_EQ(f.client().Get("/metrics")->status, 200);
}

TEST(HttpServer, HealthIs503UntilAttachedAndWhileDraining) {
  Fixture f({}, /*attach=*/false);
  EXPECT_EQ(f.client().Get("/health")->status, 503);
  EXPECT_EQ(f.post("/v1/completions", R"({"prompt":"x"})")->status, 503);
  f.server->attach(&f.backend, &*f.tok, &*f.tmpl);
  EXPECT_EQ(f.client().Get("/health")->status, 200);
  f.server->drain();
  EXPECT_EQ(f.client().Get("/health")->status, 503);
  EXPECT_EQ(f.post("/v1/completions", R"({"prompt":"x"})")->status, 503);
  EXPECT_TRUE(f.server->wait_idle(1.0));
}

bool wait_for(const std::function<bool()>& cond, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

TEST(HttpServer, ClientGoneMidStreamAbortsRequest) {
  Fixture f;
  f.backend.token_delay = std::chrono::milliseconds(20);
  int chunks = 0;
  // A receiver that stops after the second chunk: the client closes the connection mid-stream.
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt":"x","max_tokens":60,"stream":true})";
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
  auto c2 = f.client();
  c2.send(req);
  EXPECT_TRUE(wait_for([&] { return f.backend.aborted.load() == 1; }, 3.0)) << "aborted=" << f.backend.aborted;
  EXPECT_TRUE(wait_for([&] { return f.server->in_flight() == 0; }, 3.0));
  EXPECT_EQ(f.backend.finished.load(), 0);
  EXPECT_GE(chunks, 2);
}

TEST(HttpServer, ClientGoneBeforeFirstTokenAbortsRequest) {
  Fixture f;
  f.backend.first_delay = std::chrono::milliseconds(5000);
  auto c = f.client();
  c.set_read_timeout(0, 300000);  // gives up after 0.3 s without a byte
  auto r = c.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"stream":true})",
                  "application/json");
  EXPECT_TRUE(wait_for([&] { return f.backend.aborted.load() == 1; }, 3.0));
  EXPECT_TRUE(wait_for([&] { return f.backend.running.load() == 0; }, 3.0));  // the fake counts abort first
  EXPECT_TRUE(wait_for([&] { return f.server->in_flight() == 0; }, 3.0));
}

TEST(HttpServer, MetricsShowLatenciesAndEngineGauges) {
  Fixture f;
  ASSERT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":3,"stream":true})")->status, 200);
  // The handler records the request's end after the client has read the last chunk, and the fake backend
  // counts the request as no longer running after its last token: wait for both.
  std::string m;
  EXPECT_TRUE(wait_for([&] {
    m = f.client().Get("/metrics")->body;
    return m.find("loraplex_e2e_request_latency_seconds_count 1\n") != std::string::npos &&
           m.find("vllm:num_requests_running{model_name=\"base\"} 0\n") != std::string::npos;
  }, 3.0)) << m;
  EXPECT_NE(m.find("loraplex_time_to_first_token_seconds_count 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("loraplex_inter_token_latency_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(m.find("loraplex_e2e_request_latency_seconds_count 1\n"), std::string::npos);
  EXPECT_NE(m.find("vllm:num_requests_running{model_name=\"base\"} 0\n"), std::string::npos);
  EXPECT_NE(m.find("vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"}"),
            std::string::npos);
  EXPECT_NE(m.find("loraplex_request_success_total{finished_reason=\"length\"} 1\n"), std::string::npos);
}

TEST(HttpServer, AdapterAdminAndModelsList) {
  test::TempDir root("lora-root");
  std::filesystem::create_directories(root / "a1");
  std::filesystem::create_directories(root / "bad");
  std::filesystem::create_directories(root / "auto1");
  test::TempDir outside("outside");
  std::filesystem::create_symlink(outside.path(), root / "escape");
  ServerOptions o;
  o.allow_runtime_lora_updating = true;
  o.lora_root = root.path();
  o.enable_lora_resolver = true;
  Fixture f(o);
  auto load = [&](const std::string& body) { return f.post("/v1/load_lora_adapter", body); };
  auto r = load(R"({"lora_name":"a1"})");
  ASSERT_EQ(r->status, 400);
  EXPECT_EQ(error_of(r)["message"], "Both 'lora_name' and 'lora_path' must be provided.");
  r = load(json{{"lora_name", "a1"}, {"lora_path", (root / "a1").string()}}.dump());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->body, "Success: LoRA adapter 'a1' added successfully.");
  EXPECT_EQ(load(json{{"lora_name", "a1"}, {"lora_path", (root / "a1").string()}}.dump())->status, 400);
  EXPECT_EQ(load(R"({"lora_name":"b","lora_path":"bad"})")->status, 400);
  EXPECT_EQ(load(R"({"lora_name":"m","lora_path":"missing"})")->status, 404);
  EXPECT_EQ(load(json{{"lora_name", "o"}, {"lora_path", outside.path().string()}}.dump())->status, 403);
  EXPECT_EQ(load(R"({"lora_name":"o","lora_path":"a1/../../x"})")->status, 403);
  EXPECT_EQ(load(R"({"lora_name":"o","lora_path":"escape"})")->status, 403);

  json models = json::parse(f.client().Get("/v1/models")->body);
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][0]["id"], "base");
  EXPECT_TRUE(models["data"][0]["parent"].is_null());
  EXPECT_EQ(models["data"][1]["id"], "a1");
  EXPECT_EQ(models["data"][1]["parent"], "base");

  // The resolver registers root/auto1 on first use; a symlink escape is refused.
  EXPECT_EQ(f.post("/v1/completions", R"({"model":"auto1","prompt":"x","max_tokens":1})")->status, 200);
  EXPECT_TRUE(f.backend.is_registered("auto1"));
  EXPECT_EQ(f.post("/v1/completions", R"({"model":"escape","prompt":"x","max_tokens":1})")->status, 403);
  EXPECT_EQ(f.post("/v1/completions", R"({"model":"../a1","prompt":"x","max_tokens":1})")->status, 404);

  r = f.post("/v1/unload_lora_adapter", R"({"lora_name":"a1"})");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "Success: LoRA adapter 'a1' removed successfully.");
  EXPECT_EQ(f.post("/v1/unload_lora_adapter", R"({"lora_name":"a1"})")->status, 404);
  EXPECT_EQ(f.post("/v1/unload_lora_adapter", R"({})")->status, 400);
}

TEST(HttpServer, EngineErrorAfterSubmitIsReported) {
  Fixture f;
  f.backend.register_adapter("broken", "/x", false, false, std::nullopt);
  auto r = f.post("/v1/completions", R"({"model":"broken","prompt":"x","max_tokens":2})");
  ASSERT_EQ(r->status, 500);
  EXPECT_EQ(error_of(r)["message"], "the adapter failed to load");
  r = f.post("/v1/completions", R"({"model":"broken","prompt":"x","max_tokens":2,"stream":true})");
  ASSERT_EQ(r->status, 200);
  auto lines = sse_data_lines(r->body);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(json::parse(lines[0]).contains("error"));
  EXPECT_EQ(lines[1], "[DONE]");
}

}  // namespace
}  // namespace lp::server
