#include "sched/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/kernels.h"

namespace lp::sched {

int32_t argmax(std::span<const float> logits) {
  LP_CHECK(!logits.empty());
  return static_cast<int32_t>(kernels::argmax(logits.data(), static_cast<int64_t>(logits.size())));
}

Sampler::Sampler(const SamplingParams& p) : p_(p) {
  if (p.seed) {
    rng_.seed(*p.seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
}

void Sampler::accept(int32_t token) {
  counts_[token]++;
}

void Sampler::apply_logit_bias(std::span<float> logits) const {
  if (!p_.logit_bias) return;
  const auto V = static_cast<int64_t>(logits.size());
  for (const auto& [t, b] : *p_.logit_bias)
    if (t >= 0 && t < V) logits[t] += b;
}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> prompt) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (p_.repetition_penalty != 1.0f) {
    // Every distinct token of prompt + output once. The prompt's distinct tokens are found on the first call
    // (the prompt does not change), not on every token.
    if (prompt_set_.empty() && !prompt.empty()) {
      prompt_set_.assign(prompt.begin(), prompt.end());
      std::sort(prompt_set_.begin(), prompt_set_.end());
      prompt_set_.erase(std::unique(prompt_set_.begin(), prompt_set_.end()), prompt_set_.end());
    }
    auto penalize = [&](int32_t t) {
      if (t < 0 || t >= V) return;
      float& l = logits[t];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    };
    for (int32_t t : prompt_set_) penalize(t);
    for (const auto& kv : counts_)
      if (!std::binary_search(prompt_set_.begin(), prompt_set_.end(), kv.first)) penalize(kv.first);
  }
  if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
    for (const auto& [t, n] : counts_) {
      if (t < 0 || t >= V) continue;
      logits[t] -= p_.frequency_penalty * static_cast<float>(n) + p_.presence_penalty;
    }
  }
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> prompt) {
  apply_logit_bias(logits);
  apply_penalties(logits, prompt);
  if (p_.greedy()) return argmax(logits);
  const int64_t V = static_cast<int64_t>(logits.size());
  const float inv_t = 1.0f / p_.temperature;
  cand_.clear();
  cand_.reserve(V);
  for (int64_t i = 0; i < V; ++i) cand_.emplace_back(logits[i] * inv_t, static_cast<int32_t>(i));
  // Order where one is needed: highest logit first, lowest id on ties (a strict total order, so any sorted
  // prefix is the prefix of the full sort).
  auto better = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < cand_.size()) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), better);
    cand_.resize(static_cast<size_t>(p_.top_k));
  }
  // Softmax over the candidates (no order needed).
  float mx = cand_[0].first;
  for (const auto& c : cand_) mx = std::max(mx, c.first);
  prob_.resize(cand_.size());
  double sum = 0;
  for (size_t i = 0; i < cand_.size(); ++i)
    sum += prob_[i] = std::exp(static_cast<double>(cand_[i].first - mx));
  size_t keep = cand_.size();
  if (p_.top_p < 1.0f) {
    // The smallest most-probable set reaching top_p: sort a prefix of growing length until it gets there,
    // instead of the whole vocabulary (a full sort of 128K entries costs ~10 ms per token); a flat
    // distribution gets to the full sort after two cheap tries.
    const double target = p_.top_p * sum;
    size_t sorted = 0, n = 0;
    double cum = 0;
    for (size_t want = 64;; want = want < 1024 ? 1024 : cand_.size()) {
      const size_t k = std::min(want, cand_.size());
      if (k == cand_.size())
        std::sort(cand_.begin() + static_cast<long>(sorted), cand_.end(), better);
      else
        std::partial_sort(cand_.begin() + static_cast<long>(sorted), cand_.begin() + static_cast<long>(k),
                          cand_.end(), better);
      sorted = k;
      while (n < sorted && cum < target) cum += std::exp(static_cast<double>(cand_[n++].first - mx));
      if (cum >= target || sorted == cand_.size()) break;
    }
    keep = std::max<size_t>(n, 1);
    for (size_t i = 0; i < keep; ++i) prob_[i] = std::exp(static_cast<double>(cand_[i].first - mx));
  }
  if (p_.min_p > 0.0f) {  // drop p < min_p * p_max, keeping the order; prob_ is relative to p_max (= 1)
    const double thr = std::min(1.0, static_cast<double>(p_.min_p));  // the most probable token always stays
    size_t n = 0;
    for (size_t i = 0; i < keep; ++i)
      if (prob_[i] >= thr) {
        cand_[n] = cand_[i];
        prob_[n++] = prob_[i];
      }
    keep = n;
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob_[i];
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  size_t last = 0;  // the last candidate with a nonzero probability: rounding may leave r >= 0 at the end,
                    // and a token masked to -inf (probability 0) must never be the fallback
  for (size_t i = 0; i < keep; ++i) {
    if (prob_[i] <= 0) continue;
    last = i;
    r -= prob_[i];
    if (r < 0) return cand_[i].second;
  }
  return cand_[last].second;
}

float Sampler::log_sum_exp(std::span<const float> logits, std::vector<float>& scratch) {
  const auto n = static_cast<int64_t>(logits.size());
  LP_CHECK(n > 0);
  const int64_t at = kernels::argmax(logits.data(), n);
  const float mx = logits[at];
  if (!std::isfinite(mx)) return mx;
  // softmax leaves exp(max - max) / sum = 1 / sum at the argmax, so sum needs no second pass.
  scratch.assign(logits.begin(), logits.end());
  kernels::softmax(scratch.data(), n);
  return mx - std::log(scratch[at]);
}

void Sampler::top_k(std::span<const float> logits, int k, std::vector<std::pair<int32_t, float>>& out) {
  out.clear();
  if (k <= 0) return;
  const auto want = static_cast<size_t>(k);
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    // Ids come in increasing order, so an equal logit never displaces one already kept (lower id first).
    if (out.size() == want && !(v > out.back().second)) continue;
    auto pos = std::find_if(out.begin(), out.end(), [v](const auto& e) { return e.second < v; });
    out.insert(pos, {static_cast<int32_t>(i), v});
    if (out.size() > want) out.pop_back();
  }
}

}  // namespace lp::sched
