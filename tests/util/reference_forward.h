// An independent, obviously-right forward pass of a Llama-family model for tests: plain loops, double
// accumulation, no paging, no batching, weights converted to double on the fly. Slow; use tiny models.
// Reads AWQ / GPTQ int4 checkpoints by dequantizing them with its own loops (W = (q - z) * s), and can
// quantize a float checkpoint by issue 14's int8 rule, both written here from the formats' descriptions,
// independently of src/ (no QuantMatrix, no checkpoint_quant).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace lp::test {

// What the reference does to the seven projections of a float checkpoint.
enum class RefQuant {
  kNone,  // the file's values
  // int8, weight-only, per output row: scale_r = max_k |W[r][k]| / 127 in f32 (1 for a zero row),
  // q = round-half-to-even(W / scale_r) clamped to [-127, 127]; the reference then uses q * scale_r.
  kInt8,
};

// Logits (T, vocab) for every position of one sequence of the model in `dir`. `quantize_lm_head`: lm_head
// too is rounded by `quant` (the embedding keeps the file's values even when tied).
std::vector<double> reference_logits(const std::filesystem::path& dir, const std::vector<int32_t>& ids,
                                     RefQuant quant = RefQuant::kNone, bool quantize_lm_head = false);

// n token ids in [0, vocab), the same for the same seed (model::DemoRng): prompts for forward tests.
std::vector<int32_t> demo_ids(int n, int vocab, uint64_t seed);

// test::normalized_error of model logits (f32) against reference logits (f64).
double normalized_error(const std::vector<float>& got, const std::vector<double>& ref);

}  // namespace lp::test
