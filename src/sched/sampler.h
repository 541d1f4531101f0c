// Token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p, with penalties, seeded
// per request so results are reproducible. The engine has already set to -inf the logits of tokens the
// request may not produce (structured output, allowed_token_ids, bad_words, min_tokens: all masks, so their
// order does not matter); a -inf logit stays -inf through every step below and is never sampled.
// Semantics follow vLLM's sampler:
//   0. logit_bias: each (token, bias) is added to that token's logit (OpenAI's logit_bias, applied first, as
//      vLLM's logits processors run before its penalties);
//   1. repetition penalty (HF style: logit/p if > 0 else logit*p, over prompt + output tokens),
//      frequency and presence penalties (OpenAI style, over output tokens);
//   2. temperature < 1e-5 (vLLM's _SAMPLING_EPS) or top_k 1 → argmax (lowest id on ties);
//   3. logits / temperature → top-k → top-p (smallest set with cumulative probability ≥ top_p) → min-p
//      (drop tokens with p < min_p · p_max) → sample with the request's RNG.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

namespace lp::sched {

struct SamplingParams {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = -1;  // -1 or 0: off
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // The RNG seed; none: nondeterministic. Unsigned so that choice i of a seeded call can use seed + i with
  // wrap-around (the API's int64 seed is taken modulo 2^64, so every client seed is a distinct seed).
  std::optional<uint64_t> seed;
  // (token id, bias) pairs, ids unique and inside the vocabulary (the HTTP layer checks). Shared, not copied:
  // the n choices of one call hold one list.
  std::shared_ptr<const std::vector<std::pair<int32_t, float>>> logit_bias;

  // Below this temperature sampling is argmax: dividing by it would overflow the softmax (vLLM's bound).
  static constexpr float kGreedyTemperature = 1e-5f;
  bool greedy() const { return temperature < kGreedyTemperature || top_k == 1; }
};

// The per-request sampling state: RNG and counts of generated tokens (for penalties).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // `prompt` is used only by the repetition penalty. Modifies `logits` in place (vocab entries).
  int32_t sample(std::span<float> logits, std::span<const int32_t> prompt);
  // Records an emitted token (for frequency/presence/repetition penalties).
  void accept(int32_t token);
  // The model's raw log-probabilities (before penalties and temperature, as vLLM reports them) without
  // writing out the whole log-softmax: log(sum(exp(logits))), vectorized (a token's logprob is its logit
  // minus this), and the k largest logits as (id, logit), larger first, lower id on ties. A full log-softmax
  // per row costs milliseconds on a large vocabulary, on the thread every tenant's step waits for.
  // `scratch` receives a copy of the row.
  static float log_sum_exp(std::span<const float> logits, std::vector<float>& scratch);
  static void top_k(std::span<const float> logits, int k, std::vector<std::pair<int32_t, float>>& out);

 private:
  void apply_logit_bias(std::span<float> logits) const;
  void apply_penalties(std::span<float> logits, std::span<const int32_t> prompt);
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int> counts_;  // generated token -> times generated
  std::vector<int32_t> prompt_set_;              // the prompt's distinct tokens, sorted (repetition penalty)
  std::vector<std::pair<float, int32_t>> cand_;  // scratch: (logit / temperature, id)
  std::vector<double> prob_;                     // scratch: unnormalized probabilities of cand_
};

int32_t argmax(std::span<const float> logits);

}  // namespace lp::sched
