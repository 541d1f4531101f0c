#include "core/thread_pool.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <vector>

namespace lp {
namespace {

TEST(ComputePool, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ComputePool pool(threads);
    for (int64_t n : {1, 2, 7, 64, 1000, 1001}) {
      for (int64_t grain : {1, 3, 16}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          if (b % grain != 0) ADD_FAILURE() << "chunk start " << b << " not a multiple of " << grain;
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
      }
    }
  }
}

TEST(ComputePool, ParallelForMakesAtMostChunksPerThreadChunks) {
  ComputePool pool(2);
  for (int cpt : {1, 2, 4}) {
    std::atomic<int> calls{0};
    std::vector<std::atomic<int>> hits(1000);
    pool.parallel_for(
        1000, 16,
        [&](int64_t b, int64_t e) {
          calls++;
          for (int64_t i = b; i < e; ++i) hits[i]++;
        },
        cpt);
    EXPECT_EQ(calls.load(), 2 * cpt);
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

// chunk_bounds / num_chunks (which the matmul uses to know where another chunk starts) tile [0, n) in
// order with grain-aligned starts, exactly as parallel_for hands the chunks out.
TEST(ComputePool, ChunkBoundsTileTheRangeAsParallelForDoes) {
  for (int threads : {1, 2, 3}) {
    ComputePool pool(threads);
    for (int64_t n : {1, 15, 16, 17, 960, 1001})
      for (int64_t grain : {1, 16})
        for (int cpt : {1, 2, 4}) {
          const int64_t chunks = pool.num_chunks(n, grain, cpt);
          ASSERT_GE(chunks, 1);
          int64_t at = 0;
          std::vector<std::pair<int64_t, int64_t>> want;
          for (int64_t c = 0; c < chunks; ++c) {
            auto [b, e] = ComputePool::chunk_bounds(n, grain, chunks, c);
            EXPECT_EQ(b, at) << "n=" << n << " grain=" << grain << " chunk " << c;
            EXPECT_EQ(b % grain, 0);
            EXPECT_LE(b, e);
            at = e;
            if (b < e) want.emplace_back(b, e);
          }
          EXPECT_EQ(at, n);
          std::vector<std::pair<int64_t, int64_t>> seen(want.size());
          std::atomic<size_t> k{0};
          pool.parallel_for(
              n, grain, [&](int64_t b, int64_t e) { seen[k++] = {b, e}; }, cpt);
          std::sort(seen.begin(), seen.end());
          EXPECT_EQ(seen, want);
        }
  }
}

TEST(ComputePool, RunCallsEveryIndexOnceManyTimes) {
  ComputePool pool(3);
  std::atomic<int> total{0};
  for (int round = 0; round < 2000; ++round) {
    std::atomic<int> mask{0};
    pool.run([&](int t, int n) {
      if (n != 3) ADD_FAILURE() << "n=" << n;
      mask |= 1 << t;
      total++;
    });
    ASSERT_EQ(mask.load(), 7);
  }
  EXPECT_EQ(total.load(), 6000);
}

// Every job's writes are visible when run returns, for thousands of back-to-back jobs of varying size, more
// threads than cores included (a late worker must never run a chunk of a job that has already returned).
TEST(ComputePool, BackToBackJobsCompleteBeforeReturning) {
  // Under the sanitizers every chunk claim and store is instrumented (TSan: ~50x): fewer, smaller jobs, still
  // thousands of back-to-back hand-overs.
#ifdef LP_SANITIZED_BUILD
  constexpr int kJobs = 1500, kMaxN = 20000;
#else
  constexpr int kJobs = 5000, kMaxN = 70000;
#endif
  for (int threads : {2, 4}) {
    ComputePool pool(threads);
    std::vector<int> a(kMaxN);
    for (int it = 1; it <= kJobs; ++it) {
      int n = 1 + (it * 7919) % kMaxN;
      pool.parallel_for(n, 1 + it % 5, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) a[i] = it;
      });
      // A plain scan (an ASSERT per element cost most of this test's time under TSan), then one assertion.
      int bad = 0;
      while (bad < n && a[bad] == it) ++bad;
      ASSERT_EQ(bad, n) << "job " << it << ": index " << bad << " holds " << a[bad];
    }
  }
}

TEST(ComputePool, DefaultSizeIsTheAffinityMask) {
  // Narrow this thread's mask to one CPU: the default pool must follow it, not the online CPUs.
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(affinity_cpu_count(), CPU_COUNT(&saved));
  int first = 0;
  while (!CPU_ISSET(first, &saved)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  const int narrowed = ComputePool().size();
  const std::optional<int> count = affinity_cpu_count();
  ASSERT_EQ(sched_setaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(narrowed, 1);
  EXPECT_EQ(count, 1);
  EXPECT_EQ(ComputePool().size(), CPU_COUNT(&saved));
}

}  // namespace
}  // namespace lp
