// The operator dashboard's data: a window of recent history (a sample of the cache, traffic and engine
// counters every second, the last 300 kept), the rates and the seed's rules of thumb ("hints") computed from
// it, GET /dashboard/state's JSON and the /metrics families that carry the hints. The page itself (GET
// /dashboard) is dashboard_page.cpp. analyze() is a pure function of the samples, so the hints are tested on
// scripted traffic; the sampler thread only feeds the window and logs a hint when it appears or goes away.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lora/cache_counters.h"
#include "server/http_message.h"

namespace lp::server {

class Backend;
class MetricsRegistry;
struct ServerState;

// One point of the history. Counters are cumulative since start except `adapter_requests`.
struct DashboardSample {
  double t = 0;          // seconds, monotonic (any origin)
  int64_t requests = 0;  // engine requests, base model and adapters alike
  // Requests per adapter since the previous sample, only the adapters that had any (so that a sample of a
  // server with thousands of adapters stays as small as its traffic).
  std::vector<std::pair<std::string, int64_t>> adapter_requests;
  int64_t slot_hits = 0, loads_from_host = 0, loads_from_disk = 0, load_failures = 0;
  int64_t evictions_slot = 0, evictions_host = 0;
  lora::Histogram load_ms_host{lora::load_ms_bounds()}, load_ms_disk{lora::load_ms_bounds()};
  // The engine now (gauges) and the configuration the hints compare against.
  int running = 0, waiting = 0;
  double kv_usage = 0;
  int max_loras = 0, max_cpu_loras = 0;
};

// The seed's rules of thumb, over the last 5 minutes.
inline constexpr double kHintWindowS = 300;
inline constexpr double kRecentWindowS = 10;      // the "now" rates
inline constexpr double kEvictionRateHint = 1.0;  // evictions per second of one tier
inline constexpr double kMergeShareHint = 0.9;    // one adapter's share of all requests
inline constexpr int64_t kMergeMinRequests = 20;  // fewer requests in the window say nothing about shares
// --max-loras for N adapters active in the window: N + 20%, rounded up (integer arithmetic: ceil(1.2 N)).
inline int suggested_max_loras(int active) {
  return active <= 0 ? 0 : (12 * active + 9) / 10;
}

struct DashboardHint {
  std::string kind;     // "evictions" | "max_loras" | "merge"
  std::string subject;  // evictions: the tier ("slot", "host"); merge: the adapter; max_loras: ""
  int value = 0;        // max_loras: the suggested --max-loras
  std::string message;  // what the operator reads (page, log)
  std::string key() const { return kind + "/" + subject; }
};

struct WindowRates {
  double recent = 0;  // per second over the last 10 s
  double window = 0;  // per second over the last 5 min
};

struct LoadLatency {  // loads of one source tier in the window, from the manager's histogram
  int64_t count = 0;
  double mean_ms = 0;
  double p50_ms = 0, p95_ms = 0;    // interpolated within the bucket, as Prometheus' histogram_quantile
  std::optional<double> max_le_ms;  // upper bound of the slowest load's bucket; nullopt: over the last bound
};

struct WindowStats {
  size_t samples = 0;
  double span_s = 0;  // seconds the 5-minute window covers so far (0 with fewer than 2 samples)
  WindowRates requests, evictions_slot, evictions_host;
  int64_t requests_in_window = 0;
  struct Adapter {
    std::string name;
    int64_t requests = 0;  // in the window
    WindowRates rate;
    double share = 0;  // of all requests in the window
  };
  std::vector<Adapter> adapters;  // those with requests in the window, most requested first
  int active_adapters = 0;
  int suggested_max_loras = 0;  // 0: no adapter traffic in the window
  // Where the window's adapter activations were served from: `slot` already there (a hit), `host` copied
  // from the host tier, `disk` read from disk first (each disk load is followed by its host → slot copy).
  int64_t activations = 0;
  double from_slot = 0, from_host = 0, from_disk = 0;
  LoadLatency load_host, load_disk;  // host → slot, disk → host
  int64_t load_failures = 0;
  std::vector<DashboardHint> hints;
};

// The rates and hints of a history (oldest first, t increasing). Pure: no clock, no I/O.
WindowStats analyze(const std::vector<DashboardSample>& samples);

// The bounded window of samples and the thread that fills it.
class Dashboard {
 public:
  static constexpr size_t kCapacity = 300;  // 5 minutes of 1 s samples

  ~Dashboard() { stop(); }

  // Appends a sample, dropping the oldest beyond kCapacity.
  void add(DashboardSample s);
  std::vector<DashboardSample> samples() const;  // oldest first

  // The window plus a sample of `b` taken now (not kept): what the page and /metrics show, current to the
  // moment.
  WindowStats current(const Backend& b) const;

  // Samples `b` every `period_s` on a thread of its own (the first sample at once), until stop(); logs each
  // hint when it appears, changes or goes away.
  void start(const Backend& b, double period_s);
  void stop();

 private:
  void tick(const Backend& b);

  // Guards window_ and last_requests_ (not the thread fields below); held while the sampler takes a sample,
  // so a copy of both is always consistent.
  mutable std::mutex mu_;
  std::deque<DashboardSample> window_;
  std::map<std::string, int64_t> last_requests_;  // cumulative per adapter at the newest kept sample

  std::map<std::string, DashboardHint>
      logged_;         // by key(): the hints last logged as present (sampler thread)
  std::mutex run_mu_;  // guards stopping_
  std::condition_variable run_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// GET /dashboard/state's body: live tiers and engine gauges, the window's rates and hints.
nlohmann::ordered_json dashboard_state(const Backend& b, const Dashboard& d);

// /metrics: loraplex_suggested_max_loras, loraplex_hint{kind,subject}, loraplex_lora_evictions_per_second.
void describe_dashboard_metrics(ServerState& st);

// Routes: GET /dashboard (dashboard_page.cpp), GET /dashboard/state.
void handle_dashboard_page(ServerState& st, const HttpRequest& req, HttpResponse& res);
void handle_dashboard_state(ServerState& st, const HttpRequest& req, HttpResponse& res);

}  // namespace lp::server
