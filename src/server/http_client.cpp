// Each blocking call runs one asynchronous Beast operation on a private io_context, so the tcp_stream's
// timeout applies (Asio's synchronous reads cannot time out).
#include "server/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <limits>

#include "core/check.h"

namespace lp::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using error_code = boost::system::error_code;

std::string HttpClientResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

struct HttpClient::Impl {
  std::string host;
  int port;
  double timeout_s;
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buf;
  bool connected = false;

  // Runs `start(handler)` to completion within the timeout.
  template <class Start>
  error_code run(Start&& start) {
    error_code result = asio::error::would_block;
    stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(timeout_s)));
    start([&result](error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  error_code connect() {
    error_code ec;
    auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) return ec;
    ec = run([&](auto h) { stream.async_connect(asio::ip::tcp::endpoint(addr, static_cast<uint16_t>(port)), h); });
    if (!ec) {
      connected = true;
      buf.clear();
      error_code ig;
      stream.socket().set_option(asio::ip::tcp::no_delay(true), ig);
    }
    return ec;
  }

  void close() {
    error_code ig;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ig);
    stream.socket().close(ig);
    connected = false;
  }
};

HttpClient::HttpClient(std::string host, int port, double timeout_s) : impl_(std::make_unique<Impl>()) {
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->timeout_s = timeout_s;
}

HttpClient::~HttpClient() { close(); }

void HttpClient::set_timeout(double seconds) { impl_->timeout_s = seconds; }

void HttpClient::close() { impl_->close(); }

HttpClientResponse HttpClient::request(const std::string& method, const std::string& target, const std::string& body,
                                       const HttpHeaders& headers,
                                       const std::function<bool(std::string_view)>& on_body) {
  Impl& im = *impl_;
  HttpClientResponse out;
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, fmt::format("{}:{}", im.host, im.port));
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == "POST") {
    req.body() = body;
    req.prepare_payload();
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = im.connected;
    error_code ec;
    if (!im.connected && (ec = im.connect())) {
      out.error = ec.message();
      return out;
    }
    ec = im.run([&](auto h) { http::async_write(im.stream, req, h); });
    http::response_parser<http::string_body> p;
    p.body_limit(std::numeric_limits<uint64_t>::max());
    if (method == "HEAD") p.skip(true);  // the head announces a body that never comes
    bool stopped = false;
    auto chunk_cb = [&](uint64_t, std::string_view piece, error_code& cec) -> size_t {
      if (!on_body(piece)) {
        stopped = true;
        cec = asio::error::operation_aborted;
      }
      return piece.size();
    };
    if (on_body) p.on_chunk_body(chunk_cb);  // the parser keeps a reference: chunk_cb outlives the read
    if (!ec) ec = im.run([&](auto h) { http::async_read(im.stream, im.buf, p, h); });
    if (ec && reused && !p.is_header_done() && !stopped &&
        (ec == http::error::end_of_stream || ec == asio::error::connection_reset || ec == asio::error::broken_pipe)) {
      im.close();  // the server closed the idle connection meanwhile: once more on a fresh one
      continue;
    }
    if (p.is_header_done()) {
      out.status = static_cast<int>(p.get().result_int());
      for (const auto& f : p.get()) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    if (ec) {
      out.error = stopped ? "stopped by the receiver" : (ec == beast::error::timeout ? "timeout" : ec.message());
      out.body = std::move(p.get().body());
      im.close();
      return out;
    }
    out.body = std::move(p.get().body());
    if (on_body && !out.body.empty()) on_body(out.body);  // not chunked: one piece
    if (!p.get().keep_alive()) im.close();
    return out;
  }
  out.error = "connection closed";
  return out;
}

}  // namespace lp::server
