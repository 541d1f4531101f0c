// The OpenAI-compatible HTTP server: routes, authentication, the never-throw wrapper, /health and /metrics,
// and the lifecycle `loraplex serve` drives:
//
//   Server s(options);  s.bind();            // port open: /health answers 503 while the model loads
//   std::thread t([&] { s.listen(); });
//   ... load model, start engine ...
//   s.attach(backend, tokenizer, template);  // ready: /v1/* served, /health 200
//   ... SIGTERM ...
//   s.drain();                               // new generation requests 503; in-flight ones continue
//   s.wait_idle(timeout);  s.stop();  t.join();
//
// Threads: `http_threads` I/O threads (Boost.Asio) serve every connection without blocking; route handlers
// (JSON parsing, chat templating, tokenizing, adapter loads) run on a small handler pool, so a big body or a
// slow disk never holds an I/O thread; generation output reaches a connection through a wake-up from the
// engine's request channel (http_connection.h). Everything shared is in ServerState (server_state.h).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lp::text {
class Tokenizer;
class ChatTemplate;
}  // namespace lp::text

namespace lp::server {

class Backend;
class LoraRoutes;
class MetricsRegistry;
struct ServerState;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0: any free port (bind() returns it)
  std::string api_key;                   // "": no authentication
  std::string served_model_name;         // the base model's id in the API
  std::string model_dir;                 // the base model's folder ("root" in /v1/models)
  // Tool calling (server/tool_calls.h): tool_choice "auto" needs both, as in vLLM.
  bool enable_auto_tool_choice = false;
  std::string tool_call_parser;          // "" | hermes | llama3_json | mistral (checked by the CLI)
  size_t max_request_bytes = 16u << 20;  // bodies over this: 413
  bool allow_runtime_lora_updating = false;
  std::optional<std::filesystem::path> lora_root;
  bool enable_lora_resolver = false;     // with lora_root: load unknown adapter names from lora_root/<name>
  int max_stacked_loras = 4;             // adapters one request may stack ("adapters" field)
  // The HTTP layer's bounds (http_connection.h says what each guards against).
  int http_threads = 2;                  // I/O threads; they never block, and the engine wants the cores
  int handler_threads = 4;               // parse / template / tokenize / adapter-load pool
  int max_connections = 512;             // more: a canned 503 and close
  std::vector<std::string> allowed_origins;  // a request with another Origin: 403 ("*": any)
  size_t max_header_bytes = 16384;       // 431 over it
  int max_headers = 100;                 // 431 over it
  double read_timeout_s = 10;            // a request's head must arrive within it, and its body within another
  double keep_alive_timeout_s = 5;       // idle connections between requests are closed after it
  double write_timeout_s = 30;           // one write that makes no progress for this long: the client is cut
  size_t max_stream_buffer_bytes = 1u << 20;  // a stream's unsent bytes over this: the client is cut
  // Chat: special-token text in client strings (messages, tools) is matched as special tokens, as vLLM does,
  // instead of being plain text (text/chat_prompt.h). Lets a tenant forge turns; off by default.
  bool allow_special_tokens_in_content = false;
  // Chat: a request's own `chat_template` is rendered (with tight bounds) instead of refused with a 400, as
  // vLLM's --trust-request-chat-template.
  bool trust_request_chat_template = false;
  // The operator dashboard's sampler period (server/dashboard.h; serve: 1 s). 0: no sampler thread, so the
  // window stays empty (the in-process tests, which script their fake backend from the test thread).
  double dashboard_sample_s = 0;
  // Behind a load balancer (scripts/cluster.sh): this replica's name, sent back in every response's
  // x-loraplex-replica header so a client or a test sees where its request ran.
  std::string replica_id;
  // The status of a refusal for load (a queue over its cap): 429, or 503 for a proxy that retries 503 on
  // another replica and cannot retry 429 (HAProxy 2.6's retry-on lists no 429).
  int overload_status = 429;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (port 0: a free one) and returns the port. Throws lp::Error when it cannot.
  int bind();
  // Accepts connections until stop(). Call once, on its own thread, after bind().
  void listen();
  // The model is ready: /v1/* are served from `backend` from now on. `chat_template` may be null (then chat
  // completions answer 400). Nothing is owned; all must outlive the server.
  void attach(Backend* backend, const text::Tokenizer* tokenizer, const text::ChatTemplate* chat_template);
  // Stop admitting: generation and adapter endpoints answer 503, /health 503; in-flight requests continue.
  void drain();
  // Waits until no generation request is in flight (or the timeout passes); true when idle.
  bool wait_idle(double timeout_s);
  void stop();

  MetricsRegistry& metrics();
  LoraRoutes& lora_routes();  // routes set at start-up (before attach) go here; thread-safe
  int in_flight() const;  // generation requests being answered now
  const ServerOptions& options() const;

 private:
  std::unique_ptr<ServerState> st_;
  struct Http;
  std::unique_ptr<Http> http_;
};

}  // namespace lp::server
