// One Session per connection, all of its work on one strand (so a session needs no lock), on a small pool of
// I/O threads that never block: requests are parsed by Beast's parser with its header and body limits
// (body bytes are counted as they arrive, chunked or not), handlers run elsewhere (HttpApp::on_request), and
// a pending response is a ResponseProducer polled when the engine wakes the session.
//
// Per connection, at most one read and one write are outstanding. While a response is pending the session
// keeps reading: EOF or an error means the client is gone (its work is cancelled at once, streaming or not);
// bytes that arrive are the next pipelined request, kept in the buffer (up to kMaxPipelined) and parsed once
// the response is written, so responses go out in request order. A client that half-closes its side after
// sending a request is taken as gone, as uvicorn (vLLM) does.
//
// Deadlines are timers that close the socket: the head must arrive within read_timeout_s, the body within
// another read_timeout_s, an idle keep-alive connection lives keep_alive_timeout_s, and each write must finish
// within write_timeout_s. A stream whose unsent bytes exceed max_stream_buffer is cut. A reply sent before
// the body was read (an error) ends the connection with a lingering close: our side is shut down and the
// client's remaining bytes are read and dropped for up to kLingerS, so the client sees the reply, not a reset.
#include "server/http_connection.h"

#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/check.h"
#include "core/log.h"

namespace lp::server {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

namespace {

class Session;

constexpr size_t kReadChunk = 16384;
constexpr size_t kMaxPipelined = 65536;  // bytes of later requests buffered while one is answered
constexpr double kLingerS = 2.0;

// What a client over --max-connections gets before the close.
const std::string& busy_reply() {
  static const std::string body =
      "{\"error\":{\"message\":\"too many open connections; retry later\",\"type\":\"ServiceUnavailableError\","
      "\"param\":null,\"code\":503}}";
  static const std::string text = fmt::format(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
      "Connection: close\r\nContent-Length: {}\r\n\r\n{}",
      body.size(), body);
  return text;
}

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

struct HttpListener::Impl {
  Impl(HttpApp& a, HttpLimits l) : app(a), limits(l) {}

  void accept();
  void refuse(tcp::socket& s);

  HttpApp& app;
  HttpLimits limits;
  std::atomic<bool> stopping{false};
  std::mutex mu;  // guards sessions
  std::condition_variable sessions_cv;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  std::atomic<int> open{0};
  // Declared last, destroyed first: the handlers it destroys may end sessions, which use the members above.
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  asio::steady_timer retry_timer{ioc};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{ioc.get_executor()};
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket sock, HttpListener::Impl& l)
      : sock_(std::move(sock)), l_(l), lim_(l.limits), read_timer_(sock_.get_executor()),
        write_timer_(sock_.get_executor()), tick_timer_(sock_.get_executor()) {}

  ~Session() {
    if (producer_ && !producer_complete_) producer_->cancel();
    producer_.reset();
    std::lock_guard<std::mutex> lock(l_.mu);
    l_.sessions.erase(this);
    l_.open.fetch_sub(1);
    l_.sessions_cv.notify_all();
  }

