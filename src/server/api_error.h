// Errors as the OpenAI API reports them: {"error": {"message", "type", "param", "code"}} with an HTTP status.
// Handlers throw lp::Error (or ApiError, which adds the offending parameter and a machine-readable code);
// the route wrapper turns whatever escaped into an ErrorReply with error_reply(), so a handler never lets an
// exception reach the connection. The mapping is fixed here and nowhere else:
//   kInvalid → 400 BadRequestError, kNotFound → 404 NotFoundError, kForbidden → 403 PermissionDeniedError,
//   kTooLarge → 413 RequestTooLargeError, kUnavailable → 503 ServiceUnavailableError (+ Retry-After),
//   anything else → 500 InternalServerError; an ApiError may set another status (409 ConflictError). Type
//   names are the `openai` clients' error class names, as vLLM reports them.
#pragma once

#include <nlohmann/json.hpp>

#include <exception>
#include <string>

#include "core/check.h"

namespace lp::server {

// An lp::Error that also names the request field at fault (`param`) and an OpenAI error code string
// (e.g. "context_length_exceeded"); either may be empty. `status` overrides the kind's status when nonzero
// (401 has no ErrorKind: the HTTP layer is the only place that knows about authentication).
class ApiError : public Error {
 public:
  ApiError(const std::string& msg, ErrorKind kind, std::string param = {}, std::string code = {}, int status = 0)
      : Error(msg, kind), param_(std::move(param)), code_(std::move(code)), status_(status) {}
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  int status() const { return status_; }

 private:
  std::string param_;
  std::string code_;
  int status_;
};

// Throws ApiError(kInvalid) naming `param`.
template <class... Args>
[[noreturn]] void fail_param(const std::string& param, fmt::format_string<Args...> f, Args&&... args) {
  throw ApiError(fmt::format(f, std::forward<Args>(args)...), ErrorKind::kInvalid, param);
}

struct ErrorReply {
  int status = 500;
  int retry_after_s = 0;  // > 0: send a Retry-After header
  nlohmann::json body;    // {"error": {...}}
};

int status_of(ErrorKind kind);
// "BadRequestError", "NotFoundError", ... for a status code.
const char* error_type(int status);
// The reply for a status and message (param/code null when empty; code defaults to the status number, as
// vLLM does).
ErrorReply make_error(int status, const std::string& message, const std::string& param = {},
                      const std::string& code = {});
// The reply for whatever a handler threw. Never throws.
ErrorReply error_reply(std::exception_ptr ep) noexcept;
// The same reply under another status (its type, and its code where that was the old status, follow).
ErrorReply with_status(ErrorReply e, int status);

// JSON text that never throws on invalid UTF-8 (replaced by U+FFFD): generated text may hold any bytes.
std::string dump_json(const nlohmann::json& j);
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace lp::server
