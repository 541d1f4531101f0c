// Monotonic time for measuring latencies and throughput.
#pragma once

#include <chrono>

namespace lp {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace lp
