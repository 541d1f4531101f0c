// A small blocking HTTP/1.1 client on Boost.Beast for loopback use (`loraplex bench serve`, the server tests):
// one keep-alive connection, a timeout per request, and a callback that sees a streamed (chunked) body piece by
// piece as it arrives. Not for the open internet: no TLS, no redirects, no proxy.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/http_message.h"

namespace lp::server {

struct HttpClientResponse {
  int status = 0;       // 0: no response (see error)
  std::string error;    // "" when a whole response was read
  HttpHeaders headers;
  std::string body;     // the whole body, unless an on_body callback took the chunks
  std::string header(std::string_view name) const;
};

class HttpClient {
 public:
  HttpClient(std::string host, int port, double timeout_s = 60);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Seconds a whole request (send and receive) may take; past it the connection is closed (error "timeout").
  void set_timeout(double seconds);
  // Sends one request (reconnecting when the kept-alive connection was closed) and reads the response.
  // `on_body` gets each piece of a chunked body as it arrives; returning false stops reading and closes the
  // connection (the client going away). Never throws for network errors: they are in the result's `error`.
  HttpClientResponse request(const std::string& method, const std::string& target, const std::string& body = {},
                             const HttpHeaders& headers = {},
                             const std::function<bool(std::string_view)>& on_body = {});
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lp::server
