// ComputePool: a fixed set of worker threads that kernels split work across (rows of a matmul, heads of
// attention). The calling thread takes part as thread 0, so a pool of N threads starts N-1 workers.
// Dispatch costs a few microseconds: workers spin briefly after each job before sleeping, because a
// forward step issues hundreds of small parallel jobs back to back. One pool per engine, passed
// explicitly (no singleton). run() is not reentrant and must be called from one thread at a time.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace lp {

class ComputePool {
 public:
  // n_threads <= 0 means std::thread::hardware_concurrency().
  explicit ComputePool(int n_threads = 0);
  ~ComputePool();
  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) once on each thread, and returns when all have finished.
  template <class F>
  void run(F&& fn) {
    if (n_threads_ == 1) {
      fn(0, 1);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    run_erased([](void* ctx, int t, int n) { (*static_cast<Fn*>(ctx))(t, n); }, &fn);
  }

  // Splits [0, n) into contiguous chunks (multiples of `grain`, except the last) and calls
  // fn(begin, end) for each non-empty chunk, one chunk per thread.
  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    int64_t units = (n + grain - 1) / grain;
    if (n_threads_ == 1 || units == 1) {
      fn(int64_t{0}, n);
      return;
    }
    run([&](int t, int nt) {
      int64_t per = units / nt, extra = units % nt;
      int64_t ub = t * per + std::min<int64_t>(t, extra);
      int64_t ue = ub + per + (t < extra ? 1 : 0);
      int64_t b = std::min(n, ub * grain), e = std::min(n, ue * grain);
      if (b < e) fn(b, e);
    });
  }

 private:
  using Trampoline = void (*)(void*, int, int);
  void run_erased(Trampoline fn, void* ctx);
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  // Job published by the caller: guarded by the generation counter (written before gen_ is bumped).
  Trampoline job_fn_ = nullptr;
  void* job_ctx_ = nullptr;
  alignas(64) std::atomic<uint64_t> gen_{0};
  alignas(64) std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace lp
