#include "sched/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/check.h"

namespace lp::sched {

int32_t argmax(std::span<const float> logits) {
  LP_CHECK(!logits.empty());
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

Sampler::Sampler(const SamplingParams& p) : p_(p) {
  if (p.seed >= 0) {
    rng_.seed(static_cast<uint64_t>(p.seed));
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
}

void Sampler::accept(int32_t token) { counts_[token]++; }

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> prompt) const {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (p_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(prompt.begin(), prompt.end());
    for (const auto& kv : counts_) seen.insert(kv.first);
    for (int32_t t : seen) {
      if (t < 0 || t >= V) continue;
      float& l = logits[t];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
    for (const auto& [t, n] : counts_) {
      if (t < 0 || t >= V) continue;
      logits[t] -= p_.frequency_penalty * static_cast<float>(n) + p_.presence_penalty;
    }
  }
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> prompt) {
  apply_penalties(logits, prompt);
  if (p_.greedy()) return argmax(logits);
  const int64_t V = static_cast<int64_t>(logits.size());
  const float inv_t = 1.0f / p_.temperature;
  cand_.clear();
  cand_.reserve(V);
  for (int64_t i = 0; i < V; ++i) cand_.emplace_back(logits[i] * inv_t, static_cast<int32_t>(i));
  // Order: highest logit first, lowest id on ties (deterministic).
  auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = static_cast<size_t>(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), better);
  } else {
    std::sort(cand_.begin(), cand_.end(), better);
  }
  cand_.resize(keep);
  // Softmax over the kept candidates.
  float mx = cand_[0].first;
  double sum = 0;
  std::vector<double> prob(keep);
  for (size_t i = 0; i < keep; ++i) sum += prob[i] = std::exp(static_cast<double>(cand_[i].first - mx));
  for (double& p : prob) p /= sum;
  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += prob[n++];
      if (cum >= p_.top_p) break;
    }
    keep = std::max<size_t>(n, 1);
  }
  if (p_.min_p > 0.0f) {
    double thr = p_.min_p * prob[0];
    size_t n = 1;
    while (n < keep && prob[n] >= thr) ++n;
    keep = n;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob[i];
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

void Sampler::log_softmax(std::span<const float> logits, std::vector<float>& out) {
  out.resize(logits.size());
  float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
  float lse = mx + static_cast<float>(std::log(sum));
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
}

}  // namespace lp::sched
