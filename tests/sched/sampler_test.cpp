// Sampling semantics: greedy ties, seeded reproducibility, the support of top-k / top-p / min-p, and the
// penalties, checked against distributions computed by hand.
#include "sched/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

namespace lp::sched {
namespace {

std::vector<float> logits_of(std::vector<double> probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::set<int32_t> support(SamplingParams p, const std::vector<float>& logits, int draws = 3000) {
  std::set<int32_t> seen;
  p.seed = 123;
  Sampler s(p);
  for (int i = 0; i < draws; ++i) {
    auto l = logits;
    seen.insert(s.sample(l, {}));
  }
  return seen;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  std::vector<float> l = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(l, {}), 1);
  p.temperature = 1.0f;
  p.top_k = 1;
  Sampler k1(p);
  l = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(k1.sample(l, {}), 1);
}

TEST(Sampler, SameSeedSameSequence) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  Sampler a(p), b(p);
  auto base = logits_of({0.1, 0.2, 0.3, 0.4});
  std::vector<int32_t> xa, xb;
  for (int i = 0; i < 50; ++i) {
    auto l1 = base, l2 = base;
    xa.push_back(a.sample(l1, {}));
    xb.push_back(b.sample(l2, {}));
  }
  EXPECT_EQ(xa, xb);
  p.seed = 8;
  Sampler c(p);
  std::vector<int32_t> xc;
  for (int i = 0; i < 50; ++i) {
    auto l = base;
    xc.push_back(c.sample(l, {}));
  }
  EXPECT_NE(xa, xc);
}

TEST(Sampler, FrequenciesFollowTheDistribution) {
  SamplingParams p;
  p.seed = 1;
  Sampler s(p);
  auto base = logits_of({0.1, 0.2, 0.3, 0.4});
  std::map<int, int> n;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    auto l = base;
    n[s.sample(l, {})]++;
  }
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(n[t] / double(draws), 0.1 * (t + 1), 0.015) << t;
}

TEST(Sampler, TopKTopPMinPRestrictTheSupport) {
  auto l = logits_of({0.05, 0.15, 0.30, 0.50});
  SamplingParams p;
  p.top_k = 2;
  EXPECT_EQ(support(p, l), (std::set<int32_t>{2, 3}));
  p = {};
  p.top_p = 0.75f;  // 0.50 + 0.30 >= 0.75
  EXPECT_EQ(support(p, l), (std::set<int32_t>{2, 3}));
  p.top_p = 0.5f;  // 0.50 alone is enough
  EXPECT_EQ(support(p, l), (std::set<int32_t>{3}));
  p = {};
  p.min_p = 0.25f;  // keep p >= 0.125
  EXPECT_EQ(support(p, l), (std::set<int32_t>{1, 2, 3}));
  p = {};
  EXPECT_EQ(support(p, l), (std::set<int32_t>{0, 1, 2, 3}));
}

// A top-p set larger than the first sorted prefix (64) the sampler looks at: 200 equally likely tokens hold
// 80% of the mass, so top_p 0.75 keeps exactly the first 188 of them (ties go to the lowest id).
TEST(Sampler, TopPSetLargerThanTheFirstSortedPrefix) {
  std::vector<double> probs(3000, 0.2 / 2800);
  for (int i = 0; i < 200; ++i) probs[100 + i] = 0.8 / 200;  // ids 100..299
  SamplingParams p;
  p.top_p = 0.75f;
  std::set<int32_t> want;
  for (int32_t i = 100; i < 100 + 188; ++i) want.insert(i);
  EXPECT_EQ(support(p, logits_of(probs), 20000), want);
}

TEST(Sampler, PenaltiesFollowVllmFormulas) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 1.0f;
  p.presence_penalty = 0.5f;
  Sampler s(p);
  s.accept(2);
  s.accept(2);
  s.accept(0);
  std::vector<float> l = {3.0f, 1.0f, 4.0f, -1.0f};
  s.sample(l, {});
  EXPECT_FLOAT_EQ(l[2], 4.0f - 2 * 1.0f - 0.5f);
  EXPECT_FLOAT_EQ(l[0], 3.0f - 1.0f - 0.5f);
  EXPECT_FLOAT_EQ(l[1], 1.0f);
  SamplingParams r;
  r.temperature = 0;
  r.repetition_penalty = 2.0f;
  Sampler rs(r);
  std::vector<int32_t> prompt = {1, 3};
  std::vector<float> l2 = {3.0f, 1.0f, 4.0f, -1.0f};
  rs.sample(l2, prompt);
  EXPECT_FLOAT_EQ(l2[1], 0.5f);   // positive: divided
  EXPECT_FLOAT_EQ(l2[3], -2.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(l2[0], 3.0f);
}

