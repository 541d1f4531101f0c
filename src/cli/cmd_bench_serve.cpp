// `loraplex bench serve --url http://127.0.0.1:8000 ...`: a load generator with the S-LoRA workload against a
// running server. Adapters (from /v1/models, or --adapter-names) are picked with power-law popularity
// p(i) ∝ (i+1)^-alpha; arrivals are Poisson (--cv 1) or Gamma with that coefficient of variation at --rate
// requests/s; prompt and output lengths are uniform in their ranges (prompts are random byte-token ids, so the
// input length is exact; outputs use ignore_eos). Every request streams; the report gives throughput, TTFT and
// ITL p50/p99, SLO attainment, failures, and the adapter cache's slot hit rate from /metrics deltas.
// Through a load balancer (scripts/cluster.sh): --metrics-url names each replica, whose deltas are summed, and
// the replies' x-loraplex-replica headers give where each adapter's requests ran (the affinity figures).
// Only loopback URLs are accepted.
//
// Registered as a sub-subcommand of `bench` with an immediate callback that ends parsing with CLI::Success, so
// `bench`'s own required --model does not apply to `bench serve`.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "cli/commands.h"
#include "core/check.h"
#include "core/clock.h"
#include "core/stats.h"
#include "server/http_client.h"

namespace lp::cli {

namespace {

using json = nlohmann::json;

struct BenchServeArgs {
  std::string url = "http://127.0.0.1:8000";
  std::string api_key;
  int adapters = 0;  // 0: every adapter the server lists
  std::string adapter_names;
  double base_fraction = 0;  // share of requests to the base model
  double alpha = 1.0;
  double rate = 0;  // requests/s; 0: all at once
  double cv = 1.0;
  std::string input_len = "8:32";
  std::string output_len = "8:32";
  int num_requests = 100;
  double duration = 0;  // s; 0: no bound
  int max_concurrency = 256;
  double slo_ttft = 1.0;
  double slo_itl = 0.2;
  uint64_t seed = 1;
  bool json = false;
  bool no_stream = false;
  std::vector<std::string> metrics_urls;  // empty: --url's /metrics
};

struct Range {
  int lo = 0, hi = 0;
};
Range parse_range(const std::string& s, const char* what) {
  std::smatch m;
  static const std::regex re(R"((\d+)(?::(\d+))?)");
  if (!std::regex_match(s, m, re)) fail("{}: expected N or MIN:MAX, got '{}'", what, s);
  Range r{std::stoi(m[1]), m[2].matched ? std::stoi(m[2]) : std::stoi(m[1])};
  if (r.lo < 1 || r.hi < r.lo) fail("{}: bad range '{}'", what, s);
  return r;
}

struct Result {
  bool ok = false;
  std::string error;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
  int out_tokens = 0;
  std::string model, replica;  // replica: the x-loraplex-replica header ("" without one)
};

// Sums every sample of `name` (any labels) whose label text contains `label_filter`.
double scrape_sum(const std::string& text, const std::string& name, const std::string& label_filter = "") {
  double sum = 0;
  size_t pos = 0;
  while ((pos = text.find(name, pos)) != std::string::npos) {
    size_t eol = text.find('\n', pos);
    std::string line = text.substr(pos, eol - pos);
    pos = eol == std::string::npos ? text.size() : eol;
    if (line.size() > name.size() && line[name.size()] != '{' && line[name.size()] != ' ') continue;
    if (!label_filter.empty() && line.find(label_filter) == std::string::npos) continue;
    sum += std::atof(line.substr(line.rfind(' ') + 1).c_str());
  }
  return sum;
}

int loopback_port(const std::string& url, const char* flag) {
  static const std::regex re(R"(http://(127\.0\.0\.1|localhost):(\d+)/?)");
  std::smatch m;
  if (!std::regex_match(url, m, re)) fail("{} must be http://127.0.0.1:PORT (loopback only), got '{}'", flag, url);
  return std::stoi(m[2]);
}

class Bench {
 public:
  explicit Bench(const BenchServeArgs& a) : a_(a), host_("127.0.0.1"), port_(loopback_port(a.url, "--url")) {
    for (const auto& u : a.metrics_urls) metrics_ports_.push_back(loopback_port(u, "--metrics-url"));
    if (metrics_ports_.empty()) metrics_ports_.push_back(port_);
  }

