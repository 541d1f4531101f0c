// The operator dashboard's window, rates, hints, JSON state and metrics (dashboard.h says what each is).
#include "server/dashboard.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "core/check.h"
#include "core/clock.h"
#include "core/log.h"
#include "server/backend.h"
#include "server/handlers.h"
#include "server/metrics.h"
#include "server/server_state.h"

namespace lp::server {

namespace {

using ojson = nlohmann::ordered_json;

// The window of the last `seconds` of `s`: the index of its base sample, the newest sample at or before
// (last.t - seconds), or the oldest one when the history is shorter. Counters are differenced against it.
size_t window_base(const std::vector<DashboardSample>& s, double seconds) {
  const double from = s.back().t - seconds;
  size_t base = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i].t <= from) base = i;
  return base;
}

// Per second over a window; a window shorter than a second (just after start) counts as one second, so the
// first sample after start does not turn one eviction into a storm.
double per_second(int64_t delta, double span_s) {
  return static_cast<double>(delta) / std::max(span_s, 1.0);
}

int64_t delta(int64_t now, int64_t then) {
  return std::max<int64_t>(0, now - then);
}

// The q-quantile of a histogram of observations (cumulative buckets), interpolated linearly within its
// bucket, as Prometheus' histogram_quantile: observations past the last bound report that bound.
double quantile(const std::vector<double>& bounds, const std::vector<int64_t>& cum, int64_t count, double q) {
  if (count <= 0) return 0;
  const double rank = q * static_cast<double>(count);
  int64_t prev = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (static_cast<double>(cum[i]) >= rank && cum[i] > prev) {
      const double lo = i == 0 ? 0 : bounds[i - 1];
      return lo + (bounds[i] - lo) * (rank - static_cast<double>(prev)) / static_cast<double>(cum[i] - prev);
    }
    prev = cum[i];
  }
  return bounds.empty() ? 0 : bounds.back();
}

LoadLatency latency(const lora::Histogram& now, const lora::Histogram& then) {
  LoadLatency l;
  l.count = delta(now.count, then.count);
  if (l.count == 0) return l;
  std::vector<int64_t> cum(now.bounds.size());
  for (size_t i = 0; i < cum.size(); ++i)
    cum[i] = delta(now.buckets[i], i < then.buckets.size() ? then.buckets[i] : 0);
  l.mean_ms = std::max(0.0, now.sum - then.sum) / static_cast<double>(l.count);
  l.p50_ms = quantile(now.bounds, cum, l.count, 0.5);
  l.p95_ms = quantile(now.bounds, cum, l.count, 0.95);
  if (cum.empty() || cum.back() < l.count) return l;  // the slowest load is over the last bound
  for (size_t i = 0; i < cum.size(); ++i)
    if (cum[i] == l.count) {
      l.max_le_ms = now.bounds[i];
      break;
    }
  return l;
}

// Requests per adapter in the samples after `base`.
std::map<std::string, int64_t> adapter_requests(const std::vector<DashboardSample>& s, size_t base) {
  std::map<std::string, int64_t> n;
  for (size_t i = base + 1; i < s.size(); ++i)
    for (const auto& [name, k] : s[i].adapter_requests) n[name] += k;
  return n;
}

void add_hints(WindowStats& w, const DashboardSample& last) {
  const std::string suggest =
      w.suggested_max_loras > last.max_loras ? fmt::format(", to at least {}", w.suggested_max_loras) : "";
  if (w.evictions_slot.window > kEvictionRateHint)
    w.hints.push_back(
        {"evictions", "slot", 0,
         fmt::format("the slot tier evicts {:.1f} adapters/s (last 5 min): raise --max-loras (now {}"
                     "){}; --max-cpu-loras must stay >= --max-loras",
                     w.evictions_slot.window, last.max_loras, suggest)});
  if (w.evictions_host.window > kEvictionRateHint)
    w.hints.push_back(
        {"evictions", "host", 0,
         fmt::format("the host tier evicts {:.1f} adapters/s (last 5 min), so they are read from "
                     "disk again: raise --max-cpu-loras (now {})",
                     w.evictions_host.window, last.max_cpu_loras)});
  if (w.suggested_max_loras > last.max_loras)
    w.hints.push_back(
        {"max_loras", "", w.suggested_max_loras,
         fmt::format("{} adapter{} had requests in the last 5 min: --max-loras {} (active + 20%) "
                     "would hold them all (now {})",
                     w.active_adapters, w.active_adapters == 1 ? "" : "s", w.suggested_max_loras,
                     last.max_loras)});
  for (const auto& a : w.adapters)
    if (w.requests_in_window >= kMergeMinRequests && a.share > kMergeShareHint)
      w.hints.push_back({"merge", a.name, 0,
                         fmt::format("adapter '{}' took {:.0f}% of the requests in the last 5 min: `loraplex "
                                     "merge` it into the base and serve the merged model without LoRA",
                                     a.name, 100 * a.share)});
}

}  // namespace

