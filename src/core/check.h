// Errors and invariant checks.
// Two kinds of failure: lp::Error is an *expected* error caused by outside input (a file, an HTTP body, a
// flag); it is thrown and caught at the boundary (CLI, HTTP handler) and reported to the user.
// LP_CHECK guards *programmer* errors: it stays on in release builds and aborts with file:line.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace lp {

// What kind of outside mistake an Error is; the HTTP layer maps it to a status code (in parentheses).
enum class ErrorKind {
  kInvalid,      // malformed or unsupported input (400)
  kNotFound,     // unknown model/adapter name, missing path (404)
  kForbidden,    // path outside the allowed root (403)
  kTooLarge,     // body or prompt over a limit (413; context_length_exceeded is kInvalid)
  kUnavailable,  // shutting down, or a resource did not come in time; retry later (503)
  kOverloaded,   // a queue is over its cap (429 + Retry-After): this client should slow down
};

// Expected error from outside input. The message names what was wrong (file, tensor, field...).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, ErrorKind kind = ErrorKind::kInvalid)
      : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Throws lp::Error (kind kInvalid) with a formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Throws lp::Error of the given kind with a formatted message.
template <class... Args>
[[noreturn]] void fail_as(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...), kind);
}

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);

inline std::string check_msg() { return {}; }
template <class... Args>
std::string check_msg(fmt::format_string<Args...> f, Args&&... args) {
  return fmt::format(f, std::forward<Args>(args)...);
}

}  // namespace lp

// LP_CHECK(cond) or LP_CHECK(cond, "format {}", args...): aborts with file, line and message when cond is
// false. Always on, release builds included.
#define LP_CHECK(cond, ...)                                                            \
  do {                                                                                 \
    if (!(cond)) [[unlikely]]                                                          \
      ::lp::check_failed(__FILE__, __LINE__, #cond, ::lp::check_msg(__VA_ARGS__));     \
  } while (0)