  server::HttpHeaders auth() const {
    if (a_.api_key.empty()) return {};
    return {{"Authorization", "Bearer " + a_.api_key}};
  }

  server::HttpClientResponse get(const std::string& path) const {
    server::HttpClient c(host_, port_, 60);
    return c.request("GET", path, {}, auth());
  }

  void run() {
    auto models = get("/v1/models");
    if (models.status != 200)
      fail("GET {}/v1/models failed: {}", a_.url,
           models.status ? fmt::format("HTTP {}", models.status) : models.error);
    json mj = json::parse(models.body);
    std::string base;
    std::vector<std::string> adapters;
    for (const auto& m : mj["data"]) {
      if (m["parent"].is_null()) base = m["id"];
      else adapters.push_back(m["id"]);
    }
    if (!a_.adapter_names.empty()) {
      adapters.clear();
      std::stringstream ss(a_.adapter_names);
      for (std::string s; std::getline(ss, s, ',');)
        if (!s.empty()) adapters.push_back(s);
    }
    if (a_.adapters > 0 && static_cast<int>(adapters.size()) > a_.adapters) adapters.resize(a_.adapters);
    Range in = parse_range(a_.input_len, "--input-len"), out = parse_range(a_.output_len, "--output-len");

    std::mt19937_64 rng(a_.seed);
    std::vector<double> weights;
    for (size_t i = 0; i < adapters.size(); ++i) weights.push_back(std::pow(static_cast<double>(i + 1), -a_.alpha));
    std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
    std::uniform_real_distribution<double> u01(0, 1);
    double shape = 1.0 / (a_.cv * a_.cv);
    std::gamma_distribution<double> gap(shape, a_.rate > 0 ? 1.0 / (a_.rate * shape) : 1.0);

    std::vector<std::string> before = metrics_texts();
    double t0 = now_seconds(), next = t0;
    std::vector<Result> results(a_.num_requests);
    // max_concurrency client threads take requests as this thread releases them at their arrival times.
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::pair<int, std::string>> queue;  // (request index, body)
    std::vector<std::string> req_models(a_.num_requests);
    bool closed = false;
    int active = 0, sent = 0;  // active: released and not finished
    std::vector<std::thread> workers;
    for (int w = 0; w < a_.max_concurrency; ++w)
      workers.emplace_back([&] {
        server::HttpClient http(host_, port_, 600);  // one keep-alive connection per client thread
        for (;;) {
          std::pair<int, std::string> job;
          {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return closed || !queue.empty(); });
            if (queue.empty()) return;
            job = std::move(queue.front());
            queue.pop_front();
          }
          results[job.first] = one(http, job.second);
          results[job.first].model = req_models[job.first];
          {
            std::lock_guard<std::mutex> lock(mu);
            --active;
          }
          cv.notify_all();
        }
      });
    for (int i = 0; i < a_.num_requests; ++i) {
      if (a_.duration > 0 && now_seconds() - t0 > a_.duration) break;
      std::string model = adapters.empty() || u01(rng) < a_.base_fraction ? base : adapters[pick(rng)];
      int n_in = std::uniform_int_distribution<int>(in.lo, in.hi)(rng);
      int n_out = std::uniform_int_distribution<int>(out.lo, out.hi)(rng);
      std::vector<int> prompt(n_in);
      for (int& t : prompt) t = std::uniform_int_distribution<int>(10, 250)(rng);
      if (a_.rate > 0) {
        next += gap(rng);
        double wait = next - now_seconds();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      }
      json body = {{"model", model}, {"prompt", prompt}, {"max_tokens", n_out}, {"temperature", 0},
                   {"ignore_eos", true}};
      if (a_.no_stream) body["stream"] = false;
      else body.update({{"stream", true}, {"stream_options", {{"include_usage", true}}}});
      req_models[i] = model;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return active < a_.max_concurrency; });
        ++active;
        queue.emplace_back(i, body.dump());
      }
      cv.notify_all();
      ++sent;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      closed = true;
    }
    cv.notify_all();
    for (auto& w : workers) w.join();
    double wall = now_seconds() - t0;
    results.resize(sent);
    report(results, wall, before, metrics_texts(), adapters.size());
  }

 private:
  // Each metrics server's /metrics ("" where it did not answer: a replica that died is left out of the sums).
  std::vector<std::string> metrics_texts() const {
    std::vector<std::string> out;
    for (int port : metrics_ports_) {
      server::HttpClient c(host_, port, 60);
      auto r = c.request("GET", "/metrics", {}, auth());
      out.push_back(r.status == 200 ? r.body : std::string());
    }
    return out;
  }

  Result one(server::HttpClient& http, const std::string& body) const {
    Result r;
    double t0 = now_seconds(), last = 0;
    bool done = false;
    std::string buf;
    auto on_body = [&](std::string_view piece) {
      buf.append(piece);
      size_t end;
      while ((end = buf.find("\n\n")) != std::string::npos) {
        std::string ev = buf.substr(0, end);
        buf.erase(0, end + 2);
        if (ev == "data: [DONE]") done = true;
        if (ev.rfind("data: ", 0) != 0 || done) continue;
        json j = json::parse(ev.substr(6), nullptr, false);
        if (j.is_discarded() || j.contains("error")) {
          r.error = j.is_discarded() ? "bad chunk" : j["error"].value("message", "error");
          continue;
        }
        if (j.contains("usage") && j["usage"].is_object()) r.out_tokens = j["usage"].value("completion_tokens", 0);
        // A choice chunk is one engine update (usually one token; its text may be empty while a UTF-8
        // character is incomplete).
        if (j["choices"].empty()) continue;
        double now = now_seconds();
        if (last == 0) r.ttft = now - t0;
        else r.itl.push_back(now - last);
        last = now;
      }
      return true;
    };
    server::HttpHeaders headers = auth();
    headers.emplace_back("Content-Type", "application/json");
    auto res = a_.no_stream ? http.request("POST", "/v1/completions", body, headers)
                            : http.request("POST", "/v1/completions", body, headers, on_body);
    r.e2e = now_seconds() - t0;
    r.replica = res.header("x-loraplex-replica");
    if (!res.error.empty()) r.error = res.error;
    else if (res.status != 200) r.error = fmt::format("HTTP {}", res.status);
    if (a_.no_stream) {  // the whole answer at once: TTFT is its latency
      if (r.error.empty()) {
        json j = json::parse(res.body, nullptr, false);
        if (j.is_discarded() || !j.contains("usage")) r.error = "bad body";
        else r.out_tokens = j["usage"].value("completion_tokens", 0);
      }
      r.ttft = r.e2e;
      r.ok = r.error.empty();
      return r;
    }
    r.ok = r.error.empty() && done && last > 0;
    if (!r.ok && r.error.empty()) r.error = done ? "no tokens" : "stream ended before [DONE]";
    return r;
  }

  void report(const std::vector<Result>& rs, double wall, const std::vector<std::string>& m0,
              const std::vector<std::string>& m1, size_t n_adapters) const {
    std::vector<double> ttft, itl, e2e;
    int ok = 0, slo_ok = 0;
    int64_t tokens = 0;
    std::map<std::string, int> errors;
    for (const auto& r : rs) {
      if (!r.ok) {
        ++errors[r.error];
        continue;
      }
      ++ok;
      ttft.push_back(r.ttft);
      e2e.push_back(r.e2e);
      itl.insert(itl.end(), r.itl.begin(), r.itl.end());
      tokens += r.out_tokens;
      double itl_p = r.itl.empty() ? 0 : percentile(r.itl, 50);
      if (r.ttft <= a_.slo_ttft && itl_p <= a_.slo_itl) ++slo_ok;
    }
    auto delta = [&](const std::string& name, const std::string& f = "") {
      double d = 0;
      for (size_t k = 0; k < m0.size(); ++k)
        if (!m0[k].empty() && !m1[k].empty()) d += scrape_sum(m1[k], name, f) - scrape_sum(m0[k], name, f);
      return d;
    };
    int metrics_missing = 0;
    for (size_t k = 0; k < m0.size(); ++k) metrics_missing += m0[k].empty() || m1[k].empty();
    // Where each model's successful requests ran, by the replicas' headers; affinity = the share of requests
    // that ran on their model's most used replica.
    std::map<std::string, std::map<std::string, int>> placement;
    std::map<std::string, int> by_replica;
    for (const auto& r : rs)
      if (r.ok && !r.replica.empty()) {
        ++placement[r.model][r.replica];
        ++by_replica[r.replica];
      }
    int on_top = 0, placed = 0;
    double worst_top_share = placement.empty() ? 0 : 1;
    for (const auto& [model, reps] : placement) {
      int top = 0, n = 0;
      for (const auto& [rep, c] : reps) top = std::max(top, c), n += c;
      on_top += top;
      placed += n;
      worst_top_share = std::min(worst_top_share, static_cast<double>(top) / n);
    }
    double reqs = delta("loraplex_lora_requests_total");
    double host_loads = delta("loraplex_lora_adapter_load_total", "source=\"host\"");
    double disk_loads = delta("loraplex_lora_adapter_load_total", "source=\"disk\"");
    double hit = reqs > 0 ? std::max(0.0, 1.0 - host_loads / reqs) : 0;
    json j = {{"requests", rs.size()},
              {"succeeded", ok},
              {"failed", static_cast<int>(rs.size()) - ok},
              {"errors", errors},
              {"adapters", n_adapters},
              {"duration_s", wall},
              {"request_throughput", ok / wall},
              {"output_token_throughput", tokens / wall},
              {"ttft_p50_s", percentile(ttft, 50)},
              {"ttft_p99_s", percentile(ttft, 99)},
              {"itl_p50_s", percentile(itl, 50)},
              {"itl_p99_s", percentile(itl, 99)},
              {"e2e_p50_s", percentile(e2e, 50)},
              {"slo_attainment", rs.empty() ? 0.0 : static_cast<double>(slo_ok) / rs.size()},
              {"adapter_requests", reqs},
              {"adapter_loads_disk", disk_loads},
              {"adapter_loads_host", host_loads},
              {"adapter_slot_hit_rate", hit},
              {"metrics_servers", m0.size()},
              {"metrics_servers_missing", metrics_missing},
              {"by_replica", by_replica},
              {"placement", placement},
              {"affinity", placed ? static_cast<double>(on_top) / placed : 0.0},
              {"worst_model_top_share", worst_top_share}};
    if (a_.json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("requests %zu: %d ok, %d failed in %.2f s (%d adapters, alpha %.2f, rate %s, cv %.2f)\n", rs.size(),
                ok, static_cast<int>(rs.size()) - ok, wall, static_cast<int>(n_adapters), a_.alpha,
                a_.rate > 0 ? fmt::format("{:.1f}/s", a_.rate).c_str() : "burst", a_.cv);
    for (const auto& [e, n] : errors) std::printf("  error x%d: %s\n", n, e.c_str());
    std::printf("throughput: %.2f req/s, %.1f output tokens/s\n", ok / wall, tokens / wall);
    std::printf("TTFT p50 %.1f ms, p99 %.1f ms; ITL p50 %.1f ms, p99 %.1f ms; E2E p50 %.1f ms\n",
                1e3 * percentile(ttft, 50), 1e3 * percentile(ttft, 99), 1e3 * percentile(itl, 50),
                1e3 * percentile(itl, 99), 1e3 * percentile(e2e, 50));
    std::printf("SLO (TTFT <= %.0f ms, median ITL <= %.0f ms): %.1f%% of requests\n", 1e3 * a_.slo_ttft,
                1e3 * a_.slo_itl, 100.0 * j["slo_attainment"].get<double>());
    std::printf("adapters: %.0f requests, %.0f disk->host loads, %.0f host->slot loads, slot hit rate %.1f%%%s\n",
                reqs, disk_loads, host_loads, 100 * hit,
                metrics_missing ? fmt::format(" ({} of {} metrics servers did not answer)", metrics_missing,
                                              m0.size()).c_str() : "");
    if (!by_replica.empty()) {
      std::string reps;
      for (const auto& [rep, c] : by_replica) reps += fmt::format(" {}={}", rep, c);
      std::printf("replicas:%s; affinity %.1f%% (requests on their model's most used replica), worst model %.1f%%\n",
                  reps.c_str(), 100.0 * j["affinity"].get<double>(), 100 * worst_top_share);
    }
  }

  BenchServeArgs a_;
  std::string host_;
  int port_ = 0;
  std::vector<int> metrics_ports_;  // where /metrics is scraped
};

}  // namespace

