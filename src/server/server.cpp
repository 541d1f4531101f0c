// The HTTP app on top of the transport (http_connection.h): routing, the checks made on a request's head
// before its body is read (Origin / CORS, API key, route and method, Content-Type), the wrapper that turns any
// exception into an error reply, /health, /version and /metrics, and the server's lifecycle.
//
// Handlers run on a small handler pool (ServerOptions::handler_threads), not on the I/O threads: parsing a
// 16 MiB body or rendering a chat template and tokenizing it takes long enough to stall every other
// connection of an I/O thread, and an adapter load reads the disk. /health is answered on the I/O thread, so
// probes stay fast whatever the pool is doing.
#include "server/server.h"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/string.hpp>

#include <chrono>
#include <thread>

#include "core/check.h"
#include "core/log.h"
#include "server/auth.h"
#include "server/backend.h"
#include "server/handlers.h"
#include "server/http_connection.h"
#include "server/openai_response.h"

namespace lp::server {

InFlight::~InFlight() {
  if (st_.in_flight.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(st_.idle_mu);
    st_.idle_cv.notify_all();
  }
}

void write_json(HttpResponse& res, const std::string& json_text, int status) {
  res.status = status;
  res.content_type = "application/json";
  res.body = json_text;
}

void write_error(HttpResponse& res, const ErrorReply& e) {
  res.status = e.status;
  res.content_type = "application/json";
  if (e.retry_after_s > 0) res.set_header("Retry-After", std::to_string(e.retry_after_s));
  if (e.body.is_null()) {
    res.body = "{\"error\":{\"message\":\"internal server error\",\"type\":\"InternalServerError\","
               "\"param\":null,\"code\":500}}";
  } else {
    res.body = dump_json(e.body);
  }
}

namespace {

using RouteFn = void (*)(ServerState&, const HttpRequest&, HttpResponse&);

enum class RouteKind { kHealth, kVersion, kMetrics, kApi };

struct Route {
  std::string method, path;
  RouteKind kind = RouteKind::kApi;
  RouteFn fn = nullptr;
  bool refused_when_draining = false;
};

HttpResponse error_response(int status, const std::string& message) {
  HttpResponse r;
  write_error(r, make_error(status, message));
  return r;
}

// "application/json", any case, with or without parameters ("; charset=utf-8").
bool is_json_media_type(std::string_view ct) {
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) ct.remove_prefix(1);
  return iequals(ct, "application/json");
}

}  // namespace

struct Server::Http final : HttpApp {
  explicit Http(ServerState& s)
      : st(s),
        listener(*this, limits_of(s.options)),
        pool(static_cast<size_t>(std::max(1, s.options.handler_threads))) {
    routes.push_back({"GET", "/health", RouteKind::kHealth});
    routes.push_back({"GET", "/metrics", RouteKind::kMetrics});
    routes.push_back({"GET", "/version", RouteKind::kVersion});
    routes.push_back({"POST", "/tokenize", RouteKind::kApi, handle_tokenize, false});
    routes.push_back({"POST", "/detokenize", RouteKind::kApi, handle_detokenize, false});
    routes.push_back({"GET", "/v1/models", RouteKind::kApi, handle_models, false});
    routes.push_back({"GET", "/dashboard", RouteKind::kApi, handle_dashboard_page, false});
    routes.push_back({"GET", "/dashboard/state", RouteKind::kApi, handle_dashboard_state, false});
    routes.push_back({"POST", "/v1/completions", RouteKind::kApi, handle_completions, true});
    routes.push_back({"POST", "/v1/chat/completions", RouteKind::kApi, handle_chat_completions, true});
    if (st.options.allow_runtime_lora_updating) {
      routes.push_back({"POST", "/v1/load_lora_adapter", RouteKind::kApi, handle_load_adapter, true});
      routes.push_back({"POST", "/v1/unload_lora_adapter", RouteKind::kApi, handle_unload_adapter, true});
      routes.push_back({"POST", "/v1/load_lora_route", RouteKind::kApi, handle_load_route, true});
      routes.push_back({"POST", "/v1/unload_lora_route", RouteKind::kApi, handle_unload_route, true});
    }
  }

