// Per-token sampling cost on the engine thread, against the full-vocabulary sort that a naive top-p
// sampler does (the baseline, timed in the same run). Peaked logits (std 8) are what trained models give;
// flat ones (std 3) make the top-p set large. Then the cost of one row's logprobs (log-sum-exp + top 20), as the
// engine reports them, against a full log-softmax + partial sort (timed in the same run).
// Run: build/bench/sampler_bench
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/stats.h"
#include "sched/sampler.h"

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// What a sort-based sampler pays before it can draw: (logit, id) pairs sorted by logit.
double full_sort_ms(const std::vector<float>& logits) {
  std::vector<std::pair<float, int32_t>> c(logits.size());
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {logits[i], static_cast<int32_t>(i)};
  std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return ms_since(t0);
}

// The baseline the engine used before: a double-precision log-softmax of the whole row.
void log_softmax(const std::vector<float>& logits, std::vector<float>& out) {
  out.resize(logits.size());
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
}

}  // namespace

int main() {
  constexpr int kReps = 31;
  std::printf("%-8s %-6s %-6s %12s %12s %8s\n", "vocab", "std", "top_p", "sample ms", "sort ms", "ratio");
  for (int V : {49152, 128256}) {
    for (float sd : {8.0f, 3.0f}) {
      std::mt19937 rng(1);
      std::normal_distribution<float> d(0, sd);
      std::vector<float> base(V);
      for (float& x : base) x = d(rng);
      for (float top_p : {1.0f, 0.95f}) {
        lp::sched::SamplingParams p;
        p.top_p = top_p;
        p.seed = 1;
        lp::sched::Sampler s(p);
        std::vector<double> t_sample, t_sort;
        for (int r = 0; r < kReps; ++r) {
          std::vector<float> l = base;
          auto t0 = std::chrono::steady_clock::now();
          s.sample(l, {});
          t_sample.push_back(ms_since(t0));
          t_sort.push_back(full_sort_ms(base));
        }
        const double a = lp::median(t_sample), b = lp::median(t_sort);
        std::printf("%-8d %-6.0f %-6.2f %12.3f %12.3f %8.2f\n", V, sd, top_p, a, b, a / b);
      }
    }
  }
  std::printf("\n%-8s %16s %20s %8s\n", "vocab", "logprobs ms", "log_softmax+sort ms", "ratio");
  for (int V : {49152, 151936}) {
    std::mt19937 rng(2);
    std::normal_distribution<float> d(0, 8);
    std::vector<float> row(V);
    for (float& x : row) x = d(rng);
    std::vector<double> t_new, t_old;
    std::vector<float> scratch, lp;
    std::vector<std::pair<int32_t, float>> top;
    std::vector<int32_t> order(V);
    float sink = 0;
    for (int r = 0; r < kReps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      sink += lp::sched::Sampler::log_sum_exp(row, scratch);
      lp::sched::Sampler::top_k(row, 20, top);
      t_new.push_back(ms_since(t0));
      t0 = std::chrono::steady_clock::now();
      log_softmax(row, lp);
      for (int i = 0; i < V; ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + 20, order.end(),
                        [&](int32_t a, int32_t b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
      sink += lp[order[0]];
      t_old.push_back(ms_since(t0));
    }
    const double a = lp::median(t_new), b = lp::median(t_old);
    std::printf("%-8d %16.3f %20.3f %8.2f%s\n", V, a, b, a / b, sink == 12345.f ? " " : "");
  }
}
