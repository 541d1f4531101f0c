// The HTTP app: cpp-httplib server set-up (thread pool, backlog, limits, keep-alive), routing, API-key check,
// the wrapper that turns any exception into an error reply, and /health and /metrics.
#include "server/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "core/check.h"
#include "core/log.h"
#include "server/auth.h"
#include "server/backend.h"
#include "server/handlers.h"
#include "server/openai_response.h"

namespace lp::server {

namespace {

// httplib::Server listens with a backlog of 5 (compiled into Debian's library); hundreds of clients that
// connect at once would see dropped SYNs and 1 s retransmits. listen() again on the bound socket raises it.
class HttpServer : public httplib::Server {
 public:
  void raise_backlog(int backlog) {
    socket_t s = svr_sock_.load();
    if (s != INVALID_SOCKET) ::listen(s, backlog);
  }
};

using RouteFn = void (*)(ServerState&, const httplib::Request&, httplib::Response&);

}  // namespace

InFlight::~InFlight() {
  if (st_.in_flight.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(st_.idle_mu);
    st_.idle_cv.notify_all();
  }
}

void write_json(httplib::Response& res, const std::string& json_text, int status) {
  res.status = status;
  res.set_content(json_text, "application/json");
}

void write_error(httplib::Response& res, const ErrorReply& e) {
  res.status = e.status;
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  if (e.body.is_null()) {
    res.set_content("{\"error\":{\"message\":\"internal server error\",\"type\":\"InternalServerError\","
                    "\"param\":null,\"code\":500}}",
                    "application/json");
  } else {
    res.set_content(dump_json(e.body), "application/json");
  }
}

struct Server::Http {
  HttpServer svr;
  std::atomic<bool> bound{false};
  std::atomic<bool> listening{false};  // listen() was called (it may not have started accepting yet)
  std::atomic<bool> stopped{false};
};

namespace {

// Wraps a route: readiness and draining checks, then the handler; nothing escapes.
httplib::Server::Handler route(ServerState& st, RouteFn fn, bool refused_when_draining) {
  return [&st, fn, refused_when_draining](const httplib::Request& req, httplib::Response& res) {
    try {
      if (!st.ready.load(std::memory_order_acquire))
        throw Error("the model is still loading; retry later", ErrorKind::kUnavailable);
      if (refused_when_draining && st.draining.load())
        throw Error("the server is shutting down", ErrorKind::kUnavailable);
      fn(st, req, res);
    } catch (...) {
      write_error(res, error_reply(std::current_exception()));
    }
  };
}

}  // namespace

Server::Server(ServerOptions options) : st_(std::make_unique<ServerState>()), http_(std::make_unique<Http>()) {
  st_->options = std::move(options);
  st_->created = unix_now();
  describe_metrics(*st_);
  ServerState& st = *st_;
  HttpServer& svr = http_->svr;
  const int threads = std::max(8, st.options.http_threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(st.options.max_request_bytes);
  svr.set_keep_alive_max_count(1000);
  svr.set_keep_alive_timeout(st.options.keep_alive_timeout_s);
  svr.set_read_timeout(st.options.read_timeout_s, 0);
  svr.set_write_timeout(st.options.write_timeout_s, 0);
  svr.set_tcp_nodelay(true);

  // Authentication first, for every /v1 path (known or not).
  svr.set_pre_routing_handler([&st](const httplib::Request& req, httplib::Response& res) {
    if (st.options.api_key.empty() || !path_needs_auth(req.path)) return httplib::Server::HandlerResponse::Unhandled;
    if (bearer_authorized(req.get_header_value("Authorization"), st.options.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    write_error(res, make_error(401, "Unauthorized: a valid API key is required (Authorization: Bearer <key>)",
                                {}, "invalid_api_key"));
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors cpp-httplib produces itself (no route: 404, body too large: 413, bad request line: 400) get the
  // same JSON shape; replies a handler already wrote are left alone.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([&st](const httplib::Request& req,
                                                                   httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg;
    switch (res.status) {
      case 404: msg = fmt::format("Not Found: {} {}", req.method, req.path); break;
      case 413:
        msg = fmt::format("the request body is larger than the limit of {} bytes", st.options.max_request_bytes);
        break;
      case 400: msg = "Bad Request: the request could not be parsed"; break;
      default: msg = fmt::format("HTTP error {}", res.status); break;
    }
    int status = res.status;
    write_error(res, make_error(status, msg));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    write_error(res, error_reply(ep));  // a backstop: route() already catches everything
  });
  svr.set_logger([&st](const httplib::Request& req, const httplib::Response& res) {
    st.metrics.add("loraplex_http_requests_total", {{"code", std::to_string(res.status)}});
    log_debug("{} {} -> {}", req.method, req.path, res.status);
  });

  svr.Get("/health", [&st](const httplib::Request&, httplib::Response& res) {
    bool ok = st.ready.load(std::memory_order_acquire) && !st.draining.load();
    res.status = ok ? 200 : 503;
    if (!ok) res.set_header("Retry-After", "1");
    res.set_content(ok ? "" : (st.draining.load() ? "shutting down" : "loading"), "text/plain");
  });
  svr.Get("/metrics", [&st](const httplib::Request&, httplib::Response& res) {
    try {
      res.set_content(st.metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
    } catch (...) {
      write_error(res, error_reply(std::current_exception()));
    }
  });
  svr.Get("/v1/models", route(st, handle_models, false));
  svr.Post("/v1/completions", route(st, handle_completions, true));
  svr.Post("/v1/chat/completions", route(st, handle_chat_completions, true));
  if (st.options.allow_runtime_lora_updating) {
    svr.Post("/v1/load_lora_adapter", route(st, handle_load_adapter, true));
    svr.Post("/v1/unload_lora_adapter", route(st, handle_unload_adapter, true));
  }
}

Server::~Server() { stop(); }

int Server::bind() {
  HttpServer& svr = http_->svr;
  int port = st_->options.port;
  if (port == 0) {
    port = svr.bind_to_any_port(st_->options.host);
    if (port <= 0) fail("cannot bind {} (any port)", st_->options.host);
  } else if (!svr.bind_to_port(st_->options.host, port)) {
    fail("cannot bind {}:{} (in use, or not an address of this machine?)", st_->options.host, port);
  }
  svr.raise_backlog(1024);
  st_->options.port = port;
  http_->bound = true;
  return port;
}

void Server::listen() {
  LP_CHECK(http_->bound.load(), "Server::listen() before bind()");
  http_->listening = true;
  http_->svr.listen_after_bind();
}

void Server::attach(Backend* backend, const text::Tokenizer* tokenizer, const text::ChatTemplate* chat_template) {
  LP_CHECK(backend && tokenizer, "Server::attach needs a backend and a tokenizer");
  st_->backend = backend;
  st_->tokenizer = tokenizer;
  st_->chat_template = chat_template;
  st_->ready.store(true, std::memory_order_release);
}

void Server::drain() { st_->draining.store(true); }

bool Server::wait_idle(double timeout_s) {
  std::unique_lock<std::mutex> lock(st_->idle_mu);
  return st_->idle_cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                               [&] { return st_->in_flight.load() == 0; });
}

void Server::stop() {
  if (http_->stopped.exchange(true)) return;
  // httplib's stop() does nothing before the accept loop runs: give a just-started listen() a moment.
  for (int i = 0; i < 200 && http_->listening.load() && !http_->svr.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (http_->svr.is_running()) http_->svr.stop();
}

MetricsRegistry& Server::metrics() { return st_->metrics; }
int Server::in_flight() const { return st_->in_flight.load(); }
const ServerOptions& Server::options() const { return st_->options; }

}  // namespace lp::server