  static HttpLimits limits_of(const ServerOptions& o) {
    HttpLimits l;
    l.max_connections = std::max(1, o.max_connections);
    l.max_header_bytes = o.max_header_bytes;
    l.max_headers = o.max_headers;
    l.max_body_bytes = o.max_request_bytes;
    l.read_timeout_s = o.read_timeout_s;
    l.keep_alive_timeout_s = o.keep_alive_timeout_s;
    l.write_timeout_s = o.write_timeout_s;
    l.max_stream_buffer = o.max_stream_buffer_bytes;
    return l;
  }

  bool origin_allowed(std::string_view origin) const {
    for (const auto& o : st.options.allowed_origins)
      if (o == "*" || iequals(o, origin)) return true;
    return false;
  }

  // A route for the path (any method), and whether the method matches (HEAD is a GET without the body).
  const Route* find(const HttpRequest& r, bool* method_ok) const {
    const Route* any = nullptr;
    std::string_view method = r.method == "HEAD" ? std::string_view("GET") : std::string_view(r.method);
    for (const auto& rt : routes) {
      if (rt.path != r.path) continue;
      if (rt.method == method) {
        *method_ok = true;
        return &rt;
      }
      any = &rt;
    }
    *method_ok = false;
    return any;
  }

  std::optional<HttpResponse> on_head(const HttpRequest& h) override {
    // A browser sends Origin on cross-site requests (and on every POST): only listed origins get through, so
    // a web page the user opens can never drive this server (adapter loads on a key-less localhost server).
    if (h.has_header("Origin") && !origin_allowed(h.header("Origin")))
      return error_response(403, fmt::format("Forbidden: requests from origin '{}' are not allowed (see "
                                             "--allowed-origins)", h.header("Origin")));
    if (h.method == "OPTIONS") {  // a CORS preflight (the origin is allowed), or a plain OPTIONS
      HttpResponse r;
      r.status = 204;
      r.content_type.clear();
      if (h.has_header("Origin")) {
        r.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        std::string asked = h.header("Access-Control-Request-Headers");
        r.set_header("Access-Control-Allow-Headers", asked.empty() ? "Authorization, Content-Type" : asked);
        r.set_header("Access-Control-Max-Age", "600");
      } else {
        r.set_header("Allow", "GET, POST, OPTIONS");
      }
      return r;
    }
    // Authentication first, for every path that needs it (auth.h), known or not.
    if (!st.options.api_key.empty() && path_needs_auth(h.path) &&
        !bearer_authorized(h.header("Authorization"), st.options.api_key)) {
      HttpResponse r;
      write_error(r, make_error(401, "Unauthorized: a valid API key is required (Authorization: Bearer <key>)", {},
                                "invalid_api_key"));
      r.set_header("WWW-Authenticate", "Bearer");
      return r;
    }
    bool method_ok = false;
    const Route* rt = find(h, &method_ok);
    if (!rt) return error_response(404, fmt::format("Not Found: {} {}", h.method, h.path));
    if (!method_ok) {
      HttpResponse r = error_response(405, fmt::format("Method Not Allowed: {} {}", h.method, h.path));
      r.set_header("Allow", rt->method);
      return r;
    }
    if (h.method == "POST" && !is_json_media_type(h.header("Content-Type")))
      return error_response(415, fmt::format("Unsupported Media Type: a POST body must be application/json, "
                                             "not '{}'", h.header("Content-Type")));
    return std::nullopt;
  }

  void on_request(HttpRequest req, std::function<void(HttpResponse)> reply,
                  std::shared_ptr<const std::atomic<bool>> gone) override {
    bool method_ok = false;
    const Route* rt = find(req, &method_ok);
    LP_CHECK(rt && method_ok, "on_request for a request on_head refused");
    if (rt->kind == RouteKind::kHealth) return reply(health());
    if (rt->kind == RouteKind::kVersion) {  // a constant: answered here, also while the model loads
      HttpResponse res;
      write_json(res, version_json());
      return reply(std::move(res));
    }
    boost::asio::post(pool, [this, rt, req = std::move(req), reply = std::move(reply), gone = std::move(gone)] {
      HttpResponse res;
      if (!gone->load()) run_route(*rt, req, res);  // a client gone while queued costs no parse or tokenize
      reply(std::move(res));
    });
  }

  void on_response_head(const HttpRequest& req, HttpResponse& res) override {
    if (req.has_header("Origin")) {  // on_head refused the others
      res.set_header("Access-Control-Allow-Origin", req.header("Origin"));
      // a page may read a route's arm and the replica that answered
      res.set_header("Access-Control-Expose-Headers", "x-loraplex-adapter, x-loraplex-replica");
      res.set_header("Vary", "Origin");
    }
    if (!st.options.replica_id.empty()) res.set_header("x-loraplex-replica", st.options.replica_id);
    try {
      st.metrics.add("loraplex_http_requests_total", {{"code", std::to_string(res.status)}});
    } catch (...) {
    }
    log_debug("{} {} -> {}", req.method, req.path, res.status);
  }

