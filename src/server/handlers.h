// Route handlers (internal to server/). Each may throw lp::Error (or anything else): the wrapper in server.cpp
// turns exceptions into error replies, so handlers are written straight-line, validation first.
#pragma once

#include <string>

#include "server/api_error.h"
#include "server/server_state.h"

namespace lp::server {

// generate_handlers.cpp
void handle_completions(ServerState& st, const httplib::Request& req, httplib::Response& res);
void handle_chat_completions(ServerState& st, const httplib::Request& req, httplib::Response& res);

// admin_handlers.cpp
void handle_models(ServerState& st, const httplib::Request& req, httplib::Response& res);
void handle_load_adapter(ServerState& st, const httplib::Request& req, httplib::Response& res);
void handle_unload_adapter(ServerState& st, const httplib::Request& req, httplib::Response& res);
// The adapter a request's `model` selects ("" = the base model): the served name, a registered adapter, or
// (with --enable-lora-resolver) an adapter folder under --lora-root registered now. Throws 404 otherwise.
std::string resolve_model(ServerState& st, const std::string& model);

// server.cpp
void write_error(httplib::Response& res, const ErrorReply& e);
void write_json(httplib::Response& res, const std::string& json_text, int status = 200);

}  // namespace lp::server
