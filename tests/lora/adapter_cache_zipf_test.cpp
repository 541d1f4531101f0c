// 1,000 registered adapters, 4 slots, 16 host places, requests drawn from a Zipf distribution by a simulated
// engine loop (admit → run a few steps → release, with poll() between steps). Every request that gets a slot
// finds exactly its own adapter's weights there — when it is admitted and again just before it releases, so
// nothing was evicted under it — and at the end every request was served and the counters add up.
#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <random>
#include <thread>
#include <unordered_map>

#include "lora/adapter_cache_test_util.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

namespace fs = std::filesystem;
using Status = AdapterManager::Status;
using namespace cache_test;

TEST(AdapterCacheZipf, ThousandAdaptersFourSlotsEveryServedAdapterIsTheRightOne) {
  constexpr int kAdapters = 1000, kRequests = 3000, kNewPerStep = 6, kWindow = 8;
  const model::ModelConfig cfg = tiny_config();
  test::TempDir tmp("zipf");
  ManagerOptions o;
  o.max_loras = 4;
  o.max_cpu_loras = 16;
  o.max_lora_rank = 8;
  o.lora_dtype = DType::kBF16;
  AdapterManager m(cfg, o);
  std::vector<std::string> names;
  for (int i = 0; i < kAdapters; ++i) {
    names.push_back("tenant-" + std::to_string(i));
    // mixed: ranks 2..8, attention-only, q/v-only with a rank pattern, MLP-only
    m.register_adapter(names.back(), write_adapter(tmp.path(), names.back(), cfg, i, 8, /*mixed=*/true));
  }
  ASSERT_EQ(m.counters().registered, kAdapters);

  // Zipf(s = 1.1) over the adapters, fixed seed.
  std::vector<double> w(kAdapters);
  for (int i = 0; i < kAdapters; ++i) w[i] = 1.0 / std::pow(i + 1, 1.1);
  std::discrete_distribution<int> zipf(w.begin(), w.end());
  std::mt19937_64 rng(12345);

  std::unordered_map<int, PackedAdapter> expected;
  auto want = [&](int a) -> const PackedAdapter& {
    auto it = expected.find(a);
    if (it == expected.end())
      it = expected
               .emplace(a, pack_adapter(load_adapter(tmp.path() / names[a], base_shapes(cfg)), DType::kBF16))
               .first;
    return it->second;
  };

  struct Running {
    int adapter, slot, steps_left;
  };
  std::deque<int> waiting;
  std::vector<Running> running;
  int submitted = 0, served = 0, steps = 0;
  while (served < kRequests) {
    ASSERT_LT(++steps, 200000) << "no progress";
    for (int i = 0; i < kNewPerStep && submitted < kRequests; ++i, ++submitted) {
      int a = zipf(rng);
      ASSERT_TRUE(m.count_request(names[a]));
      waiting.push_back(a);
    }
    m.poll();
    // Admit in FIFO order from a window of the oldest kWindow requests (only they may start loads, so the
    // loads in flight fit the host tier instead of evicting each other). A request whose adapter is loading
    // waits without blocking the others; the first one that finds every slot held stops admission for this
    // step (the running requests drain and it gets the next free slot: FCFS, no starvation). That is the
    // scheduler's policy, not the manager's.
    bool loading = false;
    for (size_t i = 0, seen = 0; i < waiting.size() && seen < kWindow; ++seen) {
      const int a = waiting[i];
      AdapterManager::Acquire r = m.acquire(names[a]);
      ASSERT_NE(r.status, Status::kFailed) << r.error;
      ASSERT_NE(r.status, Status::kUnknown);
      if (r.status == Status::kNoSlot) break;
      if (r.status == Status::kLoading) {
        loading = true;
        ++i;
        continue;
      }
      ASSERT_EQ(slot_mismatch(m.bank(), r.slot, want(a)), "") << names[a] << " admitted in slot " << r.slot;
      running.push_back({a, r.slot, 1 + static_cast<int>(rng() % 4)});
      waiting.erase(waiting.begin() + static_cast<long>(i));
    }
    // One "forward step"; finished requests check their slot once more and release it.
    for (size_t i = 0; i < running.size();) {
      Running& q = running[i];
      if (--q.steps_left > 0) {
        ++i;
        continue;
      }
      ASSERT_EQ(slot_mismatch(m.bank(), q.slot, want(q.adapter)), "") << names[q.adapter] << " lost its slot";
      m.release(q.slot);
      ++served;
      running[i] = running.back();
      running.pop_back();
    }
    if (loading && running.empty()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  m.wait_for_loads();
  EXPECT_EQ(m.consistency_errors(), "");
  CacheCounters c = m.counters();
  EXPECT_EQ(c.held_slots, 0);
  EXPECT_EQ(c.in_slots, 4);
  EXPECT_LE(c.in_host, 16);
  EXPECT_EQ(c.load_failures, 0);
  int64_t total = 0;
  for (const auto& [n, k] : c.requests) total += k;
  EXPECT_EQ(total, kRequests);
  // Every slot fill is a host → slot copy; every disk load and every kept registration fills a host place.
  EXPECT_EQ(c.loads_from_host, c.evictions_slot + 4);
  EXPECT_EQ(c.loads_from_disk - c.evictions_host + /*kept at registration*/ 16, c.in_host);
  // The cache works: fewer disk loads than requests (without it every request would be one; ~1,900 here,
  // as ~46% of Zipf(1.1) requests fall outside the 16 most popular adapters).
  EXPECT_LT(c.loads_from_disk, kRequests * 4 / 5);
  std::printf(
      "zipf: %d requests, %d steps, disk loads %lld, host->slot %lld, slot evictions %lld, host evictions "
      "%lld\n",
      kRequests, steps, static_cast<long long>(c.loads_from_disk), static_cast<long long>(c.loads_from_host),
      static_cast<long long>(c.evictions_slot), static_cast<long long>(c.evictions_host));
}

}  // namespace
}  // namespace lp::lora