  void start() {
    {
      std::lock_guard<std::mutex> lock(l_.mu);
      l_.sessions[this] = weak_from_this();
      l_.open.fetch_add(1);
    }
    asio::dispatch(sock_.get_executor(), [self = shared_from_this()] { self->start_head(); });
  }
  void shutdown() {
    asio::post(sock_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  enum class Phase { kIdle, kHead, kBody, kBusy, kLinger, kClosed };

  // ---- reading ----

  void start_head() {
    if (closed_) return;
    phase_ = Phase::kHead;
    head_ = HttpRequest{};
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(lim_.max_header_bytes));
    parser_->body_limit(lim_.max_body_bytes);
    arm_read_deadline(lim_.read_timeout_s);
    reading_ = true;
    http::async_read_header(sock_, buf_, *parser_,
                            [self = shared_from_this()](error_code ec, size_t) { self->on_head(ec); });
  }

  // Between requests: the next one may already be buffered (pipelined); else wait for its first byte.
  void begin_next() {
    phase_ = Phase::kIdle;
    if (buf_.size() > 0) {  // pipelined
      error_code ig;
      if (reading_) sock_.cancel(ig);  // the pending disconnect watch; its completion starts the head
      else start_head();
      return;
    }
    arm_read_deadline(lim_.keep_alive_timeout_s);
    if (!reading_) raw_read();
  }

  // A plain read into the buffer: the first byte of an idle connection, disconnect detection while busy, or
  // the bytes dropped while lingering.
  void raw_read() {
    reading_ = true;
    sock_.async_read_some(buf_.prepare(kReadChunk), [self = shared_from_this()](error_code ec, size_t n) {
      self->reading_ = false;
      if (ec == asio::error::operation_aborted && !self->closed_ && self->phase_ == Phase::kIdle)
        return self->start_head();  // cancelled by begin_next(): the next request is already buffered
      if (ec) return self->close();  // EOF or reset: whatever was going on, the client is gone
      self->buf_.commit(n);
      switch (self->phase_) {
        case Phase::kIdle: return self->start_head();
        case Phase::kBusy: return self->watch();
        case Phase::kLinger:
          self->buf_.consume(self->buf_.size());
          return self->raw_read();
        default: return;
      }
    });
  }

  // While a request is answered: keep a read pending, so a close is seen at once.
  void watch() {
    if (phase_ != Phase::kBusy || reading_ || closed_ || buf_.size() >= kMaxPipelined) return;
    raw_read();
  }

  void on_head(error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) return read_failed(ec);
    const auto& msg = parser_->get();
    if (std::distance(msg.begin(), msg.end()) > lim_.max_headers)
      return refuse_request(431, fmt::format("Request Header Fields Too Large: more than {} header fields",
                                             lim_.max_headers));
    head_.method = std::string(msg.method_string());
    head_.target = std::string(msg.target());
    head_.path = head_.target.substr(0, head_.target.find('?'));
    for (const auto& f : msg) head_.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    keep_alive_ = msg.keep_alive();
    chunked_out_ = msg.version() >= 11;  // an HTTP/1.0 client gets a stream delimited by the close
    const bool has_body = !parser_->is_done();
    if (auto early = l_.app.on_head(head_)) {
      if (has_body) close_after_ = true;  // the body is not read: this connection cannot carry another request
      return send_whole(std::move(*early));
    }
    if (!has_body) return dispatch();
    if (iequals(head_.header("Expect"), "100-continue")) queue_write("HTTP/1.1 100 Continue\r\n\r\n");
    phase_ = Phase::kBody;
    arm_read_deadline(lim_.read_timeout_s);
    reading_ = true;
    http::async_read(sock_, buf_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      self->reading_ = false;
      if (self->closed_) return;
      if (ec) return self->read_failed(ec);
      self->dispatch();
    });
  }