WindowStats analyze(const std::vector<DashboardSample>& s) {
  WindowStats w;
  w.samples = s.size();
  if (s.empty()) return w;
  const DashboardSample& last = s.back();
  const size_t b5 = window_base(s, kHintWindowS), b10 = window_base(s, kRecentWindowS);
  const DashboardSample &first = s[b5], &recent = s[b10];
  w.span_s = last.t - first.t;
  const double span10 = last.t - recent.t;
  auto rates = [&](auto field) {
    return WindowRates{per_second(delta(last.*field, recent.*field), span10),
                       per_second(delta(last.*field, first.*field), w.span_s)};
  };
  w.requests = rates(&DashboardSample::requests);
  w.evictions_slot = rates(&DashboardSample::evictions_slot);
  w.evictions_host = rates(&DashboardSample::evictions_host);

  const auto in_window = adapter_requests(s, b5), in_recent = adapter_requests(s, b10);
  int64_t adapter_total = 0;
  for (const auto& [name, n] : in_window) adapter_total += n;
  // Adapter requests are counted by the adapter manager and all requests by the backend, a moment apart: a
  // share is never over 1.
  w.requests_in_window = std::max(delta(last.requests, first.requests), adapter_total);
  for (const auto& [name, n] : in_window) {
    if (n <= 0) continue;
    WindowStats::Adapter a;
    a.name = name;
    a.requests = n;
    auto r = in_recent.find(name);
    a.rate = {per_second(r == in_recent.end() ? 0 : r->second, span10), per_second(n, w.span_s)};
    a.share = static_cast<double>(n) / static_cast<double>(w.requests_in_window);
    w.adapters.push_back(std::move(a));
  }
  std::stable_sort(w.adapters.begin(), w.adapters.end(),
                   [](const auto& x, const auto& y) { return x.requests > y.requests; });
  w.active_adapters = static_cast<int>(w.adapters.size());
  w.suggested_max_loras = suggested_max_loras(w.active_adapters);

  const int64_t hits = delta(last.slot_hits, first.slot_hits);
  const int64_t from_host = delta(last.loads_from_host, first.loads_from_host);
  const int64_t from_disk = std::min(delta(last.loads_from_disk, first.loads_from_disk), from_host);
  w.activations = hits + from_host;
  if (w.activations > 0) {
    const auto n = static_cast<double>(w.activations);
    w.from_slot = static_cast<double>(hits) / n;
    w.from_host = static_cast<double>(from_host - from_disk) / n;
    w.from_disk = static_cast<double>(from_disk) / n;
  }
  w.load_host = latency(last.load_ms_host, first.load_ms_host);
  w.load_disk = latency(last.load_ms_disk, first.load_ms_disk);
  w.load_failures = delta(last.load_failures, first.load_failures);
  add_hints(w, last);
  return w;
}

// ---- the window and its sampler ---------------------------------------------------------------------------

void Dashboard::add(DashboardSample s) {
  std::lock_guard lk(mu_);
  window_.push_back(std::move(s));
  while (window_.size() > kCapacity) window_.pop_front();
}

std::vector<DashboardSample> Dashboard::samples() const {
  std::lock_guard lk(mu_);
  return {window_.begin(), window_.end()};
}

namespace {

// A sample of `b`, its adapter requests counted against `last` (cumulative per adapter); `cumulative`
// receives this sample's cumulative counts.
DashboardSample take_sample(const Backend& b, const std::map<std::string, int64_t>& last,
                            std::map<std::string, int64_t>* cumulative) {
  DashboardSample s;
  s.t = now_seconds();
  const sched::EngineStats e = b.stats();
  s.running = e.running;
  s.waiting = e.waiting;
  s.kv_usage = e.kv_usage;
  s.max_loras = e.max_loras;
  const CacheSnapshot cache = b.cache_snapshot();
  s.requests = cache.requests_submitted;
  s.max_cpu_loras = cache.max_cpu_loras;
  if (auto c = b.lora_counters()) {
    s.slot_hits = c->slot_hits;
    s.loads_from_host = c->loads_from_host;
    s.loads_from_disk = c->loads_from_disk;
    s.load_failures = c->load_failures;
    s.evictions_slot = c->evictions_slot;
    s.evictions_host = c->evictions_host;
    s.load_ms_host = c->load_ms_host;
    s.load_ms_disk = c->load_ms_disk;
    for (const auto& [name, n] : c->requests) {
      auto it = last.find(name);
      // A name whose count went down was dropped by the manager and counted again from 0 since.
      const int64_t d = it == last.end() || n < it->second ? n : n - it->second;
      if (d > 0) s.adapter_requests.emplace_back(name, d);
      (*cumulative)[name] = n;
    }
  }
  return s;
}

}  // namespace

