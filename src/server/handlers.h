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
void handle_load_route(ServerState& st, const HttpRequest& req, HttpResponse& res);  // lora_routes.h
void handle_unload_route(ServerState& st, const HttpRequest& req, HttpResponse& res);
// The adapter a request's `model` selects ("" = the base model): the served name, a registered adapter, or
// (with --enable-lora-resolver) an adapter folder under --lora-root registered now. Throws 404 otherwise.
// A route's name selects one of its arms as resolve_target() does for a request without `user`.
std::string resolve_model(ServerState& st, const std::string& model);
// A generation request's target: resolve_model(), except that a route's name selects the arm chosen for
// `user` ("" = none: by weight), reported in `route`. An arm that is not registered (it cannot be unloaded
// while a route names it; this guards the invariant) is a 404 naming route and adapter, never another arm.
struct ModelTarget {
  std::string adapter;  // "" = the base model
  std::string route;    // the route's name when `model` named one, else ""
};
ModelTarget resolve_target(ServerState& st, const std::string& model, const std::string& user);

// The adapters a request runs with: `lead`, the adapter its `model` resolved to ("" = base; a route's arm),
// and the "adapters" field resolved into one stack (first adapter + scale, then the rest in order). The lead
// adapter comes first at scale 1 unless the field lists it (then at the listed scale); listed names resolve as
// resolve_model() does. ApiError for the base model's name in the list, duplicates, unknown names, and stacks
// over --max-stacked-loras (counted before any listed name is resolved).
struct AdapterStack {
  std::string adapter;
  float scale = 1.f;
  std::vector<sched::AdapterRef> more;
};
AdapterStack resolve_adapters(ServerState& st, const std::string& lead, const std::vector<AdapterSpec>& listed);

// tokenize_handlers.cpp: POST /tokenize, POST /detokenize (vLLM's shapes), and GET /version's body.
void handle_tokenize(ServerState& st, const HttpRequest& req, HttpResponse& res);
void handle_detokenize(ServerState& st, const HttpRequest& req, HttpResponse& res);
std::string version_json();  // {"version": "0.1.0"}

// server.cpp
void write_error(HttpResponse& res, const ErrorReply& e);
void write_json(HttpResponse& res, const std::string& json_text, int status = 200);

}  // namespace lp::server