  // A failed head or body read: a reply for what the client got wrong, a silent close for the rest (EOF,
  // reset, our own deadline closing the socket).
  void read_failed(error_code ec) {
    if (ec == http::error::header_limit)
      return refuse_request(431, fmt::format("Request Header Fields Too Large: the head is over {} bytes",
                                             lim_.max_header_bytes));
    if (ec == http::error::body_limit)
      return refuse_request(413, fmt::format("the request body is larger than the limit of {} bytes",
                                             lim_.max_body_bytes));
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec.category() != http::make_error_code(http::error::bad_method).category())
      return close();
    refuse_request(400, fmt::format("Bad Request: the request could not be parsed ({})", ec.message()));
  }

  void refuse_request(int status, const std::string& message) {
    close_after_ = true;
    send_whole(l_.app.protocol_error(status, message));
  }

  void dispatch() {
    phase_ = Phase::kBusy;
    cancel_read_deadline();  // while busy, only the client's close ends the read
    HttpRequest req = head_;
    req.body = std::move(parser_->get().body());
    parser_.reset();
    watch();
    l_.app.on_request(
        std::move(req),
        [self = shared_from_this()](HttpResponse res) {
          asio::post(self->sock_.get_executor(),
                     [self, res = std::move(res)]() mutable { self->on_reply(std::move(res)); });
        },
        gone_);
  }

  // ---- responding ----

  void on_reply(HttpResponse res) {
    if (closed_) {
      if (res.producer) res.producer->cancel();
      return;
    }
    if (!res.producer) return send_whole(std::move(res));
    producer_ = std::move(res.producer);
    res_ = std::move(res);
    producer_->start([wake = wake_, ex = sock_.get_executor(), weak = weak_from_this()] {
      if (wake->exchange(true)) return;  // a wake-up is already on its way
      asio::post(ex, [weak] {
        if (auto s = weak.lock()) s->on_wake();
      });
    });
    if (res_.streaming) {
      l_.app.on_response_head(head_, res_);
      if (!chunked_out_) keep_alive_ = false;
      queue_write(head_text(res_, std::nullopt));
    }
    arm_tick();
    pump();
  }

  void on_wake() {
    wake_->store(false);
    pump();
  }

  void arm_tick() {
    tick_timer_.expires_after(seconds(ResponseProducer::kTickS));
    tick_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed_ || !self->producer_ || self->producer_complete_) return;
      self->pump();
      self->arm_tick();
    });
  }

  // Takes what the producer has ready; writes it (streaming) or the whole response once complete.
  void pump() {
    if (closed_ || !producer_ || producer_complete_) return;
    std::string chunk;
    producer_complete_ = producer_->poll(res_, chunk);
    if (res_.streaming) {
      if (!chunk.empty()) queue_write(chunked_out_ ? frame_chunk(chunk) : chunk);
      if (producer_complete_) {
        if (chunked_out_) queue_write("0\r\n\r\n");
        response_done_ = true;
        flush();
      } else if (pending_.size() + out_.size() > lim_.max_stream_buffer) {
        log_debug("cutting a stream: its reader is too slow ({} bytes unsent)", pending_.size() + out_.size());
        return close();
      }
    } else if (producer_complete_) {
      res_.body += chunk;
      send_whole(std::move(res_));
    }
  }

  void send_whole(HttpResponse res) {
    l_.app.on_response_head(head_, res);
    std::string text = head_text(res, res.body.size());
    if (head_.method != "HEAD") text += res.body;
    queue_write(std::move(text));
    response_done_ = true;
    flush();
  }

  std::string head_text(const HttpResponse& r, std::optional<size_t> content_length) {
    std::string s = fmt::format("HTTP/1.1 {} {}\r\n", r.status,
                                std::string_view(http::obsolete_reason(static_cast<http::status>(r.status))));
    if (!r.content_type.empty()) s += fmt::format("Content-Type: {}\r\n", r.content_type);
    for (const auto& [k, v] : r.headers) s += fmt::format("{}: {}\r\n", k, v);
    if (content_length) s += fmt::format("Content-Length: {}\r\n", *content_length);
    else if (chunked_out_) s += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive_ || close_after_ || l_.stopping.load()) s += "Connection: close\r\n";
    s += "\r\n";
    return s;
  }

  static std::string frame_chunk(const std::string& data) { return fmt::format("{:x}\r\n{}\r\n", data.size(), data); }

  void queue_write(std::string data) {
    if (pending_.empty()) pending_ = std::move(data);
    else pending_ += data;
    flush();
  }

  void flush() {
    if (writing_ || closed_) return;
    if (pending_.empty()) {
      if (response_done_) finish_response();
      return;
    }
    out_.swap(pending_);
    pending_.clear();
    writing_ = true;
    const uint64_t gen = ++write_gen_;
    write_timer_.expires_after(seconds(lim_.write_timeout_s));
    write_timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
      if (ec || gen != self->write_gen_ || !self->writing_) return;
      log_debug("closing a connection: a write made no progress in {} s", self->lim_.write_timeout_s);
      self->close();
    });
    asio::async_write(sock_, asio::buffer(out_), [self = shared_from_this()](error_code ec, size_t) {
      self->writing_ = false;
      ++self->write_gen_;
      self->write_timer_.cancel();
      if (ec) return self->close();
      self->out_.clear();
      if (self->pending_.empty() && !self->response_done_) self->pump();  // room again: the producer may have more
      self->flush();
    });
  }

  void finish_response() {
    response_done_ = false;
    producer_.reset();  // the call's in-flight count and channels go with it
    producer_complete_ = false;
    tick_timer_.cancel();
    res_ = HttpResponse{};
    if (close_after_) return linger();
    if (!keep_alive_ || l_.stopping.load()) return close();
    begin_next();
  }

  void linger() {
    phase_ = Phase::kLinger;
    error_code ig;
    sock_.shutdown(tcp::socket::shutdown_send, ig);
    arm_read_deadline(kLingerS);
    if (!reading_) raw_read();
  }

  // ---- deadlines and the end ----

  void arm_read_deadline(double s) {
    const uint64_t gen = ++read_gen_;
    read_timer_.expires_after(seconds(s));
    read_timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
      if (ec || gen != self->read_gen_) return;
      if (self->phase_ == Phase::kHead || self->phase_ == Phase::kBody)
        log_debug("closing a connection: its request did not arrive within {} s", self->lim_.read_timeout_s);
      self->close();
    });
  }
  void cancel_read_deadline() {
    ++read_gen_;
    read_timer_.cancel();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    gone_->store(true);
    phase_ = Phase::kClosed;
    if (producer_ && !producer_complete_) producer_->cancel();
    producer_.reset();
    ++read_gen_;
    ++write_gen_;
    read_timer_.cancel();
    write_timer_.cancel();
    tick_timer_.cancel();
    error_code ig;
    sock_.shutdown(tcp::socket::shutdown_both, ig);
    sock_.close(ig);
  }

  tcp::socket sock_;
  HttpListener::Impl& l_;
  const HttpLimits& lim_;
  asio::steady_timer read_timer_, write_timer_, tick_timer_;
  uint64_t read_gen_ = 0, write_gen_ = 0;  // a deadline that fires after being re-armed is stale
  boost::beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Phase phase_ = Phase::kIdle;
  bool reading_ = false, writing_ = false, closed_ = false;
  HttpRequest head_;  // the current request without its body
  bool keep_alive_ = true, close_after_ = false, chunked_out_ = true;
  std::shared_ptr<ResponseProducer> producer_;
  bool producer_complete_ = false;
  HttpResponse res_;
  bool response_done_ = false;  // every byte of the response is queued
  std::string out_, pending_;   // being written; queued behind it
  std::shared_ptr<std::atomic<bool>> wake_ = std::make_shared<std::atomic<bool>>(false);  // a wake is posted
  std::shared_ptr<std::atomic<bool>> gone_ = std::make_shared<std::atomic<bool>>(false);  // closed
};

}  // namespace

