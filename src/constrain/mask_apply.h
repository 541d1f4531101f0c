// Applying a token mask (one bit per vocabulary id) to a row of logits: every id whose bit is clear, and
// every id past the mask, becomes -inf. This runs once per constrained token, so it has an AVX-512 version
// chosen at run time; the plain one is the reference (and the fallback).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lp::constrain {

void apply_mask(std::span<float> logits, const std::vector<uint64_t>& bits);

// The two implementations, for tests and benches.
void apply_mask_plain(std::span<float> logits, const std::vector<uint64_t>& bits);
bool have_avx512();
#if defined(__x86_64__) && defined(__GNUC__)
void apply_mask_avx512(std::span<float> logits, const std::vector<uint64_t>& bits);
#endif

}  // namespace lp::constrain
