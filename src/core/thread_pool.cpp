#include "core/thread_pool.h"

#include <immintrin.h>
#include <sched.h>

#include <cerrno>

#include "core/check.h"

namespace lp {
namespace {
constexpr int kSpinIterations = 1 << 14;  // ~50-100 us of spinning before sleeping
inline void cpu_relax() { _mm_pause(); }
constexpr uint64_t kLow = 0xffffffffull;
}  // namespace

std::optional<int> affinity_cpu_count() {
  // A fixed cpu_set_t holds 1024 CPUs; on a larger machine the call fails with EINVAL, so grow the set.
  for (int n = CPU_SETSIZE; n <= (1 << 22); n *= 2) {
    cpu_set_t* set = CPU_ALLOC(n);
    if (!set) return std::nullopt;
    const size_t bytes = CPU_ALLOC_SIZE(n);
    CPU_ZERO_S(bytes, set);
    const int rc = sched_getaffinity(0, bytes, set);
    const int err = errno;
    const int count = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return count > 0 ? std::optional<int>(count) : std::nullopt;
    if (err != EINVAL) return std::nullopt;
  }
  return std::nullopt;
}

ComputePool::ComputePool(int n_threads) {
  if (n_threads <= 0)
    n_threads =
        affinity_cpu_count().value_or(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ComputePool::~ComputePool() {
  stop_.store(true);
  state_.fetch_add(uint64_t{1} << 32);  // any change wakes the sleepers
  state_.notify_all();
  for (auto& w : workers_) w.join();
}

bool ComputePool::try_work(uint64_t s) {
  const uint64_t j = job_.load();
  if ((j >> 32) != (s >> 32) || (s & kLow) >= (j & kLow)) return false;
  // The fields belong to generation s >> 32 as long as the claim below succeeds: they are rewritten only
  // after every chunk of that job has been claimed and finished.
  Trampoline fn = fn_.load();
  void* ctx = ctx_.load();
  if (!state_.compare_exchange_strong(s, s + 1)) return true;  // someone else moved; look again
  fn(ctx, static_cast<int64_t>(s & kLow), static_cast<int64_t>(j & kLow));
  done_.fetch_add(1);
  return true;
}

void ComputePool::run_erased(Trampoline fn, void* ctx, int64_t n_chunks) {
  LP_CHECK(n_chunks > 0 && static_cast<uint64_t>(n_chunks) < kLow);
  const uint64_t g = ++gen_;
  fn_.store(fn);
  ctx_.store(ctx);
  done_.store(0);
  job_.store(g << 32 | static_cast<uint64_t>(n_chunks));
  state_.store(g << 32);
  state_.notify_all();
  // Take chunks until none is left, then wait only for chunks that workers are running right now.
  for (;;) {
    uint64_t s = state_.load();
    if ((s & kLow) >= static_cast<uint64_t>(n_chunks)) break;
    try_work(s);
  }
  int spins = 0;
  while (done_.load() != static_cast<uint64_t>(n_chunks)) {
    if (++spins < kSpinIterations) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

void ComputePool::worker_loop() {
  int spins = 0;
  for (;;) {
    uint64_t s = state_.load();
    if (stop_.load()) return;
    if (try_work(s)) {
      spins = 0;
      continue;
    }
    if (++spins < kSpinIterations) {
      cpu_relax();
    } else {
      state_.wait(s);  // until the state changes (a new job, or shutdown)
      spins = 0;
    }
  }
}

}  // namespace lp
