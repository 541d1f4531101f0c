// Counters of the adapter cache, as the /metrics endpoint exposes them (part 6 of the adapter-cache issue):
// loads and their duration by source tier, evictions by tier, load failures, adapters per tier now and
// requests per adapter. AdapterManager::counters() returns a consistent snapshot of them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lp::lora {

// A Prometheus-style histogram: `buckets[i]` counts observations <= bounds[i] (cumulative, like the `le`
// buckets of the exposition format); `count` is the +Inf bucket.
struct Histogram {
  std::vector<double> bounds;
  std::vector<int64_t> buckets;  // (bounds.size()), cumulative
  int64_t count = 0;
  double sum = 0;

  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), buckets(bounds.size(), 0) {}
  void observe(double v) {
    for (size_t i = 0; i < bounds.size(); ++i)
      if (v <= bounds[i]) ++buckets[i];
    ++count;
    sum += v;
  }
};

// Bucket bounds of the load-duration histograms, in milliseconds.
inline std::vector<double> load_ms_bounds() {
  return {0.1, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500};
}

struct CacheCounters {
  // Completed loads by source tier: "disk" = disk → host (read, validate, convert on the loader thread),
  // "host" = host → slot (a copy on the engine thread). A slot hit is not a load.
  int64_t loads_from_disk = 0;
  int64_t loads_from_host = 0;
  Histogram load_ms_disk{load_ms_bounds()};
  Histogram load_ms_host{load_ms_bounds()};
  // acquire()s answered by a slot hit, timed the same way: what a hit costs the engine thread.
  Histogram load_ms_hit{load_ms_bounds()};
  // Evictions by the tier the adapter leaves: slot → host, host → disk. Unregistering is not an eviction.
  int64_t evictions_slot = 0;
  int64_t evictions_host = 0;
  int64_t load_failures = 0;  // disk → host loads that failed (each failed load once, however many waited)
  // acquire()s that found the adapter in a slot already (no load): with loads_from_host, the slot tier's hit
  // rate (the operator dashboard's, server/dashboard.h).
  int64_t slot_hits = 0;

  // Adapters per tier now. The host tier includes the adapters that are also in a slot (it is inclusive,
  // like vLLM's CPU cache: max_cpu_loras >= max_loras), so in_slots <= in_host <= max_cpu_loras.
  int in_slots = 0;
  int in_host = 0;
  int loading = 0;     // disk → host loads in flight (each holds a host-tier place)
  int registered = 0;  // every registered adapter ("disk" tier: all of them)
  int held_slots = 0;  // slots with at least one holder (a running request)

  // Requests per adapter name since start (count_request(); kept when a name is unregistered, so the
  // counter stays monotonic), in name order.
  std::vector<std::pair<std::string, int64_t>> requests;
};

}  // namespace lp::lora
