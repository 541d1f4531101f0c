// The HTTP request and response as the route handlers see them, independent of the HTTP library: a handler
// reads an HttpRequest and fills an HttpResponse, either completely, or with a ResponseProducer that the
// connection polls (without blocking) until the body is complete. So handlers are unit-testable without a
// socket, and the connection code (http_connection.cpp) is the only place that knows about Boost.Beast.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lp::server {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive ASCII comparison (header names, media types).
bool iequals(std::string_view a, std::string_view b);

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // target without the query
  HttpHeaders headers;
  std::string body;

  // The first header of that name (case-insensitive), "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

class ResponseProducer;

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  HttpHeaders headers;  // besides Content-Type / Content-Length / Transfer-Encoding / Connection
  std::string body;
  // Set: the body comes from the producer. streaming = true sends the head at once and the body chunked as it
  // is produced (SSE); false waits for the producer to finish, which may still change status, headers and
  // body (a non-streaming generation that fails after submit answers 500).
  std::shared_ptr<ResponseProducer> producer;
  bool streaming = false;

  void set_header(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
};

// A response that is produced over time by work elsewhere (the engine). All calls come from the connection's
// I/O strand, one at a time; none may block or throw.
class ResponseProducer {
 public:
  virtual ~ResponseProducer() = default;
  // Called once before the first poll(). `wake` may be called from any thread, any number of times, whenever
  // poll() may have something new; it is cheap and safe to call after the connection is gone.
  virtual void start(std::function<void()> wake) noexcept = 0;
  // Appends the body bytes ready now to `out` (streaming) or fills `res` (non-streaming); true once the body is
  // complete. Also called about every kTickS without a wake (so a stream can send keep-alive comments).
  virtual bool poll(HttpResponse& res, std::string& out) noexcept = 0;
  // The client went away or the connection was cut before the body was complete: abort the work.
  virtual void cancel() noexcept = 0;

  static constexpr double kTickS = 0.25;
};

}  // namespace lp::server
