// AdapterManager under contention, meant to run under ThreadSanitizer (build with -DLP_TSAN=ON): "HTTP"
// threads register, unregister, count, list and read counters while an engine thread acquires, holds,
// releases and polls, the loader fails every fifth load and is sometimes slow. Throughout, every adapter the
// engine gets a slot for has exactly its own weights in that slot, also when it releases it; at the end the
// tiers and counters are consistent.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <random>
#include <thread>

#include "core/check.h"
#include "core/clock.h"
#include "lora/adapter_cache_test_util.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

using Status = AdapterManager::Status;
using namespace cache_test;

TEST(AdapterManagerTsan, ConcurrentRegistryEngineAndLoaderStayConsistent) {
  constexpr int kNames = 16, kHttpThreads = 3, kEngineSteps = 3000;
  const model::ModelConfig cfg = tiny_config();
  test::TempDir tmp("tsan");
  std::vector<std::string> names;
  std::vector<PackedAdapter> want;
  for (int i = 0; i < kNames; ++i) {
    names.push_back("a" + std::to_string(i));
    write_adapter(tmp.path(), names.back(), cfg, i, 4, /*mixed=*/true);
    want.push_back(pack_adapter(load_adapter(tmp.path() / names.back(), base_shapes(cfg)), DType::kBF16));
  }
  auto index_of = [&](const std::string& n) { return std::stoi(n.substr(1)); };

  std::atomic<int> hook_calls{0}, hook_failures{0};
  ManagerOptions o;
  o.max_loras = 3;
  o.max_cpu_loras = 5;
  o.max_lora_rank = 8;
  o.lora_dtype = DType::kBF16;
  o.failed_retry_after = std::chrono::milliseconds(2);
  o.on_load = [&](const std::string&) {
    int k = ++hook_calls;
    if (k % 5 == 0) {
      ++hook_failures;
      fail("injected failure #{}", k);
    }
    if (k % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
  };
  AdapterManager m(cfg, o);
  m.register_adapter("pinned", tmp.path() / names[0], /*pinned=*/true);
  for (int i = 0; i < kNames; i += 2) m.register_adapter(names[i], tmp.path() / names[i]);

  std::atomic<bool> engine_done{false};
  std::atomic<int64_t> counted{0};
  std::atomic<int> engine_failures{0};
  std::vector<std::string> errors;  // engine thread only until joined
  std::array<int, 5> statuses{};    // engine thread only until joined: acquire() answers by Status

  std::thread engine([&] {
    std::mt19937 rng(1);
    struct Hold {
      std::string name;
      int slot, steps;
    };
    std::vector<Hold> holds;
    auto check = [&](const std::string& name, int slot) {
      int i = name == "pinned" ? 0 : index_of(name);
      std::string d = slot_mismatch(m.bank(), slot, want[i]);
      if (!d.empty()) errors.push_back(name + " in slot " + std::to_string(slot) + ": " + d);
    };
    const double t0 = now_seconds();  // at least kEngineSteps, and at least 0.5 s however fast the build
    for (int step = 0; step < kEngineSteps || now_seconds() - t0 < 0.5; ++step) {
      m.poll();
      for (int k = 0; k < 2; ++k) {
        std::string n = rng() % 8 == 0 ? "pinned" : names[rng() % kNames];
        AdapterManager::Acquire r = m.acquire(n);
        ++statuses[static_cast<int>(r.status)];
        if (r.status == Status::kReady) {
          check(n, r.slot);
          holds.push_back({n, r.slot, 1 + static_cast<int>(rng() % 2)});
        } else if (r.status == Status::kFailed) {
          ++engine_failures;
          if (r.error.find("injected failure") == std::string::npos)
            errors.push_back("unexpected error: " + r.error);
        }
      }
      for (size_t i = 0; i < holds.size();) {
        if (--holds[i].steps > 0) {
          ++i;
          continue;
        }
        check(holds[i].name, holds[i].slot);  // still there: nothing evicted or unloaded under a holder
        m.release(holds[i].slot);
        holds[i] = holds.back();
        holds.pop_back();
      }
      if (step % 50 == 0) {
        std::string e = m.consistency_errors();
        if (!e.empty()) errors.push_back(e);
      }
    }
    for (const Hold& h : holds) m.release(h.slot);
    engine_done = true;
  });

  std::vector<std::thread> http;
  for (int t = 0; t < kHttpThreads; ++t) {
    http.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      while (!engine_done) {  // churn for as long as the engine runs
        std::this_thread::yield();
        const int i = static_cast<int>(rng() % kNames);
        try {
          switch (rng() % 6) {
            case 0:
            case 1:
              m.register_adapter(names[i], tmp.path() / names[i]);
              break;
            case 2:
              m.unregister_adapter(names[i]);
              break;
            case 3:
              if (m.count_request(names[i])) ++counted;
              break;
            case 4:
              for (const auto& info : m.list())
                if (info.tier != "slot" && info.tier != "host" && info.tier != "loading" &&
                    info.tier != "disk")
                  std::abort();
              break;
            case 5:
              (void)m.counters();
              (void)m.is_registered(names[i]);
              break;
          }
        } catch (const Error& e) {
          const std::string w = e.what();
          const bool expected =
              (e.kind() == ErrorKind::kInvalid && w.find("already exists") != std::string::npos) ||
              (e.kind() == ErrorKind::kNotFound && w.find("not registered") != std::string::npos);
          if (!expected) std::abort();
        }
      }
    });
  }
  for (auto& t : http) t.join();
  engine.join();
  m.wait_for_loads();
  m.poll();  // places the pinned adapter if a failure left it out

  for (const std::string& e : errors) ADD_FAILURE() << e;
  EXPECT_EQ(m.consistency_errors(), "");
  CacheCounters c = m.counters();
  EXPECT_EQ(c.held_slots, 0);
  EXPECT_EQ(c.loading, 0);
  EXPECT_LE(c.in_slots, 3);
  EXPECT_LE(c.in_host, 5);
  EXPECT_GE(c.in_host, c.in_slots);
  EXPECT_LE(c.loads_from_disk + c.load_failures, hook_calls.load());  // a discarded load counts neither
  EXPECT_LE(c.load_failures, hook_failures.load());
  EXPECT_GT(c.loads_from_disk, 0);
  int registered = 0;
  for (const auto& info : m.list()) {
    ++registered;
    EXPECT_TRUE(m.is_registered(info.name));
  }
  EXPECT_EQ(c.registered, registered);
  int64_t requests = 0;
  for (const auto& [n, k] : c.requests) requests += k;
  EXPECT_LE(requests, counted.load());  // unregistered adapters take their counts with them
  // Every occupied slot holds the adapter its bookkeeping names.
  std::vector<std::string> slots = m.slot_names();
  for (int s = 0; s < static_cast<int>(slots.size()); ++s) {
    if (slots[s].empty()) continue;
    int i = slots[s] == "pinned" ? 0 : index_of(slots[s]);
    EXPECT_EQ(slot_mismatch(m.bank(), s, want[i]), "") << slots[s];
  }
  std::printf(
      "tsan: disk loads %lld, failures %lld (hook %d/%d), host->slot %lld, evictions slot %lld host %lld, "
      "engine saw %d failures; acquire: ready %d loading %d no-slot %d failed %d unknown %d\n",
      static_cast<long long>(c.loads_from_disk), static_cast<long long>(c.load_failures),
      hook_failures.load(), hook_calls.load(), static_cast<long long>(c.loads_from_host),
      static_cast<long long>(c.evictions_slot), static_cast<long long>(c.evictions_host),
      engine_failures.load(), statuses[0], statuses[1], statuses[2], statuses[3], statuses[4]);
}

}  // namespace
}  // namespace lp::lora
