#include "core/thread_pool.h"

#include <gtest/gtest.h>

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
          EXPECT_EQ(b % grain, 0);
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
      }
    }
  }
}

TEST(ComputePool, RunCallsEveryThreadOnceManyTimes) {
  ComputePool pool(3);
  std::atomic<int> total{0};
  for (int round = 0; round < 2000; ++round) {
    std::atomic<int> mask{0};
    pool.run([&](int t, int n) {
      EXPECT_EQ(n, 3);
      mask |= 1 << t;
      total++;
    });
    ASSERT_EQ(mask.load(), 7);
  }
  EXPECT_EQ(total.load(), 6000);
}

}  // namespace
}  // namespace lp
