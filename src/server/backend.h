// What the HTTP layer needs from the rest of the server: submit generation requests and read stats (the
// engine), and register / list / unregister adapters (the adapter manager). An interface so the HTTP layer
// is tested against a scripted fake (tests/server) as well as the real engine (EngineBackend, and the e2e
// tests). Every method is called from HTTP threads concurrently and throws lp::Error for client mistakes.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lora/cache_counters.h"
#include "sched/engine.h"
#include "sched/request.h"

namespace lp::lora { class AdapterManager; }

namespace lp::server {

struct AdapterListing {
  std::string name;
  std::string path;  // the resolved folder
  bool pinned = false;
  std::string tier;  // "slot" | "host" | "loading" | "disk"
  int rank = 0;
};

// What the operator dashboard (server/dashboard.h) shows of the adapter tiers and the traffic.
struct SlotListing {
  std::string adapter;  // "": empty
  bool pinned = false;
  int holders = 0;  // running requests using the slot
};
struct CacheSnapshot {
  std::vector<SlotListing> slots;  // by slot index (none without LoRA)
  std::vector<std::string> host;   // the host tier, least recently used first (includes the adapters in slots)
  int max_cpu_loras = 0;
  int64_t requests_submitted = 0;  // engine requests accepted since start, base model and adapters alike
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Throws lp::Error: kInvalid, kNotFound (unknown adapter), kUnavailable (queue full, shutting down).
  // Counts the request for its adapter (the engine does, through AdapterManager::count_request).
  virtual std::shared_ptr<sched::RequestChannel> submit(sched::Request req) = 0;
  virtual sched::EngineStats stats() const = 0;
  virtual int64_t max_model_len() const = 0;
  // The base model's quantization as loaded: "none", "int8", "awq", "gptq" (model::ModelWeights).
  virtual std::string quantization() const = 0;

  virtual bool lora_enabled() const = 0;
  virtual bool is_registered(const std::string& name) const = 0;
  // Throws lp::Error with the kind the HTTP status follows (see lora::AdapterManager::register_adapter).
  // replace: atomically replace a registration of the same name (load_inplace); the old one stays if the
  // new folder is refused. confine_root: --lora-root for a folder a client named (every file of the adapter
  // must be a regular file inside it, at every read); nullopt for the operator's --lora-modules.
  virtual void register_adapter(const std::string& name, const std::filesystem::path& path, bool pinned,
                                bool replace, const std::optional<std::filesystem::path>& confine_root) = 0;
  virtual void unregister_adapter(const std::string& name) = 0;
  virtual std::vector<AdapterListing> list_adapters() const = 0;
  virtual std::optional<lora::CacheCounters> lora_counters() const = 0;  // nullopt without LoRA
  virtual CacheSnapshot cache_snapshot() const = 0;
};

// The real thing: an Engine and (optionally) the AdapterManager it serves from. Neither is owned.
// `max_model_len` > 0 caps the context below the model's (--max-model-len): the HTTP layer validates and
// clamps every request's prompt + max_tokens against max_model_len().
class EngineBackend : public Backend {
 public:
  EngineBackend(sched::Engine& engine, lora::AdapterManager* adapters, int64_t max_model_len = 0,
                std::string quantization = "none")
      : engine_(engine),
        adapters_(adapters),
        max_model_len_(max_model_len),
        quantization_(std::move(quantization)) {}
  std::shared_ptr<sched::RequestChannel> submit(sched::Request req) override;
  sched::EngineStats stats() const override;
  int64_t max_model_len() const override;
  std::string quantization() const override { return quantization_; }
  bool lora_enabled() const override { return adapters_ != nullptr; }
  bool is_registered(const std::string& name) const override;
  void register_adapter(const std::string& name, const std::filesystem::path& path, bool pinned, bool replace,
                        const std::optional<std::filesystem::path>& confine_root) override;
  void unregister_adapter(const std::string& name) override;
  std::vector<AdapterListing> list_adapters() const override;
  std::optional<lora::CacheCounters> lora_counters() const override;
  CacheSnapshot cache_snapshot() const override;

 private:
  sched::Engine& engine_;
  lora::AdapterManager* adapters_;
  int64_t max_model_len_;
  std::string quantization_;
  std::atomic<int64_t> submitted_{0};
};

}  // namespace lp::server
