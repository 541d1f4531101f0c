// `loraplex serve MODEL_DIR [--lora-modules name=path ...] --max-loras N ...`: the OpenAI-compatible server,
// flags named like `vllm serve`'s. Start-up order: bind the port first (so /health answers 503 while the
// model loads), measure the memory this process may take (before the weights, so they are counted once), load
// model + tokenizer + chat template (--quantization applied at load), create the adapter manager and register
// --lora-modules, size the KV cache (lora/kv_plan.h, the weights counted as loaded; the plan is logged, and
// `loraplex plan` prints the same for the same flags), start the engine, attach. SIGTERM / SIGINT: stop
// admitting (503), let in-flight requests finish within --shutdown-timeout (then abort them), close, exit 0;
// a second one exits at once (status 128 + signal); one while the model loads exits 0 at once.
#include <algorithm>
#include <signal.h>

#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "core/clock.h"
#include "core/log.h"
#include "lora/adapter_manager.h"
#include "lora/plan.h"
#include "model/model.h"
#include "sched/engine.h"
#include "server/backend.h"
#include "server/lora_routes.h"
#include "server/server.h"
#include "server/tool_parser.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace lp::cli {

namespace {

struct ServeArgs {
  std::string model_dir;
  std::vector<std::string> lora_modules;
  std::vector<std::string> lora_routes;  // name=adapter:weight,... (server/lora_routes.h)
  bool enable_lora = false;
  int max_loras = 1;
  int max_stacked_loras = -1;  // -1: min(4, --max-loras)
  int max_cpu_loras = 0;
  int max_lora_rank = 16;
  std::string lora_dtype = "auto";
  std::vector<std::string> pin;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  std::string served_model_name;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 2048;
  int64_t max_model_len = 0;
  int max_waiting = 1024;
  int max_waiting_per_adapter = 0;
  double adapter_wait_timeout = 30;
  int64_t kv_cache_tokens = 0;
  std::string kv_cache_memory;
  size_t max_request_bytes = 16u << 20;
  double shutdown_timeout = 30;
  bool allow_runtime_lora_updating = false;
  std::string lora_root;
  bool enable_lora_resolver = false;
  bool strict_base = false;
  int threads = 0;
  bool mmap_weights = false;
  std::string device = "cpu";
  QuantFlags quant;
  bool enable_auto_tool_choice = false;
  std::string tool_call_parser;
  std::string kv_cache_dtype = "auto";
  int http_threads = 2;
  int max_connections = 512;
  std::vector<std::string> allowed_origins;
  bool allow_special_tokens_in_content = false;
  std::string chat_template;  // a file, or the template text itself
  bool trust_request_chat_template = false;
  bool enable_prefix_caching = true;
  std::string replica_id;
  int overload_status = 429;
};

struct LoraModule {
  std::string name, path, base_model_name;
  double weight = 1;  // admission weight of this tenant (fair scheduling)
};

// "name=path" or vLLM's JSON form {"name": ..., "path": ..., "base_model_name": ...}, which may also carry
// loraplex's "weight" (a positive number: this tenant's share of admissions relative to the others).
LoraModule parse_lora_module(const std::string& s) {
  LoraModule m;
  if (!s.empty() && s.front() == '{') {
    nlohmann::json j = nlohmann::json::parse(s, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j.contains("path") || !j["name"].is_string() ||
        !j["path"].is_string())
      fail("--lora-modules: '{}' is not {{\"name\": ..., \"path\": ...}}", s);
    m.name = j["name"];
    m.path = j["path"];
    if (j.contains("base_model_name") && j["base_model_name"].is_string()) m.base_model_name = j["base_model_name"];
    if (j.contains("weight")) {
      if (!j["weight"].is_number() || !(j["weight"].get<double>() > 0) || !(j["weight"].get<double>() <= 1e6))
        fail("--lora-modules: 'weight' of '{}' must be a number in (0, 1e6]", m.name);
      m.weight = j["weight"].get<double>();
    }
  } else {
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) fail("--lora-modules: expected name=path, got '{}'", s);
    m.name = s.substr(0, eq);
    m.path = s.substr(eq + 1);
  }
  return m;
}

std::string default_served_name(const std::string& dir) {
  std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(dir));
  std::string name = p.filename().string();
  return name.empty() ? dir : name;
}

