// GET /v1/models, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter, the weighted routes' POST
// /v1/load_lora_route and /v1/unload_lora_route (lora_routes.h), and the mapping from a request's `model` to
// an adapter (with the on-demand resolver, and a route's arm). Answers follow vLLM: the admin endpoints reply
// 200 with a plain-text "Success: ..." message, 400 for a missing field, a duplicate name or an invalid
// adapter, 404 for an unknown name or a missing folder, 403 for a folder outside --lora-root; 409 for
// unloading an adapter that a route has as an arm.
#include <algorithm>

#include "core/log.h"
#include "server/backend.h"
#include "server/handlers.h"
#include "server/lora_paths.h"
#include "server/openai_request.h"

namespace lp::server {

using ojson = nlohmann::ordered_json;

std::string resolve_model(ServerState& st, const std::string& model) {
  if (model.empty() || model == st.options.served_model_name) return "";
  if (st.lora_routes.find(model)) return resolve_target(st, model, {}).adapter;
  Backend& b = *st.backend;
  if (b.is_registered(model)) return model;
  if (st.options.enable_lora_resolver && st.options.lora_root && b.lora_enabled()) {
    if (auto dir = find_adapter_under_root(*st.options.lora_root, model)) {
      try {
        b.register_adapter(model, *dir, /*pinned=*/false, /*replace=*/false, st.options.lora_root);
        log_info("resolver: registered adapter '{}' from {}", model, dir->string());
      } catch (const Error&) {
        if (!b.is_registered(model)) throw;  // a concurrent request registered it first: fine
      }
      return model;
    }
  }
  throw ApiError(fmt::format("The model `{}` does not exist.", model), ErrorKind::kNotFound, "model",
                 "model_not_found");
}

ModelTarget resolve_target(ServerState& st, const std::string& model, const std::string& user) {
  // Routes first: a route's name is never an adapter's (LoraRoutes::set and the adapter load check).
  auto route = st.lora_routes.find(model);
  if (!route) return {resolve_model(st, model), ""};
  const RouteArm& arm = st.lora_routes.pick(*route, user);
  if (!st.backend->is_registered(arm.adapter))
    throw ApiError(
        fmt::format("route '{}' chose adapter '{}' for this request, but that adapter is not registered; "
                    "the request is not sent to another arm",
                    route->name, arm.adapter),
        ErrorKind::kNotFound, "model", "route_arm_not_found");
  return {arm.adapter, route->name};
}

AdapterStack resolve_adapters(ServerState& st, const std::string& lead, const std::vector<AdapterSpec>& listed) {
  AdapterStack out;
  out.adapter = lead;
  if (listed.empty()) return out;
  constexpr const char* kField = "adapters";
  if (!st.backend->lora_enabled())
    throw ApiError("'adapters' needs LoRA, and this server runs without it (--enable-lora)", ErrorKind::kInvalid,
                   kField);
  // Counted before any listed name is resolved: a refused stack loads nothing through the resolver.
  const bool model_listed =
      std::any_of(listed.begin(), listed.end(), [&](const AdapterSpec& a) { return a.name == out.adapter; });
  const size_t n = listed.size() + (!out.adapter.empty() && !model_listed ? 1 : 0);
  if (static_cast<int>(n) > st.options.max_stacked_loras)
    throw ApiError(fmt::format("the request stacks {} adapters; this server allows at most {} (--max-stacked-loras)",
                               n, st.options.max_stacked_loras),
                   ErrorKind::kInvalid, kField);
  std::vector<sched::AdapterRef> stack;
  for (const AdapterSpec& a : listed) {
    if (a.name == st.options.served_model_name)
      throw ApiError(fmt::format("'adapters' lists the base model `{}`; list adapters only", a.name),
                     ErrorKind::kInvalid, kField);
    const std::string name = resolve_model(st, a.name);
    for (const auto& r : stack)
      if (r.name == name)
        throw ApiError(fmt::format("'adapters' lists `{}` twice", name), ErrorKind::kInvalid, kField);
    stack.push_back({name, a.scale});
  }
  // The model's own adapter leads (it is the tenant); at the listed scale when the list names it.
  if (!out.adapter.empty()) {
    auto it = std::find_if(stack.begin(), stack.end(), [&](const auto& r) { return r.name == out.adapter; });
    sched::AdapterRef lead{out.adapter, 1.f};
    if (it != stack.end()) {
      lead = *it;
      stack.erase(it);
    }
    stack.insert(stack.begin(), lead);
  }
  LP_CHECK(stack.size() == n);
  out.adapter = stack[0].name;
  out.scale = stack[0].scale;
  out.more.assign(stack.begin() + 1, stack.end());
  return out;
}

void handle_models(ServerState& st, const HttpRequest&, HttpResponse& res) {
  const int64_t max_len = st.backend->max_model_len();
  // loraplex's field (vLLM lists none): the base model's quantization, null when it runs unquantized.
  const std::string q = st.backend->quantization();
  const ojson quant = q == "none" ? ojson(nullptr) : ojson(q);
  ojson data = ojson::array();
  data.push_back({{"id", st.options.served_model_name},
                  {"object", "model"},
                  {"created", st.created},
                  {"owned_by", "loraplex"},
                  {"root", st.options.model_dir},
                  {"parent", nullptr},
                  {"max_model_len", max_len},
                  {"quantization", quant}});
  for (const AdapterListing& a : st.backend->list_adapters()) {
    data.push_back({{"id", a.name},
                    {"object", "model"},
                    {"created", st.created},
                    {"owned_by", "loraplex"},
                    {"root", a.path},
                    {"parent", st.options.served_model_name},
                    {"max_model_len", max_len},
                    {"lora", {{"tier", a.tier}, {"pinned", a.pinned}, {"rank", a.rank}}}});
  }
  // A route is a model name too: OpenAI's fields as for an adapter (root: its own name, as it has no folder),
  // and loraplex's field with the arms.
  for (const auto& r : st.lora_routes.list()) {
    ojson arms = ojson::array();
    for (const RouteArm& a : r->arms) arms.push_back({{"adapter", a.adapter}, {"weight", a.weight}});
    data.push_back({{"id", r->name},
                    {"object", "model"},
                    {"created", st.created},
                    {"owned_by", "loraplex"},
                    {"root", r->name},
                    {"parent", st.options.served_model_name},
                    {"max_model_len", max_len},
                    {"loraplex_route", {{"arms", std::move(arms)}}}});
  }
  write_json(res, dump_json(ojson{{"object", "list"}, {"data", std::move(data)}}));
}

void handle_load_adapter(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  ojson body = parse_body(req.body);
  std::string name = string_field(body, "lora_name");
  std::string path = string_field(body, "lora_path");
  bool inplace = bool_field(body, "load_inplace");
  bool pinned = bool_field(body, "pinned");
  if (name.empty() || path.empty())
    throw ApiError("Both 'lora_name' and 'lora_path' must be provided.", ErrorKind::kInvalid,
                   name.empty() ? "lora_name" : "lora_path");
  if (name == st.options.served_model_name)
    fail_param("lora_name", "'{}' is the base model's name; choose another adapter name", name);
  if (!st.backend->lora_enabled()) fail("LoRA is not enabled on this server (start it with --max-loras >= 1)");
  std::filesystem::path dir = resolve_adapter_path(st.options.lora_root, path);
  auto admin = st.lora_routes.lock_admin();  // no route of this name may appear before it is registered
  if (st.lora_routes.find(name))
    fail_param("lora_name", "'{}' is a route's name; choose another adapter name", name);
  if (!inplace && st.backend->is_registered(name))
    throw ApiError(fmt::format("The lora adapter '{}' has already been loaded.", name), ErrorKind::kInvalid,
                   "lora_name");
  // Confined to --lora-root (when set) for every file read, now and on later reloads; the old registration
  // stays if this throws.
  st.backend->register_adapter(name, dir, pinned, /*replace=*/inplace, st.options.lora_root);
  log_info("loaded LoRA adapter '{}' from {}{}", name, dir.string(), pinned ? " (pinned)" : "");
  res.status = 200;
  res.content_type = "text/plain";
  res.body = fmt::format("Success: LoRA adapter '{}' added successfully.", name);
}

void handle_unload_adapter(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  ojson body = parse_body(req.body);
  std::string name = string_field(body, "lora_name");
  if (name.empty())
    throw ApiError("'lora_name' needs to be provided to unload a LoRA adapter.", ErrorKind::kInvalid, "lora_name");
  if (!st.backend->is_registered(name))
    throw ApiError(fmt::format("The lora adapter '{}' cannot be found.", name), ErrorKind::kNotFound, "lora_name");
  // An arm's adapter is not unloaded from under its route (its requests would fail, or silently move to
  // another arm): the route must be changed or unloaded first. 409, as the openai clients' ConflictError.
  auto admin = st.lora_routes.lock_admin();
  if (auto routes = st.lora_routes.routes_using(name); !routes.empty()) {
    std::string names;
    for (const auto& r : routes) names += fmt::format("{}'{}'", names.empty() ? "" : ", ", r);
    throw ApiError(
        fmt::format("The lora adapter '{}' is an arm of route {}; unload or change the route first "
                    "(/v1/unload_lora_route, /v1/load_lora_route).",
                    name, names),
        ErrorKind::kInvalid, "lora_name", "adapter_in_route", 409);
  }
  st.backend->unregister_adapter(name);
  log_info("unloaded LoRA adapter '{}'", name);
  res.status = 200;
  res.content_type = "text/plain";
  res.body = fmt::format("Success: LoRA adapter '{}' removed successfully.", name);
}

// {"route_name": "assistant", "arms": [{"lora_name": "v2-stable", "weight": 90}, ...]}: adds the route, or
// replaces the route of that name atomically (requests see the old arms or the new ones).
void handle_load_route(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  ojson body = parse_body(req.body);
  LoraRoute r;
  r.name = string_field(body, "route_name");
  auto arms = body.find("arms");
  if (r.name.empty() || arms == body.end() || arms->is_null())
    throw ApiError("Both 'route_name' and 'arms' must be provided.", ErrorKind::kInvalid,
                   r.name.empty() ? "route_name" : "arms");
  if (!arms->is_array())
    fail_param("arms", "'arms' must be a list of {{\"lora_name\": ..., \"weight\": ...}}");
  if (arms->size() > kMaxRouteArms)
    fail_param("arms", "route '{}' has more than {} arms", r.name, kMaxRouteArms);
  for (size_t i = 0; i < arms->size(); ++i) {
    const ojson& a = (*arms)[i];
    const std::string at = fmt::format("arms[{}]", i);
    if (!a.is_object()) fail_param(at, "{} must be an object {{\"lora_name\": ..., \"weight\": ...}}", at);
    for (const auto& [k, v] : a.items())
      if (k != "lora_name" && k != "weight")
        fail_param(at + "." + k, "{}: unknown field '{}' (known: lora_name, weight)", at, k);
    RouteArm arm;
    arm.adapter = string_field(a, "lora_name");
    auto w = a.find("weight");
    if (w == a.end() || !w->is_number_integer())
      fail_param(at + ".weight", "{}.weight must be a positive integer", at);
    arm.weight = w->is_number_unsigned() && w->get<uint64_t>() > static_cast<uint64_t>(kMaxRouteWeight)
                     ? kMaxRouteWeight + 1  // check_route_shape() says why
                     : w->get<int64_t>();
    r.arms.push_back(std::move(arm));
  }
  if (!st.backend->lora_enabled())
    fail("LoRA is not enabled on this server (start it with --max-loras >= 1)");
  auto admin = st.lora_routes.lock_admin();  // its arms stay registered until it is in the table
  const bool existed = st.lora_routes.find(r.name) != nullptr;
  std::string arms_text;
  for (const RouteArm& a : r.arms)
    arms_text += fmt::format("{}{}:{}", arms_text.empty() ? "" : ",", a.adapter, a.weight);
  const std::string name = r.name;
  Backend& b = *st.backend;
  st.lora_routes.set(
      std::move(r), {st.options.served_model_name, [&b](const std::string& n) { return b.is_registered(n); }},
      /*replace=*/true);
  log_info("{} LoRA route '{}' = {}", existed ? "replaced" : "loaded", name, arms_text);
  res.status = 200;
  res.content_type = "text/plain";
  res.body = fmt::format("Success: LoRA route '{}' {} successfully.", name, existed ? "replaced" : "added");
}

void handle_unload_route(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  ojson body = parse_body(req.body);
  std::string name = string_field(body, "route_name");
  if (name.empty())
    throw ApiError("'route_name' needs to be provided to unload a LoRA route.", ErrorKind::kInvalid,
                   "route_name");
  auto admin = st.lora_routes.lock_admin();
  if (!st.lora_routes.remove(name))
    throw ApiError(fmt::format("The lora route '{}' cannot be found.", name), ErrorKind::kNotFound,
                   "route_name");
  log_info("unloaded LoRA route '{}'", name);
  res.status = 200;
  res.content_type = "text/plain";
  res.body = fmt::format("Success: LoRA route '{}' removed successfully.", name);
}

}  // namespace lp::server
