// EngineBackend: the Backend interface over sched::Engine and lora::AdapterManager (plain forwarding; the
// only policy here is what "LoRA disabled" answers).
#include <algorithm>

#include "core/check.h"
#include "lora/adapter_manager.h"
#include "server/backend.h"

namespace lp::server {

std::shared_ptr<sched::RequestChannel> EngineBackend::submit(sched::Request req) {
  auto ch = engine_.submit(std::move(req));
  submitted_.fetch_add(1, std::memory_order_relaxed);
  return ch;
}

sched::EngineStats EngineBackend::stats() const { return engine_.stats(); }

int64_t EngineBackend::max_model_len() const {
  int64_t m = engine_.max_model_len();
  return max_model_len_ > 0 ? std::min(m, max_model_len_) : m;
}

bool EngineBackend::is_registered(const std::string& name) const {
  return adapters_ && adapters_->is_registered(name);
}

void EngineBackend::register_adapter(const std::string& name, const std::filesystem::path& path, bool pinned,
                                     bool replace, const std::optional<std::filesystem::path>& confine_root) {
  if (!adapters_) fail("LoRA is not enabled on this server (start it with --max-loras >= 1)");
  adapters_->register_adapter(name, path, pinned, replace, confine_root);
}

void EngineBackend::unregister_adapter(const std::string& name) {
  if (!adapters_) fail_as(ErrorKind::kNotFound, "The lora adapter '{}' cannot be found.", name);
  adapters_->unregister_adapter(name);
}

std::vector<AdapterListing> EngineBackend::list_adapters() const {
  std::vector<AdapterListing> out;
  if (!adapters_) return out;
  for (const auto& i : adapters_->list()) out.push_back({i.name, i.path.string(), i.pinned, i.tier, i.rank});
  return out;
}

std::optional<lora::CacheCounters> EngineBackend::lora_counters() const {
  if (!adapters_) return std::nullopt;
  return adapters_->counters();
}

CacheSnapshot EngineBackend::cache_snapshot() const {
  CacheSnapshot c;
  c.requests_submitted = submitted_.load(std::memory_order_relaxed);
  if (!adapters_) return c;
  auto t = adapters_->tiers();
  for (auto& s : t.slots) c.slots.push_back({std::move(s.name), s.pinned, s.holders});
  c.host = std::move(t.host);
  c.max_cpu_loras = adapters_->max_cpu_loras();
  return c;
}

}  // namespace lp::server