void HttpListener::Impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](error_code ec, tcp::socket s) {
    if (stopping.load()) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of file descriptors, most likely: back off instead of spinning.
      log_warn("accept failed: {}", ec.message());
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](error_code e) {
        if (!e) accept();
      });
      return;
    }
    if (open.load() >= limits.max_connections) {
      refuse(s);
    } else {
      error_code ig;
      s.set_option(tcp::no_delay(true), ig);
      std::make_shared<Session>(std::move(s), *this)->start();
    }
    accept();
  });
}

void HttpListener::Impl::refuse(tcp::socket& s) {
  error_code ig;
  s.non_blocking(true, ig);
  s.write_some(asio::buffer(busy_reply()), ig);  // best effort, never waits
  s.shutdown(tcp::socket::shutdown_both, ig);
  s.close(ig);
  log_debug("refused a connection: {} open (--max-connections)", open.load());
}

HttpListener::HttpListener(HttpApp& app, HttpLimits limits) : impl_(std::make_shared<Impl>(app, limits)) {}

HttpListener::~HttpListener() { stop(); }

int HttpListener::bind(const std::string& host, int port) {
  Impl& im = *impl_;
  error_code ec;
  auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) fail("cannot bind {}: not an IP address ({})", host, ec.message());
  tcp::endpoint ep(addr, static_cast<uint16_t>(port));
  im.acceptor.open(ep.protocol(), ec);
  if (!ec) im.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) im.acceptor.bind(ep, ec);
  // The kernel queues at most this many connections not yet accepted (and caps it at net.core.somaxconn).
  if (!ec) im.acceptor.listen(std::clamp(im.limits.max_connections, 16, 1024), ec);
  if (ec) fail("cannot bind {}:{} ({})", host, port, ec.message());
  im.accept();
  return im.acceptor.local_endpoint().port();
}

void HttpListener::run(int threads) {
  Impl& im = *impl_;
  auto loop = [&im] {
    for (;;) {
      try {
        im.ioc.run();
        return;
      } catch (const std::exception& e) {
        log_warn("HTTP I/O thread: unexpected error: {}", e.what());
      }
    }
  };
  std::vector<std::thread> extra;
  for (int i = 1; i < threads; ++i) extra.emplace_back(loop);
  loop();
  for (auto& t : extra) t.join();
}

void HttpListener::stop() {
  Impl& im = *impl_;
  if (im.stopping.exchange(true)) return;
  asio::post(im.ioc, [&im] {
    error_code ig;
    im.acceptor.close(ig);
    im.retry_timer.cancel();
  });
  std::vector<std::shared_ptr<Session>> live;  // released outside the lock: a session's destructor takes it
  {
    std::lock_guard<std::mutex> lock(im.mu);
    for (auto& [p, w] : im.sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->shutdown();
  live.clear();
  // Let the sessions end on the I/O threads (their producers cancel their engine requests) before stopping.
  {
    std::unique_lock<std::mutex> lock(im.mu);
    im.sessions_cv.wait_for(lock, std::chrono::seconds(2), [&] { return im.sessions.empty(); });
  }
  im.work.reset();
  im.ioc.stop();
}

int HttpListener::open_connections() const { return impl_->open.load(); }

}  // namespace lp::server