bool env_true(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return false;
  std::string s(v);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s == "1" || s == "true" || s == "yes";
}

// --chat-template: a file's contents, or (as vLLM accepts) the template text itself when no such file exists
// and the value looks like a template rather than a mistyped path.
std::string chat_template_source(const std::string& arg) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(arg, ec)) {
    std::ifstream f(arg, std::ios::binary);
    if (!f) fail("--chat-template: cannot read {}", arg);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  if (arg.find_first_of("{}\n") == std::string::npos)
    fail("--chat-template: '{}' is neither a readable file nor a template (no '{{', '}}' or newline)", arg);
  // vLLM decodes the text's escapes (codecs "unicode_escape"), so "\n" on a command line is a newline.
  std::string out;
  for (size_t i = 0; i < arg.size(); ++i) {
    if (arg[i] != '\\' || i + 1 == arg.size()) {
      out += arg[i];
      continue;
    }
    switch (arg[++i]) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      default: out += '\\'; out += arg[i];
    }
  }
  return out;
}

// "1.8 KiB", "6.0 MiB", "2.47 GiB": the load lines' sizes.
std::string size_text(double bytes) {
  if (bytes < 1048576.0) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  if (bytes < 1073741824.0) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{:.2f} GiB", bytes / 1073741824.0);
}

// The signals the watcher thread took once serving, for the drain to wait on. Shared with that (detached)
// thread, which outlives run_serve.
struct SignalBox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<int> pending;
  bool serving = false;  // false: the model is loading, a signal exits at once

  int next() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return !pending.empty(); });
    int s = pending.front();
    pending.pop_front();
    return s;
  }
};

