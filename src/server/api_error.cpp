#include "server/api_error.h"

#include <algorithm>

#include "core/log.h"

namespace lp::server {

int status_of(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalid: return 400;
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kForbidden: return 403;
    case ErrorKind::kTooLarge: return 413;
    case ErrorKind::kUnavailable: return 503;
    case ErrorKind::kOverloaded: return 429;
  }
  return 500;
}

const char* error_type(int status) {
  switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 409: return "ConflictError";
    case 413: return "RequestTooLargeError";
    case 422: return "UnprocessableEntityError";
    case 429: return "RateLimitError";
    case 503: return "ServiceUnavailableError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

ErrorReply make_error(int status, const std::string& message, const std::string& param, const std::string& code) {
  ErrorReply r;
  r.status = status;
  nlohmann::json e = {{"message", message}, {"type", error_type(status)}, {"param", nullptr}, {"code", status}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  r.body = {{"error", std::move(e)}};
  if (status == 503 || status == 429) r.retry_after_s = 1;
  return r;
}

ErrorReply with_status(ErrorReply e, int status) {
  if (e.body.contains("error")) {
    auto& err = e.body["error"];
    err["type"] = error_type(status);
    if (err.value("code", nlohmann::json()) == e.status) err["code"] = status;
  }
  e.status = status;
  if (status == 503 || status == 429) e.retry_after_s = std::max(e.retry_after_s, 1);
  return e;
}

ErrorReply error_reply(std::exception_ptr ep) noexcept {
  try {
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      return make_error(e.status() ? e.status() : status_of(e.kind()), e.what(), e.param(), e.code());
    } catch (const Error& e) {
      return make_error(status_of(e.kind()), e.what());
    } catch (const nlohmann::json::exception& e) {
      // A JSON access the validation missed: still the client's input, but say so plainly.
      return make_error(400, fmt::format("invalid request body: {}", e.what()));
    } catch (const std::exception& e) {
      log_warn("internal error in a request handler: {}", e.what());
      return make_error(500, fmt::format("internal server error: {}", e.what()));
    } catch (...) {
      log_warn("internal error in a request handler (unknown exception)");
      return make_error(500, "internal server error");
    }
  } catch (...) {
    // Building the reply itself failed (out of memory): the smallest reply that cannot throw further.
    ErrorReply r;
    r.status = 500;
    return r;
  }
}

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
std::string dump_json(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace lp::server