WindowStats Dashboard::current(const Backend& b) const {
  std::vector<DashboardSample> s;
  std::map<std::string, int64_t> last, unused;
  {
    std::lock_guard lk(mu_);
    s.assign(window_.begin(), window_.end());
    last = last_requests_;
  }
  s.push_back(take_sample(b, last, &unused));
  return analyze(s);
}

void Dashboard::tick(const Backend& b) {
  std::map<std::string, int64_t> cumulative;
  DashboardSample s;
  {
    std::lock_guard lk(mu_);
    s = take_sample(b, last_requests_, &cumulative);  // the sampler is the only writer of the window
    window_.push_back(std::move(s));
    while (window_.size() > kCapacity) window_.pop_front();
    last_requests_ = std::move(cumulative);
  }
  // Log a hint when it appears, when its suggestion changes and when it no longer applies; not every second.
  std::map<std::string, DashboardHint> now;
  for (auto& h : analyze(samples()).hints) now.emplace(h.key(), std::move(h));
  for (const auto& [key, h] : logged_)
    if (!now.count(key)) log_info("dashboard hint no longer applies: {}", h.message);
  for (const auto& [key, h] : now) {
    auto old = logged_.find(key);
    if (old == logged_.end() || old->second.value != h.value) log_info("dashboard hint: {}", h.message);
  }
  logged_ = std::move(now);
}

void Dashboard::start(const Backend& b, double period_s) {
  LP_CHECK(!thread_.joinable(), "Dashboard::start called twice");
  const auto period = std::chrono::duration<double>(period_s);
  thread_ = std::thread([this, &b, period] {
    std::unique_lock lk(run_mu_);
    while (!stopping_) {
      lk.unlock();
      try {
        tick(b);
      } catch (const std::exception& e) {  // a failed sample leaves a gap in the window, nothing else
        log_warn("dashboard sample failed: {}", e.what());
      }
      lk.lock();
      run_cv_.wait_for(lk, period, [&] { return stopping_; });
    }
  });
}

