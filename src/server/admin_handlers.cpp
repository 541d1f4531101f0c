// GET /v1/models, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter, and the mapping from a request's
// `model` to an adapter (with the on-demand resolver). Answers follow vLLM: the admin endpoints reply 200 with
// a plain-text "Success: ..." message, 400 for a missing field, a duplicate name or an invalid adapter, 404 for
// an unknown name or a missing folder, 403 for a folder outside --lora-root.
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

AdapterStack resolve_adapters(ServerState& st, const std::string& model, const std::vector<AdapterSpec>& listed) {
  AdapterStack out;
  out.adapter = resolve_model(st, model);
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
  st.backend->unregister_adapter(name);
  log_info("unloaded LoRA adapter '{}'", name);
  res.status = 200;
  res.content_type = "text/plain";
  res.body = fmt::format("Success: LoRA adapter '{}' removed successfully.", name);
}

}  // namespace lp::server
