// The HTTP layer in-process against a scripted backend (fake_backend.h): response shapes, SSE framing, n > 1
// seeds, every error class with the OpenAI error shape, auth, health/draining, adapter admin endpoints and
// --lora-root, that a client going away (mid-stream, before the first token, or while a non-streaming
// answer is pending) aborts its requests, and the transport's bounds (header flood 431, body limit 413 for
// Content-Length and chunked bodies, bad Content-Length 400, Content-Type 415, Origin 403 / CORS, pipelining,
// slow-drip deadlines, idle keep-alive timeout, --max-connections), the last ones over raw sockets.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <set>
#include <thread>

#include "server/http_client.h"
#include "server/metrics.h"
#include "server/server.h"
#include "text/chat_template.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/server_fixture.h"

namespace lp::server {
namespace {

using json = nlohmann::json;
using test::wait_for;

// The calls the tests make, over HttpClient: nullopt when no whole response came back.
class Client {
 public:
  explicit Client(int port) : c_("127.0.0.1", port, 10) {}
  void set_timeout(double s) { c_.set_timeout(s); }
  std::optional<HttpClientResponse> Get(const std::string& path, const HttpHeaders& h = {}) {
    return done(c_.request("GET", path, {}, h));
  }
  std::optional<HttpClientResponse> Post(const std::string& path, const std::string& body,
                                         const std::string& content_type = "application/json",
                                         HttpHeaders h = {}) {
    h.emplace_back("Content-Type", content_type);
    return done(c_.request("POST", path, body, h));
  }
  HttpClientResponse send(const std::string& method, const std::string& path, const std::string& body,
                          const HttpHeaders& h, const std::function<bool(std::string_view)>& on_body) {
    return c_.request(method, path, body, h, on_body);
  }

 private:
  static std::optional<HttpClientResponse> done(HttpClientResponse r) {
    if (!r.error.empty()) return std::nullopt;
    return r;
  }
  HttpClient c_;
};

struct Fixture : test::FakeServer {
  explicit Fixture(ServerOptions o = {}, bool attach = true) : FakeServer("http", std::move(o), {}, attach) {}
  Client client() { return Client(port); }
  std::optional<HttpClientResponse> post(const std::string& path, const std::string& body, HttpHeaders h = {}) {
    return client().Post(path, body, "application/json", std::move(h));
  }
};

json error_of(const std::optional<HttpClientResponse>& r) {
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
  EXPECT_EQ(r->header("Content-Type"), "text/event-stream");
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
  EXPECT_EQ(r->header("Retry-After"), "1");
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
  // HEAD is a GET without the body; a wrong method is 405 naming the allowed one.
  Client c(f.port);
  auto head = c.send("HEAD", "/metrics", "", {}, {});
  EXPECT_EQ(head.status, 200) << head.error;
  EXPECT_EQ(head.error, "");
  EXPECT_TRUE(head.body.empty());
  auto wrong = c.send("GET", "/v1/completions", "", {{"Authorization", "Bearer sekret"}}, {});
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.header("Allow"), "POST");
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

TEST(HttpServer, ClientGoneMidStreamAbortsRequest) {
  Fixture f;
  f.backend.token_delay = std::chrono::milliseconds(20);
  int chunks = 0;
  // A receiver that stops after the second chunk: the client closes the connection mid-stream.
  auto c2 = f.client();
  c2.send("POST", "/v1/completions", R"({"prompt":"x","max_tokens":60,"stream":true})",
          {{"Content-Type", "application/json"}}, [&](std::string_view) { return ++chunks < 2; });
  EXPECT_TRUE(wait_for([&] { return f.backend.aborted.load() == 1; }, 3.0)) << "aborted=" << f.backend.aborted;
  EXPECT_TRUE(wait_for([&] { return f.server->in_flight() == 0; }, 3.0));
  EXPECT_EQ(f.backend.finished.load(), 0);
  EXPECT_GE(chunks, 2);
}

TEST(HttpServer, ClientGoneBeforeFirstTokenAbortsRequest) {
  Fixture f;
  f.backend.first_delay = std::chrono::milliseconds(5000);
  auto c = f.client();
  c.set_timeout(0.3);  // gives up after 0.3 s
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


// ---- the transport's bounds, over raw sockets ----

// One raw TCP connection: send bytes, read what comes back until the server closes or a deadline passes.
class RawConn {
 public:
  explicit RawConn(int port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawConn() { ::close(fd_); }
  bool connected() const { return connected_; }
  bool send(const std::string& s) {
    return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
  }
  // Reads until the peer closes (true) or `seconds` pass (false); appends to `out`.
  bool read_until_closed(std::string& out, double seconds) { return read_while(out, seconds, nullptr) == kClosed; }
  // Reads until `out` holds `needle` or `seconds` pass.
  bool read_until(std::string& out, const std::string& needle, double seconds) {
    return read_while(out, seconds, &needle) == kFound;
  }

 private:
  enum ReadEnd { kFound, kClosed, kTimedOut };
  // Appends what arrives to `out` until it holds *needle (when given), the peer closes, or `seconds` pass.
  ReadEnd read_while(std::string& out, double seconds, const std::string* needle) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      if (needle && out.find(*needle) != std::string::npos) return kFound;
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      end - std::chrono::steady_clock::now()).count());
      if (left <= 0) return kTimedOut;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, left) <= 0) return kTimedOut;
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return kClosed;
      out.append(buf, static_cast<size_t>(n));
    }
  }

  int fd_ = -1;
  bool connected_ = false;
};

