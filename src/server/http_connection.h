// The HTTP/1.1 transport of the server on Boost.Beast/Asio: the acceptor, the I/O threads and one Session per
// connection, with every resource a client controls bounded (connections, header bytes and count, body bytes
// while reading, deadlines for the head, the body, idle keep-alive and each write, bytes buffered for a slow
// reader). What the bytes mean is the HttpApp's business (server.cpp); this file knows nothing of routes.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "server/http_message.h"

namespace lp::server {

struct HttpLimits {
  int max_connections = 512;        // open connections; over it a new one gets a canned 503 and is closed
  size_t max_header_bytes = 16384;  // request line + headers; over it: 431
  int max_headers = 100;            // header fields; over it: 431
  size_t max_body_bytes = 16u << 20;  // counted while reading, Content-Length and chunked alike: 413
  double read_timeout_s = 10;       // deadline for a request's head, and another for its body
  double keep_alive_timeout_s = 5;  // an idle connection between requests is closed after this
  double write_timeout_s = 30;      // one write (at most ~max_stream_buffer bytes) must finish within it
  size_t max_stream_buffer = 1u << 20;  // a stream's unsent bytes over this: the reader is too slow, cut it
};

// What the transport asks of the application. Calls come from I/O threads.
class HttpApp {
 public:
  virtual ~HttpApp() = default;
  // The head of a request is read (its body not yet): a reply now (401, 403, 404, 405, 415, an OPTIONS
  // preflight), or nullopt to read the body and call on_request(). Must be quick.
  virtual std::optional<HttpResponse> on_head(const HttpRequest& head) = 0;
  // The whole request. `reply` must be called exactly once, from any thread. `gone` turns true when the
  // client goes away (work not started yet can be skipped; the reply is then dropped).
  virtual void on_request(HttpRequest req, std::function<void(HttpResponse)> reply,
                          std::shared_ptr<const std::atomic<bool>> gone) = 0;
  // Just before a response's head is written (final status known): add headers (CORS), count it.
  virtual void on_response_head(const HttpRequest& req, HttpResponse& res) = 0;
  // The reply to a request the transport refuses itself (400 unparsable, 413, 431).
  virtual HttpResponse protocol_error(int status, const std::string& message) = 0;
};

// Owns the listening socket, the io_context and its threads, and the live sessions.
class HttpListener {
 public:
  HttpListener(HttpApp& app, HttpLimits limits);
  ~HttpListener();
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Binds and listens (backlog bounded by max_connections); returns the port. Throws lp::Error.
  int bind(const std::string& host, int port);
  // Accepts and serves on `threads` I/O threads (the caller's is one of them) until stop().
  void run(int threads);
  // Closes the listener and every connection (their pending work is cancelled), then ends run().
  void stop();
  int open_connections() const;

  struct Impl;  // http_connection.cpp

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace lp::server
