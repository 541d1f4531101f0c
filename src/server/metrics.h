// A small metrics registry rendered in the Prometheus text exposition format 0.0.4: counters, gauges and
// histograms, each a family of series keyed by label values. HTTP threads record into it (one mutex per
// registry; recording is a map lookup and an add), /metrics renders it. Values that live elsewhere (engine
// stats, adapter-manager counters) are copied in at scrape time by collectors, with set().
//
// Text format rules honoured: `# HELP` / `# TYPE` once per family before its samples; label values escape
// backslash, double quote and newline; HELP escapes backslash and newline; histograms expose cumulative
// `_bucket{le=...}` series ending at le="+Inf", then `_sum` and `_count`; special values are +Inf, -Inf, NaN.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace lp::server {

using Labels = std::vector<std::pair<std::string, std::string>>;  // (name, value), rendered in this order

enum class MetricType { kCounter, kGauge, kHistogram };

class MetricsRegistry {
 public:
  // Declares a family (before recording into it). `buckets` (upper bounds, ascending) for histograms only.
  void describe(const std::string& name, MetricType type, const std::string& help,
                std::vector<double> buckets = {});

  void add(const std::string& name, const Labels& labels, double v = 1);  // counter (or gauge) += v
  void set(const std::string& name, const Labels& labels, double v);      // gauge, or a counter mirrored from elsewhere
  void observe(const std::string& name, const Labels& labels, double v);  // histogram
  // A histogram mirrored from elsewhere: `cumulative[i]` observations <= bounds[i] (the family's bounds),
  // `count` in all (the +Inf bucket), `sum` of them.
  void set_histogram(const std::string& name, const Labels& labels, const std::vector<int64_t>& cumulative,
                     int64_t count, double sum);
  // Drops every series of a family (a gauge whose label sets change between scrapes, e.g. per-tier counts).
  void clear(const std::string& name);

  // Runs at the start of every render(), outside the registry lock (it may call set/add/clear).
  void add_collector(std::function<void(MetricsRegistry&)> collect);

  std::string render();

  // For tests and the load generator: the value of a counter/gauge series, or a histogram's count; 0 if absent.
  double value(const std::string& name, const Labels& labels = {});

 private:
  struct Series {
    double value = 0;             // counter / gauge
    std::vector<double> buckets;  // histogram: per-bucket (non-cumulative) counts
    double sum = 0;
    double count = 0;
  };
  struct Family {
    MetricType type = MetricType::kGauge;
    std::string help;
    std::vector<double> bounds;
    std::map<Labels, Series> series;
  };
  Family& family(const std::string& name);  // LP_CHECKs it was described

  std::mutex render_mu_;  // serializes render(): concurrent scrapes must not interleave collectors' clear/set
  std::mutex mu_;  // guards families_ and order_ (not collectors_, which are set up before serving)
  std::map<std::string, Family> families_;
  std::vector<std::string> order_;  // declaration order, the render order
  std::vector<std::function<void(MetricsRegistry&)>> collectors_;
};

// Prometheus text helpers (exposed for tests).
std::string prom_escape_label(const std::string& v);
std::string prom_escape_help(const std::string& v);
std::string prom_value(double v);

// Bucket bounds (seconds) of the latency histograms, the ones vLLM uses.
std::vector<double> ttft_buckets();
std::vector<double> itl_buckets();
std::vector<double> e2e_buckets();

}  // namespace lp::server