void Dashboard::stop() {
  {
    std::lock_guard lk(run_mu_);
    stopping_ = true;
  }
  run_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// ---- JSON, metrics, routes
// ----------------------------------------------------------------------------------

namespace {

ojson rates_json(const WindowRates& r) {
  return {{"rate_10s", r.recent}, {"rate_5m", r.window}};
}

ojson latency_json(const LoadLatency& l) {
  ojson j = {{"count", l.count}, {"mean_ms", l.mean_ms}, {"p50_ms", l.p50_ms}, {"p95_ms", l.p95_ms}};
  j["max_le_ms"] = l.max_le_ms ? ojson(*l.max_le_ms) : ojson(nullptr);
  return j;
}

ojson fraction(int64_t total, double f) {
  return total > 0 ? ojson(f) : ojson(nullptr);
}

constexpr size_t kMaxAdapterRows = 200;  // the page's adapter table (the busiest first)

}  // namespace

ojson dashboard_state(const Backend& b, const Dashboard& d) {
  const WindowStats w = d.current(b);
  const sched::EngineStats e = b.stats();
  const CacheSnapshot cache = b.cache_snapshot();
  const auto counters = b.lora_counters();
  std::map<std::string, int64_t> total;  // requests per adapter since start
  if (counters)
    for (const auto& [name, n] : counters->requests) total[name] = n;
  std::map<std::string, const WindowStats::Adapter*> traffic;
  for (const auto& a : w.adapters) traffic[a.name] = &a;
  auto requests_of = [&](const std::string& name) {
    auto t = total.find(name);
    auto r = traffic.find(name);
    return ojson{{"requests", t == total.end() ? 0 : t->second},
                 {"requests_5m", r == traffic.end() ? 0 : r->second->requests},
                 {"rate_10s", r == traffic.end() ? 0.0 : r->second->rate.recent},
                 {"rate_5m", r == traffic.end() ? 0.0 : r->second->rate.window},
                 {"share_5m", r == traffic.end() ? 0.0 : r->second->share}};
  };

  ojson j;
  j["lora_enabled"] = b.lora_enabled();
  j["max_loras"] = e.max_loras;
  j["max_cpu_loras"] = cache.max_cpu_loras;
  j["samples"] = w.samples;
  j["window_s"] = w.span_s;
  j["engine"] = {{"running", e.running},
                 {"waiting", e.waiting},
                 {"kv_usage", e.kv_usage},
                 {"kv_blocks", e.kv_cache.num_blocks},
                 {"kv_capacity_tokens", e.kv_cache.capacity_tokens}};
  j["requests"] = rates_json(w.requests);
  j["requests"]["in_window"] = w.requests_in_window;

  ojson slots = ojson::array();
  std::set<std::string> in_slot;
  for (size_t i = 0; i < cache.slots.size(); ++i) {
    const SlotListing& s = cache.slots[i];
    ojson row = {{"index", i},
                 {"adapter", s.adapter.empty() ? ojson(nullptr) : ojson(s.adapter)},
                 {"pinned", s.pinned},
                 {"holders", s.holders}};
    if (!s.adapter.empty()) {
      in_slot.insert(s.adapter);
      row.update(requests_of(s.adapter));
    }
    slots.push_back(std::move(row));
  }
  j["slots"] = std::move(slots);
  ojson host = ojson::array();
  for (auto it = cache.host.rbegin(); it != cache.host.rend(); ++it) {  // most recently used first
    ojson row = {{"adapter", *it}, {"in_slot", in_slot.count(*it) > 0}};
    row.update(requests_of(*it));
    host.push_back(std::move(row));
  }
  j["host"] = std::move(host);

  // Adapters with traffic in the window or a place in a tier, the busiest first.
  std::vector<AdapterListing> listed = b.list_adapters();
  const std::set<std::string> in_host(cache.host.begin(), cache.host.end());
  std::stable_sort(listed.begin(), listed.end(), [&](const auto& x, const auto& y) {
    auto rx = traffic.find(x.name), ry = traffic.find(y.name);
    return (rx == traffic.end() ? 0 : rx->second->requests) >
           (ry == traffic.end() ? 0 : ry->second->requests);
  });
  ojson adapters = ojson::array();
  size_t shown = 0;
  for (const auto& a : listed) {
    if (!traffic.count(a.name) && !in_host.count(a.name) && !in_slot.count(a.name)) continue;
    if (shown++ == kMaxAdapterRows) break;
    ojson row = {{"name", a.name}, {"tier", a.tier}, {"pinned", a.pinned}};
    row.update(requests_of(a.name));
    adapters.push_back(std::move(row));
  }
  j["adapters"] = std::move(adapters);
  j["registered"] = listed.size();

  j["tiers"] = {{"activations", w.activations},
                {"slot", fraction(w.activations, w.from_slot)},
                {"host", fraction(w.activations, w.from_host)},
                {"disk", fraction(w.activations, w.from_disk)}};
  j["loads"] = {{"host_to_slot", latency_json(w.load_host)},
                {"disk_to_host", latency_json(w.load_disk)},
                {"failures", w.load_failures}};
  j["evictions"] = {{"slot", rates_json(w.evictions_slot)}, {"host", rates_json(w.evictions_host)}};
  j["active_adapters"] = w.active_adapters;
  j["suggested_max_loras"] = w.suggested_max_loras;
  ojson hints = ojson::array();
  for (const auto& h : w.hints)
    hints.push_back({{"kind", h.kind}, {"subject", h.subject}, {"message", h.message}});
  j["hints"] = std::move(hints);
  return j;
}

void describe_dashboard_metrics(ServerState& st) {
  MetricsRegistry& m = st.metrics;
  m.describe(
      "loraplex_suggested_max_loras", MetricType::kGauge,
      "--max-loras for the last 5 minutes' traffic: adapters with requests + 20%, rounded up (0: none).");
  m.describe("loraplex_hint", MetricType::kGauge,
             "The dashboard's hints now, one series (value 1) per hint: kind evictions (subject: the tier), "
             "max_loras, merge (subject: the adapter).");
  m.describe("loraplex_lora_evictions_per_second", MetricType::kGauge,
             "Adapter evictions per second over the last 5 minutes, by the tier left (slot, host).");
  m.add_collector([&st](MetricsRegistry& reg) {
    if (!st.ready.load(std::memory_order_acquire)) return;
    const WindowStats w = st.dashboard.current(*st.backend);
    reg.set("loraplex_suggested_max_loras", {}, w.suggested_max_loras);
    reg.clear("loraplex_hint");
    for (const auto& h : w.hints) reg.set("loraplex_hint", {{"kind", h.kind}, {"subject", h.subject}}, 1);
    reg.set("loraplex_lora_evictions_per_second", {{"tier", "slot"}}, w.evictions_slot.window);
    reg.set("loraplex_lora_evictions_per_second", {{"tier", "host"}}, w.evictions_host.window);
  });
}

void handle_dashboard_state(ServerState& st, const HttpRequest&, HttpResponse& res) {
  ojson j = dashboard_state(*st.backend, st.dashboard);
  j["model"] = st.options.served_model_name;
  write_json(res, dump_json(j));
  res.set_header("Cache-Control", "no-store");
}

}  // namespace lp::server
