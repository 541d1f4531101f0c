// The operator dashboard (server/dashboard.h):
//   - analyze() on scripted traffic, one sample per second: the seed's hints (an eviction storm per tier,
//     active adapters + 20% as --max-loras, one adapter over 90% of the traffic, nothing when quiet), the
//     rates over 10 s and 5 min, where activations were served from, load latencies from histogram deltas;
//   - the window holds the last 300 samples;
//   - GET /dashboard/state and /metrics through the HTTP layer on the fake backend, with the sampler thread
//     running; GET /dashboard is one self-contained page, open like /metrics when an API key is set.
#include "server/dashboard.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "server/http_client.h"
#include "util/server_fixture.h"

namespace lp::server {
namespace {

using json = nlohmann::json;

// Scripted traffic: step() appends the sample of one more second.
struct Traffic {
  std::vector<DashboardSample> samples;
  DashboardSample cur;  // the cumulative counters so far

  explicit Traffic(int max_loras = 4, int max_cpu_loras = 8) {
    cur.max_loras = max_loras;
    cur.max_cpu_loras = max_cpu_loras;
  }
  // `adapters`: requests per adapter in this second; `base`: requests to the base model.
  Traffic& step(const std::map<std::string, int64_t>& adapters = {}, int64_t base = 0, int64_t evict_slot = 0,
                int64_t evict_host = 0) {
    cur.t = static_cast<double>(samples.size());
    cur.adapter_requests.clear();
    for (const auto& [name, n] : adapters) {
      cur.adapter_requests.emplace_back(name, n);
      cur.requests += n;
    }
    cur.requests += base;
    cur.evictions_slot += evict_slot;
    cur.evictions_host += evict_host;
    samples.push_back(cur);
    return *this;
  }
  Traffic& steps(int n, const std::map<std::string, int64_t>& adapters = {}, int64_t base = 0,
                 int64_t evict_slot = 0, int64_t evict_host = 0) {
    for (int i = 0; i < n; ++i) step(adapters, base, evict_slot, evict_host);
    return *this;
  }
  WindowStats stats() const { return analyze(samples); }
};

std::map<std::string, const DashboardHint*> by_key(const WindowStats& w) {
  std::map<std::string, const DashboardHint*> m;
  for (const auto& h : w.hints) m[h.kind + "/" + h.subject] = &h;
  return m;
}

std::map<std::string, int64_t> adapters(int n, int64_t each = 1) {
  std::map<std::string, int64_t> m;
  for (int i = 0; i < n; ++i) m["a" + std::to_string(i)] = each;
  return m;
}

TEST(DashboardHints, QuietTrafficGivesNoHint) {
  Traffic t;
  t.steps(300);
  WindowStats w = t.stats();
  EXPECT_TRUE(w.hints.empty());
  EXPECT_EQ(w.suggested_max_loras, 0);
  EXPECT_EQ(w.active_adapters, 0);
  EXPECT_EQ(w.requests.window, 0);
  EXPECT_EQ(w.activations, 0);
  EXPECT_DOUBLE_EQ(w.span_s, 299);
  EXPECT_TRUE(analyze({}).hints.empty());
  EXPECT_TRUE(Traffic().step().stats().hints.empty());  // one sample: no window yet
}

TEST(DashboardHints, SlotEvictionStormSaysRaiseMaxLoras) {
  Traffic t(/*max_loras=*/3, /*max_cpu_loras=*/8);
  t.steps(300, adapters(2), 0, /*evict_slot=*/2);  // 2 adapters (+ 20%) fit 3 slots: only the evictions speak
  WindowStats w = t.stats();
  EXPECT_DOUBLE_EQ(w.evictions_slot.window, 2.0);  // 598 evictions after the base sample, over 299 s
  EXPECT_DOUBLE_EQ(w.evictions_slot.recent, 2.0);
  EXPECT_EQ(w.evictions_host.window, 0);
  auto h = by_key(w);
  ASSERT_EQ(h.size(), 1u) << w.hints.size();
  ASSERT_TRUE(h.count("evictions/slot"));
  EXPECT_NE(h["evictions/slot"]->message.find("--max-loras"), std::string::npos)
      << h["evictions/slot"]->message;
  EXPECT_NE(h["evictions/slot"]->message.find("slot tier"), std::string::npos);
}

TEST(DashboardHints, HostEvictionStormSaysRaiseMaxCpuLoras) {
  Traffic t(3, 4);
  t.steps(100, adapters(2), 0, 0, /*evict_host=*/1).steps(100, adapters(2), 0, 0, 2);  // (99 + 200) / 199 s
  WindowStats w = t.stats();
  EXPECT_DOUBLE_EQ(w.evictions_host.window, 299.0 / 199.0);
  auto h = by_key(w);
  ASSERT_EQ(h.size(), 1u);
  ASSERT_TRUE(h.count("evictions/host"));
  EXPECT_NE(h["evictions/host"]->message.find("--max-cpu-loras (now 4)"), std::string::npos)
      << h["evictions/host"]->message;
}

TEST(DashboardHints, OneEvictionPerSecondIsNotAStorm) {
  Traffic t(3, 4);
  t.steps(300, adapters(2), 0, 1, 1);
  WindowStats w = t.stats();
  EXPECT_DOUBLE_EQ(w.evictions_slot.window, 1.0);
  EXPECT_TRUE(w.hints.empty());
}

TEST(DashboardHints, SuggestedMaxLorasIsActiveAdaptersPlusTwentyPercentRoundedUp) {
  // ceil(1.2 N), worked out by hand.
  const std::map<int, int> expected = {{1, 2}, {2, 3},   {3, 4},   {4, 5},  {5, 6},
                                       {7, 9}, {10, 12}, {16, 20}, {25, 30}};
  for (const auto& [n, want] : expected) {
    EXPECT_EQ(suggested_max_loras(n), want) << n;
    Traffic short_of(/*max_loras=*/want - 1);
    // Base-model traffic besides, so that no adapter's share calls for a merge.
    WindowStats w = short_of.steps(60, adapters(n), /*base=*/10 * n).stats();
    EXPECT_EQ(w.active_adapters, n);
    EXPECT_EQ(w.suggested_max_loras, want) << n;
    auto h = by_key(w);
    ASSERT_TRUE(h.count("max_loras/")) << n;
    EXPECT_EQ(h["max_loras/"]->value, want);
    EXPECT_NE(h["max_loras/"]->message.find("--max-loras " + std::to_string(want)), std::string::npos)
        << h["max_loras/"]->message;
    Traffic enough(/*max_loras=*/want);  // already there: the suggestion is shown, but no hint
    WindowStats ok = enough.steps(60, adapters(n), 10 * n).stats();
    EXPECT_EQ(ok.suggested_max_loras, want);
    EXPECT_TRUE(ok.hints.empty()) << n << ": " << ok.hints.size();
  }
}

TEST(DashboardHints, OnlyAdaptersActiveInTheLastFiveMinutesCount) {
  // 400 s: "old0..old5" only in the first 50 s, a0..a2 throughout; the window (by time, and the bounded ring
  // alike) keeps the last 300 s.
  Traffic t(1);
  std::map<std::string, int64_t> both = adapters(3);
  for (int i = 0; i < 6; ++i) both["old" + std::to_string(i)] = 1;
  t.steps(50, both).steps(350, adapters(3));
  WindowStats w = t.stats();
  EXPECT_EQ(w.active_adapters, 3);
  EXPECT_EQ(w.suggested_max_loras, 4);
  EXPECT_DOUBLE_EQ(w.span_s, 300);
  Dashboard d;
  for (const auto& s : t.samples) d.add(s);
  WindowStats ring = analyze(d.samples());
  EXPECT_EQ(ring.active_adapters, 3);
  EXPECT_EQ(ring.suggested_max_loras, 4);
}

TEST(DashboardHints, AnAdapterOverNinetyPercentOfTheTrafficSuggestsMerge) {
  WindowStats w = Traffic().steps(60, {{"hot", 19}, {"cold", 1}}).stats();
  auto h = by_key(w);
  ASSERT_TRUE(h.count("merge/hot")) << w.hints.size();
  EXPECT_NE(h["merge/hot"]->message.find("loraplex merge"), std::string::npos);
  EXPECT_NE(h["merge/hot"]->message.find("95%"), std::string::npos) << h["merge/hot"]->message;
  EXPECT_FALSE(h.count("merge/cold"));
  ASSERT_EQ(w.adapters.size(), 2u);
  EXPECT_EQ(w.adapters[0].name, "hot");
  EXPECT_DOUBLE_EQ(w.adapters[0].share, 0.95);

  EXPECT_FALSE(by_key(Traffic().steps(60, {{"hot", 17}, {"cold", 3}}).stats()).count("merge/hot"));  // 85%
  // The base model's requests count too: merging would change them.
  EXPECT_FALSE(by_key(Traffic().steps(60, {{"hot", 19}}, /*base=*/20).stats()).count("merge/hot"));
  EXPECT_TRUE(by_key(Traffic().steps(60, {{"hot", 19}}, /*base=*/1).stats()).count("merge/hot"));
  // Ten requests in the window say nothing yet.
  EXPECT_TRUE(Traffic().steps(11, {{"hot", 1}}).stats().hints.empty());
  EXPECT_TRUE(by_key(Traffic().steps(21, {{"hot", 1}}).stats()).count("merge/hot"));
}

TEST(DashboardRates, TenSecondAndFiveMinuteRatesPerAdapter) {
  Traffic t;
  t.steps(290, {{"a", 3}}).steps(10, {{"a", 3}, {"b", 1}}, /*base=*/2);
  WindowStats w = t.stats();
  ASSERT_EQ(w.adapters.size(), 2u);
  EXPECT_EQ(w.adapters[0].name, "a");
  EXPECT_EQ(w.adapters[0].requests, 3 * 299);
  EXPECT_DOUBLE_EQ(w.adapters[0].rate.window, 3.0);
  EXPECT_DOUBLE_EQ(w.adapters[0].rate.recent, 3.0);
  EXPECT_EQ(w.adapters[1].name, "b");
  EXPECT_EQ(w.adapters[1].requests, 10);
  EXPECT_DOUBLE_EQ(w.adapters[1].rate.recent, 1.0);
  EXPECT_DOUBLE_EQ(w.adapters[1].rate.window, 10.0 / 299);
  EXPECT_EQ(w.requests_in_window, 3 * 299 + 10 + 20);
  EXPECT_DOUBLE_EQ(w.requests.recent, 6.0);
  EXPECT_DOUBLE_EQ(w.requests.window, (3.0 * 299 + 30) / 299);
  EXPECT_DOUBLE_EQ(w.adapters[1].share, 10.0 / (3 * 299 + 30));
}

TEST(DashboardRates, TiersAndLoadLatenciesComeFromTheWindowOnly) {
  Traffic t;
  t.cur.load_ms_disk.observe(2000);  // before the window's base sample: not in the window
  t.cur.loads_from_disk = 1;
  t.cur.loads_from_host = 1;
  t.step();
  for (int i = 0; i < 4; ++i) {  // 2 disk loads at 40 ms, 6 host copies, 10 slot hits over 4 s
    t.cur.slot_hits += i < 2 ? 3 : 2;
    t.cur.loads_from_host += i < 2 ? 2 : 1;
    if (i < 2) {
      t.cur.loads_from_disk += 1;
      t.cur.load_ms_disk.observe(40);
    }
    t.cur.load_ms_host.observe(0.2);
    t.step();
  }
  WindowStats w = t.stats();
  EXPECT_EQ(w.activations, 16);
  EXPECT_DOUBLE_EQ(w.from_slot, 10.0 / 16);
  EXPECT_DOUBLE_EQ(w.from_host, 4.0 / 16);
  EXPECT_DOUBLE_EQ(w.from_disk, 2.0 / 16);
  EXPECT_EQ(w.load_disk.count, 2);
  EXPECT_DOUBLE_EQ(w.load_disk.mean_ms, 40);
  EXPECT_DOUBLE_EQ(w.load_disk.p50_ms, 37.5);  // both in (25, 50]: rank 1 of 2, interpolated
  ASSERT_TRUE(w.load_disk.max_le_ms.has_value());
  EXPECT_DOUBLE_EQ(*w.load_disk.max_le_ms, 50);
  EXPECT_EQ(w.load_host.count, 4);
  EXPECT_NEAR(w.load_host.mean_ms, 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(*w.load_host.max_le_ms, 0.5);
  t.cur.load_ms_disk.observe(9000);  // past the last bound
  t.step();
  EXPECT_FALSE(t.stats().load_disk.max_le_ms.has_value());
}

TEST(DashboardWindow, HoldsTheLastThreeHundredSamples) {
  Dashboard d;
  Traffic t;
  t.steps(1000, {{"a", 1}});
  for (const auto& s : t.samples) d.add(s);
  auto kept = d.samples();
  ASSERT_EQ(kept.size(), Dashboard::kCapacity);
  EXPECT_EQ(Dashboard::kCapacity, 300u);
  EXPECT_EQ(kept.front().t, 700);
  EXPECT_EQ(kept.back().t, 999);
  EXPECT_DOUBLE_EQ(analyze(kept).adapters.at(0).rate.window, 1.0);
}

// --- Through the HTTP layer, with the sampler thread on the fake backend. ---

struct Fixture : test::FakeServer {
  explicit Fixture(ServerOptions o = with_sampler()) : FakeServer("dashboard", std::move(o)) {}
  static ServerOptions with_sampler() {
    ServerOptions o;
    o.dashboard_sample_s = 0.02;
    return o;
  }
  HttpClientResponse get(const std::string& path, const HttpHeaders& h = {}) {
    HttpClient c("127.0.0.1", port, 10);
    return c.request("GET", path, {}, h);
  }
  json state() {
    auto r = get("/dashboard/state");
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body);
  }
};

TEST(DashboardHttp, StateShowsTiersTrafficAndHints) {
  Fixture f;
  f.backend.script([](sched::EngineStats& e, lora::CacheCounters& c, CacheSnapshot& cache) {
    e.waiting = 3;
    c.requests = {{"medical-qa", 4}};  // before the window: not in its rates
    cache.slots = {{"medical-qa", true, 1}, {}};
    cache.host = {"code-review", "medical-qa"};  // least recently used first
    cache.max_cpu_loras = 4;
  });
  ASSERT_TRUE(test::wait_for([&] { return f.state()["samples"].get<int>() >= 3; }, 10));
  // The sampler's first sample may predate the script above: count from what the window held before.
  json s0 = f.state();
  const int64_t before = s0["slots"][0]["requests_5m"], before_all = s0["requests"]["in_window"];
  f.backend.script([](sched::EngineStats&, lora::CacheCounters& c, CacheSnapshot&) {
    c.requests = {{"code-review", 1}, {"medical-qa", 4 + 30}};
    c.evictions_slot = 100000;  // a storm, whatever the window's span
  });
  json s = f.state();
  EXPECT_EQ(s["model"], "base");
  EXPECT_EQ(s["max_loras"], 2);
  EXPECT_EQ(s["max_cpu_loras"], 4);
  EXPECT_EQ(s["engine"]["waiting"], 3);
  ASSERT_EQ(s["slots"].size(), 2u);
  EXPECT_EQ(s["slots"][0]["index"], 0);
  EXPECT_EQ(s["slots"][0]["adapter"], "medical-qa");
  EXPECT_EQ(s["slots"][0]["pinned"], true);
  EXPECT_EQ(s["slots"][0]["holders"], 1);
  EXPECT_EQ(s["slots"][0]["requests"], 34);
  EXPECT_EQ(s["slots"][0]["requests_5m"], before + 30);
  EXPECT_GT(s["slots"][0]["rate_5m"].get<double>(), 0);
  EXPECT_TRUE(s["slots"][1]["adapter"].is_null());
  ASSERT_EQ(s["host"].size(), 2u);
  EXPECT_EQ(s["host"][0]["adapter"], "medical-qa");  // most recently used first
  EXPECT_EQ(s["host"][0]["in_slot"], true);
  EXPECT_EQ(s["host"][1]["adapter"], "code-review");
  EXPECT_EQ(s["host"][1]["in_slot"], false);
  EXPECT_EQ(s["requests"]["in_window"], before_all + 31);
  EXPECT_GT(s["evictions"]["slot"]["rate_5m"].get<double>(), 1);
  EXPECT_EQ(s["active_adapters"], 2);
  EXPECT_EQ(s["suggested_max_loras"], 3);
  std::set<std::string> kinds;
  for (const auto& h : s["hints"])
    kinds.insert(h["kind"].get<std::string>() + "/" + h["subject"].get<std::string>());
  EXPECT_EQ(kinds, (std::set<std::string>{"evictions/slot", "max_loras/", "merge/medical-qa"}))
      << s["hints"].dump();

  const std::string metrics = f.get("/metrics").body;
  EXPECT_NE(metrics.find("\nloraplex_suggested_max_loras 3\n"), std::string::npos);
  EXPECT_NE(metrics.find("\nloraplex_hint{kind=\"merge\",subject=\"medical-qa\"} 1\n"), std::string::npos);
  EXPECT_NE(metrics.find("\nloraplex_hint{kind=\"evictions\",subject=\"slot\"} 1\n"), std::string::npos);
  EXPECT_NE(metrics.find("# TYPE loraplex_lora_evictions_per_second gauge"), std::string::npos);
}

TEST(DashboardHttp, WithoutTheSamplerLiveValuesStillShow) {
  Fixture f(ServerOptions{});
  f.backend.script([](sched::EngineStats&, lora::CacheCounters&, CacheSnapshot& cache) {
    cache.slots = {{"x", false, 0}};
  });
  json s = f.state();
  EXPECT_EQ(s["samples"], 1);  // the one taken for this answer
  EXPECT_EQ(s["slots"][0]["adapter"], "x");
  EXPECT_EQ(s["hints"].size(), 0u);
  EXPECT_TRUE(s["tiers"]["slot"].is_null());  // no activations: no fraction
}

TEST(DashboardHttp, PageIsSelfContainedAndOpenLikeMetrics) {
  ServerOptions o = Fixture::with_sampler();
  o.api_key = "sekret";
  Fixture f(o);
  auto page = f.get("/dashboard");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page.header("Content-Security-Policy").find("connect-src 'self'"), std::string::npos);
  EXPECT_NE(page.body.find("fetch('/dashboard/state'"), std::string::npos);
  for (const char* outside : {"http://", "https://", "src=", "href=", "@import", "url("})
    EXPECT_EQ(page.body.find(outside), std::string::npos) << outside;
  EXPECT_EQ(f.get("/dashboard/state").status, 200);
  EXPECT_EQ(f.get("/metrics").status, 200);
  EXPECT_EQ(f.get("/v1/models").status, 401);
  EXPECT_EQ(f.get("/dashboard/nothing").status, 404);
}

}  // namespace
}  // namespace lp::server
