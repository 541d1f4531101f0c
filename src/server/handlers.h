// Route handlers (internal to server/). Each may throw lp::Error (or anything else): the wrapper in server.cpp
// turns exceptions into error replies, so handlers are written straight-line, validation first. They run on
// the server's handler pool, never on an I/O thread, and never wait for the engine: a generation handler
// submits and returns a ResponseProducer (http_message.h) that the connection polls when output arrives.
#pragma once

#include <string>

#include "server/api_error.h"
#include "server/http_message.h"
#include "server/server_state.h"

namespace lp::server {

// generate_handlers.cpp
void handle_completions(ServerState& st, const HttpRequest& req, HttpResponse& res);
void handle_chat_completions(ServerState& st, const HttpRequest& req, HttpResponse& res);

// admin_handlers.cpp
void handle_models(ServerState& st, const HttpRequest& req, HttpResponse& res);
void handle_load_adapter(ServerState& st, const HttpRequest& req, HttpResponse& res);
void handle_unload_adapter(ServerState& st, const HttpRequest& req, HttpResponse& res);
// The adapter a request's `model` selects ("" = the base model): the served name, a registered adapter, or
// (with --enable-lora-resolver) an adapter folder under --lora-root registered now. Throws 404 otherwise.
std::string resolve_model(ServerState& st, const std::string& model);

// The adapters a request runs with: its model's adapter ("" = base) and the "adapters" field resolved into
// one stack (first adapter + scale, then the rest in order). The model's adapter leads at scale 1 unless the
// field lists it (then at the listed scale); listed names resolve like `model` does. ApiError for the base
// model's name in the list, duplicates, unknown names, and stacks over --max-stacked-loras.
struct AdapterStack {
  std::string adapter;
  float scale = 1.f;
  std::vector<sched::AdapterRef> more;
};
AdapterStack resolve_adapters(ServerState& st, const std::string& model, const std::vector<AdapterSpec>& listed);

// tokenize_handlers.cpp: POST /tokenize, POST /detokenize (vLLM's shapes), and GET /version's body.
void handle_tokenize(ServerState& st, const HttpRequest& req, HttpResponse& res);
void handle_detokenize(ServerState& st, const HttpRequest& req, HttpResponse& res);
std::string version_json();  // {"version": "0.1.0"}

// server.cpp
void write_error(HttpResponse& res, const ErrorReply& e);
void write_json(HttpResponse& res, const std::string& json_text, int status = 200);

}  // namespace lp::server