void add_bench_serve_command(CLI::App& app) {
  CLI::App* bench = app.get_subcommand("bench");
  auto a = std::make_shared<BenchServeArgs>();
  CLI::App* c = bench->add_subcommand("serve", "Load-test a running server with an S-LoRA multi-adapter workload");
  c->add_option("--url", a->url, "Server URL (loopback only)");
  c->add_option("--api-key", a->api_key, "Bearer token");
  c->add_option("--adapters", a->adapters, "Use the first N adapters the server lists (0 = all)");
  c->add_option("--adapter-names", a->adapter_names, "Comma-separated adapter names instead");
  c->add_option("--base-fraction", a->base_fraction, "Share of requests to the base model");
  c->add_option("--alpha", a->alpha, "Power-law popularity exponent");
  c->add_option("--rate", a->rate, "Arrival rate, requests/s (0 = all at once)");
  c->add_option("--cv", a->cv, "Coefficient of variation of inter-arrival gaps (1 = Poisson)");
  c->add_option("--input-len", a->input_len, "Prompt tokens: N or MIN:MAX");
  c->add_option("--output-len", a->output_len, "Output tokens: N or MIN:MAX");
  c->add_option("--num-requests", a->num_requests, "Requests to send");
  c->add_option("--duration", a->duration, "Stop sending after this many seconds (0 = no limit)");
  c->add_option("--max-concurrency", a->max_concurrency, "Requests in flight at most");
  c->add_option("--slo-ttft", a->slo_ttft, "TTFT SLO, seconds");
  c->add_option("--slo-itl", a->slo_itl, "Median inter-token latency SLO, seconds");
  c->add_option("--seed", a->seed, "Workload seed");
  c->add_flag("--json", a->json, "Print one JSON object");
  c->add_flag("--no-stream", a->no_stream, "Whole answers instead of streams (TTFT is then the request's latency)");
  c->add_option("--metrics-url", a->metrics_urls,
                "Scrape these servers' /metrics (e.g. each replica behind a proxy) instead of --url's; repeatable");
  c->immediate_callback();
  c->callback([a] {
    if (a->num_requests < 1 || a->max_concurrency < 1 || a->cv <= 0 || a->rate < 0)
      fail("--num-requests, --max-concurrency and --cv must be positive, --rate non-negative");
    Bench(*a).run();
    throw CLI::Success();  // done: skip `bench`'s own requirements and callback
  });
}

}  // namespace lp::cli