void run_serve(ServeArgs a) {
  // --api-key wins, then LORAPLEX_API_KEY, then VLLM_API_KEY (vLLM's name for the same thing).
  for (const char* env : {"LORAPLEX_API_KEY", "VLLM_API_KEY"})
    if (a.api_key.empty())
      if (const char* k = std::getenv(env)) a.api_key = k;
  if (env_true("VLLM_ALLOW_RUNTIME_LORA_UPDATING")) a.allow_runtime_lora_updating = true;
  if (a.enable_lora_resolver && a.lora_root.empty()) fail("--enable-lora-resolver needs --lora-root");
  if (a.max_stacked_loras < 0) a.max_stacked_loras = std::min(4, a.max_loras);
  if (a.max_stacked_loras > a.max_loras)
    fail("--max-stacked-loras {} exceeds --max-loras {}: every adapter of a stack needs a slot at once",
         a.max_stacked_loras, a.max_loras);
  if (!a.lora_root.empty() && !std::filesystem::is_directory(a.lora_root))
    fail("--lora-root '{}' is not a folder", a.lora_root);
  std::vector<LoraModule> modules;
  for (const auto& s : a.lora_modules) modules.push_back(parse_lora_module(s));
  std::vector<server::LoraRoute> routes;  // their arms are checked once the adapters are registered
  for (const auto& s : a.lora_routes) {
    try {
      routes.push_back(server::parse_route_spec(s));
    } catch (const Error& e) {
      fail("--lora-route '{}': {}", s, e.what());
    }
  }
  const bool lora = a.enable_lora || !modules.empty() || !routes.empty() || a.allow_runtime_lora_updating ||
                    a.enable_lora_resolver;
  if (a.served_model_name.empty()) a.served_model_name = default_served_name(a.model_dir);
  check_quantization_flag(a.quant.quantization);  // a typo fails before the port is bound
  if (!a.tool_call_parser.empty() && !server::tool_parser_from_name(a.tool_call_parser))
    fail("--tool-call-parser: unknown parser '{}' (known: {})", a.tool_call_parser, server::kToolParserNames);
  if (a.enable_auto_tool_choice && a.tool_call_parser.empty())
    fail("--enable-auto-tool-choice requires --tool-call-parser");

  // Signals: blocked in every thread (they inherit this mask), taken with sigwait() below.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that went away must not kill the server

  server::ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_key = a.api_key;
  so.served_model_name = a.served_model_name;
  so.model_dir = std::filesystem::absolute(a.model_dir).lexically_normal().string();
  so.max_request_bytes = a.max_request_bytes;
  so.allow_runtime_lora_updating = a.allow_runtime_lora_updating;
  if (!a.lora_root.empty()) so.lora_root = std::filesystem::canonical(a.lora_root);
  so.enable_lora_resolver = a.enable_lora_resolver;
  so.max_stacked_loras = a.max_stacked_loras;
  so.enable_auto_tool_choice = a.enable_auto_tool_choice;
  so.tool_call_parser = a.tool_call_parser;
  so.http_threads = a.http_threads;
  so.max_connections = a.max_connections;
  so.allowed_origins = a.allowed_origins;
  so.allow_special_tokens_in_content = a.allow_special_tokens_in_content;
  so.trust_request_chat_template = a.trust_request_chat_template;
  so.replica_id = a.replica_id;
  so.overload_status = a.overload_status;
  so.dashboard_sample_s = 1;  // the dashboard's window: 300 samples = 5 minutes
  const std::string template_override = a.chat_template.empty() ? "" : chat_template_source(a.chat_template);
  server::Server srv(so);
  int port = srv.bind();
  std::thread http([&] { srv.listen(); });
  struct Joiner {
    server::Server& s;
    std::thread& t;
    ~Joiner() {
      s.stop();
      if (t.joinable()) t.join();
    }
  } joiner{srv, http};
  log_info("listening on http://{}:{} (loading {})", a.host, port, a.model_dir);
  // One thread takes the signals from here on. While the model loads nothing is served and nothing needs
  // draining, so a stop exits at once instead of after a load that may take minutes (a pod deleted while it
  // starts, `systemctl stop`); once serving, the signals are handed to the drain below.
  auto box = std::make_shared<SignalBox>();
  std::thread([sigs, box] {
    for (;;) {
      int s = 0;
      if (sigwait(&sigs, &s) != 0) continue;
      std::lock_guard<std::mutex> lock(box->mu);
      if (!box->serving) {
        log_info("{} while loading: exiting (nothing to drain)", s == SIGTERM ? "SIGTERM" : "SIGINT");
        std::_Exit(0);
      }
      box->pending.push_back(s);
      box->cv.notify_all();
    }
  }).detach();

  KvFlags kv_flags{a.kv_cache_tokens, a.kv_cache_memory, a.max_num_seqs, a.max_model_len, a.kv_cache_dtype};
  const model::ModelConfig config = model::ModelConfig::from_dir(a.model_dir);
  model::LoadOptions load = load_options(a.quant, config, a.mmap_weights);
  const model::Device device = resolve_device(a.device);  // --device cuda without a device fails here
  check_device_supports(device, load, config);
  lora::KvPlanOptions kv_options = kv_plan_options(kv_flags, config.torch_dtype);  // memory measured now
  plan_on_device(kv_options, device);
  kv_options.weights_bytes = lora::plan_weights(config, load).resident_bytes;      // quantized: less

  double t0 = now_seconds();
  load.progress = [t0, last = t0](std::string_view what, size_t done, size_t total) mutable {
    const double now = now_seconds();
    if (now - last < 1.0) return;  // a line a second at most; a fast load shows none
    last = now;
    log_info("loading model: {} {:.0f}% ({} of {}) after {:.1f} s", what, 100.0 * done / total,
             size_text(static_cast<double>(done)), size_text(static_cast<double>(total)), now - t0);
  };
  std::unique_ptr<model::Executor> model = load_executor(device, a.model_dir, load);
  text::Tokenizer tok = text::Tokenizer::from_dir(a.model_dir);
  std::optional<text::ChatTemplate> tmpl;
  if (!template_override.empty()) {
    // The model's special tokens (bos_token, ...) still reach the template, as transformers passes them.
    nlohmann::ordered_json config = nlohmann::ordered_json::object();
    const auto config_path = std::filesystem::path(a.model_dir) / "tokenizer_config.json";
    if (std::filesystem::exists(config_path)) {
      std::ifstream f(config_path, std::ios::binary);
      config = nlohmann::ordered_json::parse(f, nullptr, /*allow_exceptions=*/false);
      if (config.is_discarded() || !config.is_object()) fail("{}: invalid JSON", config_path.string());
    }
    try {
      tmpl.emplace(template_override, config);
    } catch (const Error& e) {
      fail("--chat-template: {}", e.what());
    }
    log_info("chat template from --chat-template ({} bytes)", template_override.size());
  } else {
    try {
      tmpl.emplace(text::ChatTemplate::from_dir(a.model_dir));
    } catch (const Error& e) {
      log_warn("no chat template ({}); /v1/chat/completions will answer 400", e.what());
    }
  }
  log_info("loaded model {}: {} in {:.2f} s ({} layers, max_model_len {})", a.served_model_name,
           size_text(static_cast<double>(model->weights().total_bytes)), now_seconds() - t0,
           model->config().n_layers, model->config().max_model_len);
  log_info("device: {}", model->describe());
  log_info("weights: quantization {}; a decode step reads {}", model->weights().quantization,
           bytes_by_format_text(model->weights().bytes_by_format()));

  std::unique_ptr<lora::AdapterManager> adapters;
  if (lora) {
    lora::ManagerOptions mo;
    mo.max_loras = a.max_loras;
    mo.max_cpu_loras = a.max_cpu_loras;
    mo.max_lora_rank = a.max_lora_rank;
    mo.lora_dtype = lora::parse_lora_dtype(a.lora_dtype, model->config().torch_dtype);
    mo.strict_base = a.strict_base;
    mo.base_model_name = a.served_model_name;
    mo.slot_memory = model->slot_memory();  // the slots live where the model computes
    adapters = std::make_unique<lora::AdapterManager>(model->config(), mo);
    log_info("LoRA memory plan:\n{}", lora::plan_text(adapters->plan()));  // before registering: it may fail
    for (const auto& m : modules) {
      if (!m.base_model_name.empty() && m.base_model_name != a.served_model_name)
        log_warn("--lora-modules {}: base_model_name '{}' is not the served model '{}'", m.name, m.base_model_name,
                 a.served_model_name);
      bool pinned = std::find(a.pin.begin(), a.pin.end(), m.name) != a.pin.end();
      const double ta = now_seconds();
      try {
        adapters->register_adapter(m.name, m.path, pinned);
      } catch (const Error& e) {
        if (pinned && !adapters->is_registered(m.name)) fail("--pin {}: {}", m.name, e.what());
        throw;
      }
      std::error_code ec;  // registering reads and checks the whole adapter: its weights file is the size
      const auto bytes =
          std::filesystem::file_size(std::filesystem::path(m.path) / "adapter_model.safetensors", ec);
      log_info("loaded adapter {}: {} in {:.1f} ms from {}{}", m.name,
               size_text(ec ? 0.0 : static_cast<double>(bytes)), (now_seconds() - ta) * 1e3, m.path,
               pinned ? " (pinned)" : "");
    }
    for (const auto& p : a.pin)
      if (!adapters->is_registered(p)) fail("--pin {}: no such adapter in --lora-modules", p);
    const server::RouteNames names{a.served_model_name,
                                   [&adapters](const std::string& n) { return adapters->is_registered(n); }};
    for (size_t i = 0; i < routes.size(); ++i) {
      try {
        srv.lora_routes().set(routes[i], names, /*replace=*/false);
      } catch (const Error& e) {
        fail("--lora-route '{}': {}", a.lora_routes[i], e.what());
      }
      log_info("route '{}' -> {}", routes[i].name, a.lora_routes[i].substr(a.lora_routes[i].find('=') + 1));
    }
  } else if (!a.pin.empty()) {
    fail("--pin needs --lora-modules");
  }

  const lora::KvPlan kv =
      lora::plan_kv_cache(model->config(), adapters ? &adapters->plan() : nullptr, kv_options);
  std::string kv_text = lora::kv_plan_text(kv);
  if (!kv_text.empty() && kv_text.back() == '\n') kv_text.pop_back();
  log_info("{}", kv_text);
  if (kv.kv_blocks == 0) fail("{}", kv.problem);

  sched::EngineConfig ec;
  ec.sched.max_num_seqs = a.max_num_seqs;
  ec.sched.max_num_batched_tokens = a.max_num_batched_tokens;
  ec.sched.max_waiting = a.max_waiting;
  ec.sched.max_waiting_per_adapter = a.max_waiting_per_adapter;
  ec.sched.adapter_wait_timeout_s = a.adapter_wait_timeout;
  for (const auto& m : modules) ec.sched.weights[m.name] = m.weight;
  ec.kv_cache_tokens = kv.kv_tokens;
  ec.kv_cache_dtype = kv.kv_dtype;
  const PoolThreads threads = pool_threads_plan(a.threads);
  log_info("compute threads: {} ({})", threads.threads, threads.why);
  ec.threads = threads.threads;
  ec.enable_prefix_caching = a.enable_prefix_caching;
  sched::Engine engine(*model, tok, adapters.get(), ec);
  engine.start();
  server::EngineBackend backend(engine, adapters.get(), a.max_model_len, model->weights().quantization);
  srv.attach(&backend, &tok, tmpl ? &*tmpl : nullptr);
  log_info("ready: serving '{}'{} on http://{}:{} (max_model_len {}, quantization {})", a.served_model_name,
           adapters ? fmt::format(" + {} adapters", adapters->list().size()) : "", a.host, port,
           backend.max_model_len(), backend.quantization());

  {
    std::lock_guard<std::mutex> lock(box->mu);
    box->serving = true;
  }
  int sig = box->next();
  log_info("{}: draining (in flight: {}); shutdown timeout {:.0f} s", sig == SIGTERM ? "SIGTERM" : "SIGINT",
           srv.in_flight(), a.shutdown_timeout);
  std::thread([box] {  // a second signal: the operator does not want to wait for the drain
    int again = box->next();
    log_warn("second {}: exiting now", again == SIGTERM ? "SIGTERM" : "SIGINT");
    std::_Exit(128 + again);
  }).detach();
  srv.drain();
  double t1 = now_seconds();
  engine.shutdown(std::chrono::milliseconds(static_cast<int64_t>(a.shutdown_timeout * 1000)));
  srv.wait_idle(std::max(1.0, a.shutdown_timeout - (now_seconds() - t1)));
  srv.stop();  // before the engine, backend and model go out of scope: no handler may reach them after this
  http.join();
  log_info("shut down cleanly in {:.2f} s", now_seconds() - t1);
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* c = app.add_subcommand("serve", "Serve the model and its LoRA adapters over the OpenAI API");
  c->add_option("model", a->model_dir, "Model folder (Hugging Face layout)")->required();
  c->add_option("--lora-modules", a->lora_modules,
                "Adapters: name=path or '{\"name\": ..., \"path\": ..., \"base_model_name\": ...}'");
  c->add_option("--lora-route", a->lora_routes,
                "A model name served by registered adapters split by weight, sticky per request `user`: "
                "'assistant=v2-stable:90,v3-candidate:10' (repeatable)");
  c->add_flag("--enable-lora", a->enable_lora, "Enable LoRA (implied by --lora-modules and the adapter flags)");
  c->add_option("--max-loras", a->max_loras, "Adapter slots (adapters in one batch)");
  c->add_option("--max-stacked-loras", a->max_stacked_loras,
                "Adapters one request may stack with the \"adapters\" field (each takes a slot, so at most "
                "--max-loras; default 4 or --max-loras if fewer)")
      ->check(CLI::Range(1, 64));
  c->add_option("--max-cpu-loras", a->max_cpu_loras, "Host-tier adapters (default = --max-loras)");
  c->add_option("--max-lora-rank", a->max_lora_rank, "Largest adapter rank");
  c->add_option("--lora-dtype", a->lora_dtype, "Adapter slot dtype: bf16 | f32 | auto");
  c->add_option("--pin", a->pin, "Adapters (by name) kept in a slot, never evicted");
  c->add_option("--host", a->host, "Address to bind");
  c->add_option("--port", a->port, "Port (0 = any free port)");
  c->add_option("--api-key", a->api_key,
                "Require 'Authorization: Bearer KEY' on /v1/* (or LORAPLEX_API_KEY, or VLLM_API_KEY)");
  c->add_option("--served-model-name", a->served_model_name, "The base model's name in the API (default: folder name)");
  c->add_option("--max-num-seqs", a->max_num_seqs, "Running requests at most");
  c->add_option("--max-num-batched-tokens", a->max_num_batched_tokens, "Tokens per engine step at most");
  c->add_option("--max-model-len", a->max_model_len, "Context length cap (default: the model's)");
  c->add_option("--max-waiting", a->max_waiting, "Waiting requests in all over which new ones get 429");
  c->add_option("--max-waiting-per-adapter", a->max_waiting_per_adapter,
                "Waiting requests of one adapter (or the base model) over which its new ones get 429 (0: no cap)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--adapter-wait-timeout", a->adapter_wait_timeout,
                "Seconds a request may wait for an adapter slot before it gets 503")
      ->check(CLI::PositiveNumber);
  c->add_option("--kv-cache-tokens", a->kv_cache_tokens, kKvCacheTokensHelp);
  c->add_option("--kv-cache-memory", a->kv_cache_memory, kKvCacheMemoryHelp);
  c->add_option("--kv-cache-dtype", a->kv_cache_dtype, kKvCacheDtypeHelp)->check(dtype_flag_check());
  c->add_option("--max-request-bytes", a->max_request_bytes, "Request bodies over this get 413");
  c->add_option("--shutdown-timeout", a->shutdown_timeout, "Seconds in-flight requests get after SIGTERM");
  c->add_option("--replica-id", a->replica_id,
                "This replica's name behind a load balancer, sent back in the x-loraplex-replica response header")
      ->check([](const std::string& s) {
        // A header value: keep it to a token's characters, so no input can split or forge a header.
        bool ok = !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char ch) {
          return std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.';
        });
        return ok ? std::string() : std::string("expected 1-64 of [A-Za-z0-9._-]");
      });
  c->add_option("--overload-status", a->overload_status,
                "The status of a refusal for load (over --max-waiting, --max-waiting-per-adapter): 429, or 503 "
                "behind a proxy that retries 503 on another replica (HAProxy 2.6 cannot retry 429)")
      ->check(CLI::IsMember({429, 503}));
  c->add_flag("--allow-runtime-lora-updating", a->allow_runtime_lora_updating,
              "Enable /v1/load_lora_adapter and /v1/unload_lora_adapter (or VLLM_ALLOW_RUNTIME_LORA_UPDATING=true), "
              "and /v1/load_lora_route, /v1/unload_lora_route");
  c->add_option("--lora-root", a->lora_root, "Adapter paths from HTTP must resolve inside this folder");
  c->add_flag("--enable-lora-resolver", a->enable_lora_resolver,
              "Load an unknown adapter name from --lora-root/<name> on first use");
  c->add_flag("--strict-base", a->strict_base, "Refuse adapters trained on another base model");
  c->add_option("--threads", a->threads,
                "Compute threads (default: the CPUs this process may use: affinity mask, cgroup CPU quota)");
  c->add_flag("--mmap-weights", a->mmap_weights, kMmapWeightsHelp);
  add_quant_flags(c, a->quant);
  add_device_flag(c, a->device);
  c->add_flag("--enable-auto-tool-choice", a->enable_auto_tool_choice,
              "Chat: read tool calls out of the model's text for tool_choice \"auto\" (needs --tool-call-parser)");
  c->add_option("--tool-call-parser", a->tool_call_parser,
                "How tool calls look in the model's text: hermes | llama3_json | mistral (as vLLM)");
  c->add_option("--http-threads", a->http_threads, "HTTP I/O threads (non-blocking: they never wait on the engine or a slow client)");
  c->add_option("--max-connections", a->max_connections, "Open HTTP connections at most (more: 503 and close)");
  c->add_option("--allowed-origins", a->allowed_origins,
                "Origins (e.g. https://app.example) whose browser requests are served, with CORS; any other "
                "Origin gets 403. '*': any. Default: none");
  c->add_flag("--allow-special-tokens-in-content", a->allow_special_tokens_in_content,
              "Chat: tokenize special-token text in messages as special tokens (as vLLM does; lets a client "
              "forge turns). Default: it is plain text");
  c->add_option("--chat-template", a->chat_template,
                "Chat template: a file, or the Jinja text itself (default: the model's)");
  c->add_flag("--trust-request-chat-template", a->trust_request_chat_template,
              "Render a request's own chat_template (bounded); default: such requests get 400");
  c->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", a->enable_prefix_caching,
              "Reuse the KV of shared prompt prefixes (per adapter); default: on");
  c->callback([a] { run_serve(*a); });
}

}  // namespace lp::cli
