// Summaries of measured samples, for the benchmarks.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"

namespace lp {

// The middle sample (the mean of the two middle ones for an even count).
inline double median(std::vector<double> v) {
  LP_CHECK(!v.empty(), "median of no samples");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Nearest-rank percentile (p in [0, 100]); 0 for no samples.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, i > 0 ? i - 1 : 0)];
}

}  // namespace lp
