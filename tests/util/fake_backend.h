// A scripted Backend for HTTP-layer tests: every submitted request gets a thread that emits `max_tokens`
// tokens (text "t<i> ") every `token_delay`, after `first_delay`, then finishes with "length"; it notices an
// aborted channel within ~2 ms and records it. Adapters are a plain name → path map. The first update
// reports `first_delay` as the request's queue time; stats() and lora_counters() start from the scripted
// `base_stats` and `counters`.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/check.h"
#include "server/backend.h"

namespace lp::test {

class FakeBackend : public server::Backend {
 public:
  std::chrono::milliseconds first_delay{0};
  std::chrono::milliseconds token_delay{1};
  std::atomic<bool> queue_full{false};     // submit() refuses as unavailable (503)
  std::atomic<bool> over_cap{false};       // submit() refuses as a queue over its cap (kOverloaded: 429)
  std::atomic<bool> throw_internal{false};  // submit() throws std::runtime_error
  std::atomic<int> aborted{0};              // requests that saw their channel aborted
  std::atomic<int> finished{0};
  std::atomic<int> running{0};
  int64_t max_len = 64;
  std::string quant = "none";  // what quantization() answers
  sched::EngineStats base_stats;  // stats() returns it with running / kv_usage / max_loras filled in
  lora::CacheCounters counters;   // what lora_counters() answers
  server::CacheSnapshot cache;    // what cache_snapshot() answers (requests_submitted: the requests submitted)

  // Changes base_stats, counters and cache under the lock the methods reading them take: for a test whose
  // server reads them on a thread of its own (the dashboard's sampler), where plain assignments would race.
  template <class F>
  void script(F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    f(base_stats, counters, cache);
  }

  ~FakeBackend() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : threads_) t.join();
  }

  std::vector<sched::Request> submitted() {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }

  std::shared_ptr<sched::RequestChannel> submit(sched::Request req) override {
    if (throw_internal) throw std::runtime_error("fake backend exploded");
    if (queue_full) fail_as(ErrorKind::kUnavailable, "too many waiting requests; retry later");
    if (over_cap) fail_as(ErrorKind::kOverloaded, "too many waiting requests (2, --max-waiting); retry later");
    if (!req.adapter.empty() && !is_registered(req.adapter))
      fail_as(ErrorKind::kNotFound, "The model `{}` does not exist.", req.adapter);
    auto ch = std::make_shared<sched::RequestChannel>();
    std::lock_guard<std::mutex> lock(mu_);
    submitted_.push_back(req);
    ++running;
    threads_.emplace_back([this, ch, req] { run(ch, req); });
    return ch;
  }

  sched::EngineStats stats() const override {
    std::unique_lock<std::mutex> lock(mu_);
    sched::EngineStats s = base_stats;
    lock.unlock();
    s.running = running.load();
    s.kv_usage = running.load() > 0 ? 0.5 : 0.0;
    s.max_loras = 2;
    return s;
  }
  int64_t max_model_len() const override { return max_len; }
  std::string quantization() const override { return quant; }
  bool lora_enabled() const override { return true; }
  bool is_registered(const std::string& name) const override {
    std::lock_guard<std::mutex> lock(mu_);
    return adapters_.count(name) > 0;
  }
  void register_adapter(const std::string& name, const std::filesystem::path& path, bool pinned, bool replace,
                        const std::optional<std::filesystem::path>& /*confine_root*/) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (adapters_.count(name) && !replace) fail("adapter '{}' already exists", name);
    if (path.filename() == "bad") fail("adapter rank 64 exceeds --max-lora-rank 16");
    adapters_[name] = path.string();
  }
  void unregister_adapter(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!adapters_.erase(name)) fail_as(ErrorKind::kNotFound, "adapter '{}' is not registered", name);
  }
  std::vector<server::AdapterListing> list_adapters() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<server::AdapterListing> out;
    for (const auto& [n, p] : adapters_) out.push_back({n, p, false, "disk", 8});
    return out;
  }
  std::optional<lora::CacheCounters> lora_counters() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return counters;
  }
  server::CacheSnapshot cache_snapshot() const override {
    std::lock_guard<std::mutex> lock(mu_);
    server::CacheSnapshot c = cache;
    c.requests_submitted = static_cast<int64_t>(submitted_.size());
    return c;
  }

 private:
  void run(std::shared_ptr<sched::RequestChannel> ch, sched::Request req) {
    auto wait = [&](std::chrono::milliseconds d) {
      auto end = std::chrono::steady_clock::now() + d;
      while (std::chrono::steady_clock::now() < end) {
        if (ch->aborted()) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      return !ch->aborted();
    };
    bool ok = wait(first_delay);
    for (int i = 0; ok && i < req.max_tokens; ++i) {
      sched::Output o;
      o.tokens = {100 + i};
      o.text = "t" + std::to_string(i) + " ";
      if (req.logprobs >= 0) {
        sched::TokenLogprob lp{100 + i, -0.5f, {}};
        for (int k = 0; k < req.logprobs; ++k) lp.top.push_back({200 + k, -1.0f - k});
        o.logprobs.push_back(lp);
      }
      o.prompt_tokens = static_cast<int>(req.prompt.size());
      o.completion_tokens = i + 1;
      if (i == 0) o.queue_time_s = std::chrono::duration<double>(first_delay).count();
      if (i == 0 && req.prompt_logprobs >= 0) {  // prompt token k: logprob -k/4, rank k + 1, alternatives 300+
        o.prompt_logprobs.emplace_back(std::nullopt);
        for (size_t k = 1; k < req.prompt.size(); ++k) {
          sched::TokenLogprob lp{req.prompt[k], -0.25f * static_cast<float>(k), {}, static_cast<int>(k) + 1};
          for (int a = 0; a < req.prompt_logprobs; ++a) lp.top.push_back({300 + a, -0.1f * static_cast<float>(a)});
          o.prompt_logprobs.emplace_back(lp);
        }
      }
      if (i + 1 == req.max_tokens) {
        o.finish = sched::FinishReason::kLength;
        if (!req.stop_token_ids.empty()) {  // "stopped" by the first stop token id
          o.finish = sched::FinishReason::kStop;
          o.stop_reason = req.stop_token_ids[0];
        }
      }
      if (req.adapter == "broken") {
        o = {};
        o.finish = sched::FinishReason::kError;
        o.error = "the adapter failed to load";
      }
      ch->push(std::move(o));
      if (req.adapter == "broken") break;
      ok = i + 1 == req.max_tokens || wait(token_delay);
    }
    if (!ok) ++aborted;
    else ++finished;
    --running;
  }

  // Guards submitted_, threads_, adapters_, and base_stats / counters / cache in script() and their readers.
  mutable std::mutex mu_;
  std::vector<sched::Request> submitted_;
  std::vector<std::thread> threads_;
  std::map<std::string, std::string> adapters_;
};

}  // namespace lp::test
