// An independent, obviously-right forward pass of a Llama-family model for tests: plain loops, double
// accumulation, no paging, no batching, weights converted to double on the fly. Slow; use tiny models.
#pragma once

#include <filesystem>
#include <vector>

namespace lp::test {

// Logits (T, vocab) for every position of one sequence of the model in `dir`.
std::vector<double> reference_logits(const std::filesystem::path& dir, const std::vector<int32_t>& ids);

}  // namespace lp::test
