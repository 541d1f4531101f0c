// Token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p, with penalties, seeded
// per request so results are reproducible. Semantics follow vLLM's sampler:
//   1. repetition penalty (HF style: logit/p if > 0 else logit*p, over prompt + output tokens),
//      frequency and presence penalties (OpenAI style, over output tokens);
//   2. temperature 0 (or top_k 1) → argmax (lowest id on ties);
//   3. logits / temperature → top-k → top-p (smallest set with cumulative probability ≥ top_p) → min-p
//      (drop tokens with p < min_p · p_max) → sample with the request's RNG.
#pragma once

#include <cstdint>
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
  int64_t seed = -1;  // -1: nondeterministic
  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

// The per-request sampling state: RNG and counts of generated tokens (for penalties).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // `prompt` is used only by the repetition penalty. Modifies `logits` in place (vocab entries).
  int32_t sample(std::span<float> logits, std::span<const int32_t> prompt);
  // Records an emitted token (for frequency/presence/repetition penalties).
  void accept(int32_t token);
  // log-softmax of the model's raw logits (before penalties and temperature, as vLLM reports them).
  static void log_softmax(std::span<const float> logits, std::vector<float>& out);

 private:
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
