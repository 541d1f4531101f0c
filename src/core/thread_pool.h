// ComputePool: a fixed set of worker threads that kernels split work across (rows of a matmul, heads of
// attention). The calling thread takes part, so a pool of N threads starts N-1 workers.
//
// A job is a set of chunks [0, n) that threads claim one at a time from a shared counter; the caller returns
// once every chunk has finished. Because chunks are claimed dynamically, the caller never waits for a worker
// that the OS has not scheduled yet: it takes that worker's chunks itself (this matters on a busy machine,
// where a statically split job would wait for the slowest thread). Workers spin briefly after a job before
// sleeping, because a forward step issues hundreds of small jobs back to back.
// One pool per engine, passed explicitly (no singleton). run() must be called from one thread at a time.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace lp {

// The CPUs in this thread's affinity mask (sched_getaffinity; a container's cpuset, `taskset`, the kubelet's
// static CPU manager), or nullopt when the kernel does not say. Threads inherit the mask, so at start-up this
// is the process's. std::thread::hardware_concurrency() counts every online CPU and ignores the mask.
std::optional<int> affinity_cpu_count();

class ComputePool {
 public:
  // n_threads <= 0 means affinity_cpu_count() (else every online CPU). A cgroup CPU quota can narrow that
  // further, but core does not read cgroups: the CLI passes io::read_cpu_available()'s count explicitly.
  explicit ComputePool(int n_threads = 0);
  ~ComputePool();
  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(i, n) exactly once for every i in [0, n) with n = size(), in parallel, and returns when all
  // calls have finished. Two indices may run on the same thread one after the other, so fn must not wait
  // for another index (no barriers inside).
  template <class F>
  void run(F&& fn) {
    run_chunks(n_threads_, [&](int64_t i, int64_t n) { fn(static_cast<int>(i), static_cast<int>(n)); });
  }

  // Splits [0, n) into contiguous chunks (multiples of `grain`, except the last) and calls fn(begin, end)
  // for each, in parallel. Which thread runs which chunk is not fixed. At most `chunks_per_thread` chunks
  // per thread: more balance the load when a thread is slow or descheduled, fewer keep each chunk long.
  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& fn, int chunks_per_thread = 4) {
    if (n <= 0) return;
    const int64_t chunks = num_chunks(n, grain, chunks_per_thread);
    run_chunks(chunks, [&](int64_t c, int64_t nc) {
      auto [b, e] = chunk_bounds(n, grain, nc, c);
      if (b < e) fn(b, e);
    });
  }
  // How parallel_for splits [0, n): the number of chunks, and chunk c's [begin, end). Callers that need to
  // know where another chunk lies (to prefetch for it) use these.
  int64_t num_chunks(int64_t n, int64_t grain, int chunks_per_thread = 4) const {
    if (n <= 0) return 0;
    grain = std::max<int64_t>(grain, 1);
    const int64_t units = (n + grain - 1) / grain;
    if (n_threads_ == 1 || units == 1) return 1;
    return std::min<int64_t>(units, int64_t{std::max(chunks_per_thread, 1)} * n_threads_);
  }
  static std::pair<int64_t, int64_t> chunk_bounds(int64_t n, int64_t grain, int64_t chunks, int64_t c) {
    grain = std::max<int64_t>(grain, 1);
    const int64_t units = (n + grain - 1) / grain;
    const int64_t per = units / chunks, extra = units % chunks;
    const int64_t ub = c * per + std::min(c, extra);
    const int64_t ue = ub + per + (c < extra ? 1 : 0);
    return {std::min(n, ub * grain), std::min(n, ue * grain)};
  }

  // Calls fn(c, n_chunks) for every chunk c in [0, n_chunks), in parallel.
  template <class F>
  void run_chunks(int64_t n_chunks, F&& fn) {
    if (n_chunks <= 0) return;
    if (n_threads_ == 1 || n_chunks == 1) {
      for (int64_t c = 0; c < n_chunks; ++c) fn(c, n_chunks);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    run_erased([](void* ctx, int64_t c, int64_t n) { (*static_cast<Fn*>(ctx))(c, n); }, &fn, n_chunks);
  }

 private:
  using Trampoline = void (*)(void*, int64_t, int64_t);
  void run_erased(Trampoline fn, void* ctx, int64_t n_chunks);
  // Claims and runs chunks of the job published in state s; returns false if there was none to claim.
  bool try_work(uint64_t s);
  void worker_loop();

  int n_threads_;
  std::vector<std::thread> workers_;
  uint32_t gen_ = 0;  // caller-side job counter
  // The current job: its generation tags every field so a late worker can tell an old job from the new one.
  std::atomic<Trampoline> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<uint64_t> job_{0};                // gen << 32 | n_chunks
  alignas(64) std::atomic<uint64_t> state_{0};  // gen << 32 | next unclaimed chunk
  alignas(64) std::atomic<uint64_t> done_{0};   // chunks finished in the current job
  std::atomic<bool> stop_{false};
};

}  // namespace lp