  HttpResponse protocol_error(int status, const std::string& message) override {
    return error_response(status, message);
  }

  HttpResponse health() const {
    HttpResponse res;
    bool ok = st.ready.load(std::memory_order_acquire) && !st.draining.load();
    res.status = ok ? 200 : 503;
    if (!ok) res.set_header("Retry-After", "1");
    res.content_type = "text/plain";
    res.body = ok ? "" : (st.draining.load() ? "shutting down" : "loading");
    return res;
  }

  // The route wrapper: readiness and draining checks, then the handler; nothing escapes.
  void run_route(const Route& rt, const HttpRequest& req, HttpResponse& res) noexcept {
    try {
      if (rt.kind == RouteKind::kMetrics) {
        res.content_type = "text/plain; version=0.0.4; charset=utf-8";
        res.body = st.metrics.render();
        return;
      }
      if (!st.ready.load(std::memory_order_acquire))
        throw Error("the model is still loading; retry later", ErrorKind::kUnavailable);
      if (rt.refused_when_draining && st.draining.load())
        throw Error("the server is shutting down", ErrorKind::kUnavailable);
      rt.fn(st, req, res);
    } catch (...) {
      ErrorReply e = error_reply(std::current_exception());
      if (e.status == 429 && st.options.overload_status != 429) e = with_status(std::move(e), st.options.overload_status);
      try {
        res = HttpResponse{};  // drops a producer a handler may have set: its requests are aborted
        write_error(res, e);
      } catch (...) {
        res.status = 500;
      }
    }
  }

  ServerState& st;
  std::vector<Route> routes;
  HttpListener listener;
  boost::asio::thread_pool pool;
  std::atomic<bool> bound{false};
  std::atomic<bool> stopped{false};
};

Server::Server(ServerOptions options) : st_(std::make_unique<ServerState>()) {
  st_->options = std::move(options);
  st_->created = unix_now();
  describe_metrics(*st_);
  http_ = std::make_unique<Http>(*st_);
}

Server::~Server() { stop(); }

int Server::bind() {
  int port = 0;
  try {
    port = http_->listener.bind(st_->options.host, st_->options.port);
  } catch (const Error& e) {
    fail("{} (in use, or not an address of this machine?)", e.what());
  }
  st_->options.port = port;
  http_->bound = true;
  return port;
}

void Server::listen() {
  LP_CHECK(http_->bound.load(), "Server::listen() before bind()");
  http_->listener.run(std::max(1, st_->options.http_threads));
}

void Server::attach(Backend* backend, const text::Tokenizer* tokenizer, const text::ChatTemplate* chat_template) {
  LP_CHECK(backend && tokenizer, "Server::attach needs a backend and a tokenizer");
  st_->backend = backend;
  st_->tokenizer = tokenizer;
  st_->chat_template = chat_template;
  st_->structured = std::make_unique<StructuredOutputs>(*tokenizer);
  st_->ready.store(true, std::memory_order_release);
  if (st_->options.dashboard_sample_s > 0) st_->dashboard.start(*backend, st_->options.dashboard_sample_s);
}

void Server::drain() { st_->draining.store(true); }

bool Server::wait_idle(double timeout_s) {
  std::unique_lock<std::mutex> lock(st_->idle_mu);
  return st_->idle_cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                               [&] { return st_->in_flight.load() == 0; });
}

void Server::stop() {
  if (http_->stopped.exchange(true)) return;
  st_->dashboard.stop();
  http_->listener.stop();  // every connection closed: their engine requests are aborted
  http_->pool.join();      // handlers still running finish (their replies find the connection gone)
}

MetricsRegistry& Server::metrics() { return st_->metrics; }
LoraRoutes& Server::lora_routes() { return st_->lora_routes; }
int Server::in_flight() const { return st_->in_flight.load(); }
const ServerOptions& Server::options() const { return st_->options; }

bool iequals(std::string_view a, std::string_view b) { return boost::beast::iequals(a, b); }

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

bool HttpRequest::has_header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return true;
  return false;
}

}  // namespace lp::server
