#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace lp::server {

std::string prom_escape_label(const std::string& v) {
  std::string o;
  o.reserve(v.size());
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string prom_escape_help(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string prom_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

namespace {

std::string render_labels(const Labels& labels, const char* extra_name = nullptr, const std::string& extra = {}) {
  if (labels.empty() && !extra_name) return {};
  std::string o = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) o += ",";
    o += k + "=\"" + prom_escape_label(v) + "\"";
    first = false;
  }
  if (extra_name) {
    if (!first) o += ",";
    o += std::string(extra_name) + "=\"" + extra + "\"";
  }
  return o + "}";
}

const char* type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

void MetricsRegistry::describe(const std::string& name, MetricType type, const std::string& help,
                               std::vector<double> buckets) {
  std::lock_guard<std::mutex> lock(mu_);
  LP_CHECK(!families_.count(name), "metric {} described twice", name);
  LP_CHECK(type == MetricType::kHistogram || buckets.empty(), "buckets on non-histogram {}", name);
  LP_CHECK(std::is_sorted(buckets.begin(), buckets.end()), "unsorted buckets for {}", name);
  Family& f = families_[name];
  f.type = type;
  f.help = help;
  f.bounds = std::move(buckets);
  order_.push_back(name);
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name) {
  auto it = families_.find(name);
  LP_CHECK(it != families_.end(), "metric {} used before describe()", name);
  return it->second;
}

void MetricsRegistry::add(const std::string& name, const Labels& labels, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  family(name).series[labels].value += v;
}

void MetricsRegistry::set(const std::string& name, const Labels& labels, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  family(name).series[labels].value = v;
}

void MetricsRegistry::observe(const std::string& name, const Labels& labels, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name);
  LP_CHECK(f.type == MetricType::kHistogram, "observe() on non-histogram {}", name);
  Series& s = f.series[labels];
  if (s.buckets.empty()) s.buckets.assign(f.bounds.size() + 1, 0);
  size_t b = std::lower_bound(f.bounds.begin(), f.bounds.end(), v) - f.bounds.begin();  // first bound >= v
  s.buckets[b] += 1;
  s.sum += v;
  s.count += 1;
}

void MetricsRegistry::set_histogram(const std::string& name, const Labels& labels,
                                    const std::vector<int64_t>& cumulative, int64_t count, double sum) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = family(name);
  LP_CHECK(f.type == MetricType::kHistogram && cumulative.size() == f.bounds.size(),
           "set_histogram({}): {} buckets for {} bounds", name, cumulative.size(), f.bounds.size());
  Series& s = f.series[labels];
  s.buckets.assign(f.bounds.size() + 1, 0);
  int64_t prev = 0;
  for (size_t i = 0; i < cumulative.size(); ++i) {
    s.buckets[i] = static_cast<double>(cumulative[i] - prev);
    prev = cumulative[i];
  }
  s.buckets.back() = static_cast<double>(count - prev);
  s.count = static_cast<double>(count);
  s.sum = sum;
}

void MetricsRegistry::clear(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  family(name).series.clear();
}

void MetricsRegistry::add_collector(std::function<void(MetricsRegistry&)> collect) {
  collectors_.push_back(std::move(collect));
}

double MetricsRegistry::value(const std::string& name, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  auto s = it->second.series.find(labels);
  if (s == it->second.series.end()) return 0;
  return it->second.type == MetricType::kHistogram ? s->second.count : s->second.value;
}

std::string MetricsRegistry::render() {
  std::lock_guard<std::mutex> render_lock(render_mu_);
  for (auto& c : collectors_) c(*this);
  std::lock_guard<std::mutex> lock(mu_);
  std::string o;
  o.reserve(8192);
  for (const std::string& name : order_) {
    const Family& f = families_.at(name);
    o += "# HELP " + name + " " + prom_escape_help(f.help) + "\n";
    o += "# TYPE " + name + " " + type_name(f.type) + "\n";
    for (const auto& [labels, s] : f.series) {
      if (f.type != MetricType::kHistogram) {
        o += name + render_labels(labels) + " " + prom_value(s.value) + "\n";
        continue;
      }
      double cum = 0;
      for (size_t i = 0; i <= f.bounds.size(); ++i) {
        cum += s.buckets.empty() ? 0 : s.buckets[i];
        std::string le = i < f.bounds.size() ? prom_value(f.bounds[i]) : "+Inf";
        o += name + "_bucket" + render_labels(labels, "le", le) + " " + prom_value(cum) + "\n";
      }
      o += name + "_sum" + render_labels(labels) + " " + prom_value(s.sum) + "\n";
      o += name + "_count" + render_labels(labels) + " " + prom_value(s.count) + "\n";
    }
  }
  return o;
}

std::vector<double> ttft_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
          2.5,   5.0,   7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}
std::vector<double> itl_buckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
}
std::vector<double> e2e_buckets() {
  return {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
          960.0, 1920.0, 7680.0};
}

}  // namespace lp::server