int status_of_reply(const std::string& text) {
  if (text.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return std::atoi(text.c_str() + 9);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

TEST(HttpLimits, HeaderFloodAndHugeHeaderAre431) {
  Fixture f;
  HttpHeaders many;
  for (int i = 0; i < 150; ++i) many.emplace_back("X-Flood-" + std::to_string(i), "1");
  auto r = f.client().Get("/health", many);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(error_of(r)["message"].get<std::string>().find("header") != std::string::npos) << r->body;
  r = f.client().Get("/health", {{"X-Big", std::string(20000, 'a')}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  // 90 headers are fine.
  many.resize(90);
  EXPECT_EQ(f.client().Get("/health", many)->status, 200);
}

TEST(HttpLimits, BodyLimitHoldsForContentLengthAndChunked) {
  ServerOptions o;
  o.max_request_bytes = 4096;
  Fixture f(o);
  // Announced too large: refused from the head, before any body byte is read.
  RawConn a(f.port);
  ASSERT_TRUE(a.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000000\r\n\r\n{"));
  std::string out;
  EXPECT_TRUE(a.read_until_closed(out, 3.0));
  EXPECT_EQ(status_of_reply(out), 413) << out;
  // Chunked: counted while reading; the reply comes although the body never ends.
  RawConn b(f.port);
  ASSERT_TRUE(b.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"));
  std::string chunk = "400\r\n" + std::string(1024, ' ') + "\r\n";
  for (int i = 0; i < 5; ++i) b.send(chunk);  // 5 KiB > 4 KiB, no terminating chunk
  out.clear();
  EXPECT_TRUE(b.read_until_closed(out, 3.0));
  EXPECT_EQ(status_of_reply(out), 413) << out;
  EXPECT_NE(out.find("RequestTooLargeError"), std::string::npos) << out;
  // A chunked body under the limit is read whole.
  RawConn c(f.port);
  std::string body = R"({"prompt":"x","max_tokens":2})";
  ASSERT_TRUE(c.send(fmt::format("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                                 body.size(), body)));
  out.clear();
  EXPECT_TRUE(c.read_until(out, "t0 t1 ", 3.0)) << out;
  EXPECT_EQ(status_of_reply(out), 200) << out;
}

TEST(HttpLimits, NegativeContentLengthIs400AtOnce) {
  Fixture f;
  RawConn a(f.port);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(a.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: -5\r\n\r\n"));
  std::string out;
  EXPECT_TRUE(a.read_until_closed(out, 3.0));
  EXPECT_EQ(status_of_reply(out), 400) << out;
  EXPECT_LT(seconds_since(t0), 1.0);
}

TEST(HttpLimits, PostNeedsJsonContentType) {
  Fixture f;
  const std::string body = R"({"prompt":"x","max_tokens":1})";
  auto r = f.client().Post("/v1/completions", body, "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_TRUE(error_of(r).contains("message"));
  EXPECT_EQ(f.client().Post("/v1/completions", body, "application/x-www-form-urlencoded")->status, 415);
  EXPECT_EQ(f.client().Post("/v1/completions", body, "application/jsonx")->status, 415);
  EXPECT_EQ(f.client().Post("/v1/completions", body, "Application/JSON; charset=utf-8")->status, 200);
  EXPECT_EQ(f.client().Post("/v1/completions", body, "application/json;charset=UTF-8")->status, 200);
  EXPECT_EQ(f.backend.submitted().size(), 2u);  // the refused ones never reached the engine
}

TEST(HttpLimits, OriginsAreRefusedUnlessAllowed) {
  test::TempDir root("lora-root");
  ServerOptions o;
  o.allow_runtime_lora_updating = true;
  o.lora_root = root.path();
  o.allowed_origins = {"http://good.example"};
  Fixture f(o);
  // The CSRF shape: a cross-site form post (text/plain needs no preflight) to an admin endpoint.
  auto r = f.client().Post("/v1/load_lora_adapter", R"({"lora_name":"x","lora_path":"y"})", "text/plain",
                           {{"Origin", "http://evil.example"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(error_of(r)["type"], "PermissionDeniedError");
  EXPECT_EQ(f.client().Post("/v1/completions", R"({"prompt":"x","max_tokens":1})", "application/json",
                            {{"Origin", "http://evil.example"}})->status, 403);
  EXPECT_EQ(f.client().Get("/v1/models", {{"Origin", "null"}})->status, 403);
  EXPECT_TRUE(f.backend.submitted().empty());
  // An allowed origin: the answer carries CORS headers; a preflight is answered.
  r = f.client().Post("/v1/completions", R"({"prompt":"x","max_tokens":1})", "application/json",
                      {{"Origin", "http://good.example"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("Access-Control-Allow-Origin"), "http://good.example");
  Client c(f.port);
  auto pre = c.send("OPTIONS", "/v1/completions", "",
                    {{"Origin", "http://good.example"}, {"Access-Control-Request-Method", "POST"},
                     {"Access-Control-Request-Headers", "authorization, content-type"}}, {});
  EXPECT_EQ(pre.status, 204) << pre.error;
  EXPECT_EQ(pre.header("Access-Control-Allow-Origin"), "http://good.example");
  EXPECT_NE(pre.header("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  EXPECT_EQ(pre.header("Access-Control-Allow-Headers"), "authorization, content-type");
  // No Origin (curl, SDKs): unaffected.
  EXPECT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":1})")->status, 200);
}

TEST(HttpLimits, PipelinedRequestsAnswerInOrder) {
  Fixture f;
  f.backend.token_delay = std::chrono::milliseconds(5);
  RawConn a(f.port);
  std::string b1 = R"({"prompt":"x","max_tokens":6})", b2 = R"({"prompt":"x","max_tokens":1})";
  auto req = [](const std::string& b) {
    return fmt::format("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: {}\r\n\r\n{}", b.size(), b);
  };
  ASSERT_TRUE(a.send(req(b1) + req(b2) + "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  std::string out;
  EXPECT_TRUE(a.read_until_closed(out, 5.0));
  size_t first = out.find("t0 t1 t2 t3 t4 t5 "), second = out.find("\"text\":\"t0 \"");
  ASSERT_NE(first, std::string::npos) << out;
  ASSERT_NE(second, std::string::npos) << out;
  EXPECT_LT(first, second);  // the slow one first, as sent
  size_t n = 0;
  for (size_t p = 0; (p = out.find("HTTP/1.1 200 OK", p)) != std::string::npos; ++p) ++n;
  EXPECT_EQ(n, 3u) << out;
}

TEST(HttpLimits, SlowDripIsCutAndHealthStaysFast) {
  ServerOptions o;
  o.read_timeout_s = 0.6;
  Fixture f(o);
  std::vector<std::unique_ptr<RawConn>> drips;
  for (int i = 0; i < 10; ++i) drips.push_back(std::make_unique<RawConn>(f.port));
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n";
  auto t0 = std::chrono::steady_clock::now();
  size_t sent = 0;
  bool cut = false;
  std::vector<double> health_s;
  while (seconds_since(t0) < 3.0 && !cut) {
    for (auto& d : drips)
      if (!d->send(std::string(1, head[sent % head.size()]))) cut = true;
    ++sent;
    auto h0 = std::chrono::steady_clock::now();
    EXPECT_EQ(f.client().Get("/health")->status, 200);
    health_s.push_back(seconds_since(h0));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Each byte arrives in time, but the head as a whole does not: the deadline closes the connection.
  std::string out;
  EXPECT_TRUE(drips[0]->read_until_closed(out, 2.0));
  EXPECT_LT(seconds_since(t0), 2.5);
  for (double h : health_s) EXPECT_LT(h, 0.2);
  // A body that drips is cut the same way.
  RawConn b(f.port);
  ASSERT_TRUE(b.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n{"));
  auto t1 = std::chrono::steady_clock::now();
  out.clear();
  EXPECT_TRUE(b.read_until_closed(out, 3.0));
  EXPECT_LT(seconds_since(t1), 1.5);
  EXPECT_TRUE(f.backend.submitted().empty());
}

TEST(HttpLimits, IdleKeepAliveIsClosed) {
  ServerOptions o;
  o.keep_alive_timeout_s = 0.3;
  Fixture f(o);
  RawConn a(f.port);
  ASSERT_TRUE(a.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string out;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(a.read_until_closed(out, 3.0));
  EXPECT_EQ(status_of_reply(out), 200);
  EXPECT_GT(seconds_since(t0), 0.25);
  EXPECT_LT(seconds_since(t0), 1.5);
}

TEST(HttpLimits, ConnectionsOverTheCapAreRefused) {
  ServerOptions o;
  o.max_connections = 3;
  Fixture f(o);
  std::vector<std::unique_ptr<RawConn>> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<RawConn>(f.port));
    ASSERT_TRUE(idle.back()->connected());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RawConn extra(f.port);
  std::string out;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(extra.read_until_closed(out, 2.0));
  EXPECT_LT(seconds_since(t0), 1.0);
  EXPECT_EQ(status_of_reply(out), 503) << out;
  idle.clear();  // freed: served again
  EXPECT_TRUE(wait_for([&] {
    auto r = f.client().Get("/health");
    return r && r->status == 200;
  }, 3.0));
}

TEST(HttpLimits, ClientGoneWhileNonStreamingAnswerIsPendingAbortsRequest) {
  Fixture f;
  f.backend.token_delay = std::chrono::milliseconds(20);
  Client c(f.port);
  c.set_timeout(0.3);  // the client gives up after 0.3 s: it closes the connection
  auto r = c.Post("/v1/completions", R"({"prompt":"x","max_tokens":60})");
  EXPECT_FALSE(r);
  EXPECT_TRUE(wait_for([&] { return f.backend.aborted.load() == 1; }, 2.0)) << "aborted=" << f.backend.aborted;
  EXPECT_TRUE(wait_for([&] { return f.server->in_flight() == 0; }, 2.0));
  EXPECT_EQ(f.backend.finished.load(), 0);
  std::string m = f.client().Get("/metrics")->body;
  EXPECT_NE(m.find("loraplex_request_aborted_total 1\n"), std::string::npos) << m;
}

TEST(HttpLimits, KeepAliveConnectionServesManyRequests) {
  Fixture f;
  Client c(f.port);
  for (int i = 0; i < 5; ++i) {
    auto r = c.Post("/v1/completions", R"({"prompt":"x","max_tokens":2,"stream":true})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->body.find("data: [DONE]"), std::string::npos);
  }
  EXPECT_EQ(f.backend.submitted().size(), 5u);
}

TEST(HttpLimits, SlowReaderIsCutWithoutStallingOthers) {
  ServerOptions o;
  o.max_stream_buffer_bytes = 64 << 10;
  Fixture f(o);
  f.backend.max_len = 1 << 30;
  f.backend.token_delay = std::chrono::milliseconds(0);
  // A client that reads nothing (and offers a small window): the stream's unsent bytes pile up in the server.
  RawConn slow(f.port, 4096);
  std::string body = R"({"prompt":"x","max_tokens":2000000,"stream":true})";
  ASSERT_TRUE(slow.send(fmt::format("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Content-Length: {}\r\n\r\n{}", body.size(), body)));
  // Meanwhile everyone else is served.
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(f.post("/v1/completions", R"({"prompt":"x","max_tokens":3})")->status, 200);
    EXPECT_LT(seconds_since(t0), 0.5);
  }
  // The slow one is cut and its request aborted, long before its 2,000,000 tokens.
  EXPECT_TRUE(wait_for([&] { return f.backend.aborted.load() == 1; }, 10.0)) << "aborted=" << f.backend.aborted;
  EXPECT_TRUE(wait_for([&] { return f.server->in_flight() == 0; }, 3.0));
}

// /v1/models keeps the OpenAI fields and adds loraplex's "quantization" on the base model's entry: null when
// the base runs unquantized, else what the backend loaded ("int8", "awq", ...).
TEST(HttpServer, ModelsListReportsTheBaseQuantization) {
  {
    Fixture f;
    json m = json::parse(f.client().Get("/v1/models")->body);
    ASSERT_TRUE(m["data"][0].contains("quantization"));
    EXPECT_TRUE(m["data"][0]["quantization"].is_null());
  }
  Fixture f({}, /*attach=*/false);
  f.backend.quant = "int8";  // before attach: the server reads it only once attached
  f.server->attach(&f.backend, &*f.tok, &*f.tmpl);
  json m = json::parse(f.client().Get("/v1/models")->body);
  ASSERT_EQ(m["data"].size(), 1u);
  const json& base = m["data"][0];
  EXPECT_EQ(base["id"], "base");
  EXPECT_EQ(base["object"], "model");
  EXPECT_EQ(base["owned_by"], "loraplex");
  EXPECT_EQ(base["max_model_len"], 64);
  EXPECT_EQ(base["quantization"], "int8");
}

}  // namespace
}  // namespace lp::server
