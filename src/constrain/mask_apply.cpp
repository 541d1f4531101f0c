#include "constrain/mask_apply.h"

#include <algorithm>
#include <bit>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lp::constrain {

namespace {

constexpr float kMaskedOut = -std::numeric_limits<float>::infinity();

// The ids from word `words` on, one by one (the part of the row that is not whole mask words).
void apply_mask_tail(float* p, size_t n, const std::vector<uint64_t>& bits, size_t words) {
  for (size_t i = words * 64; i < n; ++i) {
    const size_t w = i >> 6;
    if (w >= bits.size() || !((bits[w] >> (i & 63)) & 1)) p[i] = kMaskedOut;
  }
}

}  // namespace

void apply_mask_plain(std::span<float> logits, const std::vector<uint64_t>& bits) {
  float* p = logits.data();
  const size_t words = std::min(bits.size(), logits.size() / 64);
  for (size_t w = 0; w < words; ++w) {
    const uint64_t b = bits[w];
    float* q = p + w * 64;
    if (b == ~uint64_t{0}) continue;
    if (b == 0) {
      for (int k = 0; k < 64; ++k) q[k] = kMaskedOut;
      continue;
    }
    for (uint64_t z = ~b; z; z &= z - 1) q[std::countr_zero(z)] = kMaskedOut;
  }
  apply_mask_tail(p, logits.size(), bits, words);
}

#if defined(__x86_64__) && defined(__GNUC__)
// AVX-512: a word with every id refused is four full-width stores of -inf (plain masked stores measured
// slower there), one with a few refused ids a few scalar stores, the rest four masked stores. Chosen at run
// time. The row is written from cache either way, so the gain is modest (~10% on a mostly refused row).
__attribute__((target("avx512f"))) void apply_mask_avx512(std::span<float> logits,
                                                          const std::vector<uint64_t>& bits) {
  float* p = logits.data();
  const size_t words = std::min(bits.size(), logits.size() / 64);
  const __m512 neg = _mm512_set1_ps(kMaskedOut);
  for (size_t w = 0; w < words; ++w) {
    const uint64_t off = ~bits[w];
    if (off == 0) continue;
    float* q = p + w * 64;
    if (off == ~uint64_t{0}) {
      _mm512_storeu_ps(q, neg);
      _mm512_storeu_ps(q + 16, neg);
      _mm512_storeu_ps(q + 32, neg);
      _mm512_storeu_ps(q + 48, neg);
      continue;
    }
    if (std::popcount(off) <= 4) {
      for (uint64_t z = off; z; z &= z - 1) q[std::countr_zero(z)] = kMaskedOut;
      continue;
    }
    _mm512_mask_storeu_ps(q, static_cast<__mmask16>(off), neg);
    _mm512_mask_storeu_ps(q + 16, static_cast<__mmask16>(off >> 16), neg);
    _mm512_mask_storeu_ps(q + 32, static_cast<__mmask16>(off >> 32), neg);
    _mm512_mask_storeu_ps(q + 48, static_cast<__mmask16>(off >> 48), neg);
  }
  apply_mask_tail(p, logits.size(), bits, words);
}
#endif

bool have_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
#else
  return false;
#endif
}

void apply_mask(std::span<float> logits, const std::vector<uint64_t>& bits) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (have_avx512()) return apply_mask_avx512(logits, bits);
#endif
  apply_mask_plain(logits, bits);
}

}  // namespace lp::constrain