using Bias = std::vector<std::pair<int32_t, float>>;

TEST(Sampler, LogitBiasIsAddedToTheLogits) {
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = std::make_shared<const Bias>(Bias{{0, 5.0f}, {2, -1.5f}});
  Sampler s(p);
  std::vector<float> l = {1.0f, 2.0f, 3.0f};
  EXPECT_EQ(s.sample(l, {}), 0);  // 1 + 5 beats 2 and 3 - 1.5
  EXPECT_FLOAT_EQ(l[0], 6.0f);
  EXPECT_FLOAT_EQ(l[1], 2.0f);
  EXPECT_FLOAT_EQ(l[2], 1.5f);
}

TEST(Sampler, LogitBiasComesBeforePenalties) {
  // vLLM runs logits processors (logit_bias) before penalties: token 0 = (1 + 3) / 2 = 2 < 2.5, so token 1
  // wins; applying the penalty first would give 1 / 2 + 3 = 3.5 and token 0.
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  p.logit_bias = std::make_shared<const Bias>(Bias{{0, 3.0f}});
  Sampler s(p);
  std::vector<int32_t> prompt = {0};
  std::vector<float> l = {1.0f, 2.5f};
  EXPECT_EQ(s.sample(l, prompt), 1);
}

TEST(Sampler, LogitBiasShapesTheDistribution) {
  // p = (0.25, 0.25, 0.5); a bias of ln 2 on token 1 doubles its weight: (0.25, 0.5, 0.5) / 1.25
  // = (0.2, 0.4, 0.4). A bias of -100 on a token removes it in practice (e^-100).
  SamplingParams p;
  p.seed = 99;
  p.logit_bias = std::make_shared<const Bias>(Bias{{1, static_cast<float>(std::log(2.0))}});
  Sampler s(p);
  const auto base = logits_of({0.25, 0.25, 0.5});
  const int draws = 40000;
  std::map<int32_t, int> count;
  for (int i = 0; i < draws; ++i) {
    auto l = base;
    count[s.sample(l, {})]++;
  }
  const double want[] = {0.2, 0.4, 0.4};
  for (int t = 0; t < 3; ++t) {
    const double sigma = std::sqrt(want[t] * (1 - want[t]) / draws);
    EXPECT_NEAR(count[t] / static_cast<double>(draws), want[t], 5 * sigma) << "token " << t;
  }
  SamplingParams q;
  q.logit_bias = std::make_shared<const Bias>(Bias{{2, -100.0f}});
  EXPECT_EQ(support(q, base), (std::set<int32_t>{0, 1}));
}

TEST(Sampler, TinyTemperatureIsGreedy) {
  // Below vLLM's 1e-5 the request is greedy; dividing by such a temperature would overflow the softmax.
  SamplingParams p;
  p.temperature = 5e-6f;
  EXPECT_TRUE(p.greedy());
  EXPECT_EQ(support(p, logits_of({0.3, 0.3, 0.4})), (std::set<int32_t>{2}));
  p.temperature = 1e-5f;
  EXPECT_FALSE(p.greedy());
}

// log_sum_exp against a double-precision sum written out here; top_k against a full sort by (logit desc, id
// asc). Rows of awkward lengths (not multiples of 16), a wide spread (tokens ~200 nats below the best, whose
// probabilities underflow a float), and many ties.
TEST(Sampler, LogSumExpAndTopKMatchAPlainComputation) {
  std::mt19937 rng(7);
  for (int n : {1, 15, 17, 1000, 151733}) {
    std::uniform_real_distribution<float> u(-200.f, 50.f);
    std::vector<float> row(n);
    for (auto& x : row) x = std::round(u(rng) * 4) / 4;  // quarter steps: plenty of ties
    double mx = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (float x : row) sum += std::exp(static_cast<double>(x) - mx);
    const double want = mx + std::log(sum);
    std::vector<float> scratch;
    EXPECT_NEAR(Sampler::log_sum_exp(row, scratch), want, 1e-4 * std::max(1.0, std::fabs(want))) << n;
    for (int k : {0, 1, 5, 20}) {
      std::vector<int32_t> idx(n);
      for (int i = 0; i < n; ++i) idx[i] = i;
      std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      std::vector<std::pair<int32_t, float>> got;
      Sampler::top_k(row, k, got);
      ASSERT_EQ(got.size(), static_cast<size_t>(std::min(k, n)));
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].first, idx[i]) << "n " << n << " k " << k << " rank " << i;
        EXPECT_EQ(got[i].second, row[idx[i]]);
      }
    }
  }
}

}  // namespace
}  // namespace lp::sched
