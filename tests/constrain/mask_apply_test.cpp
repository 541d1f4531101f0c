// Applying a token mask to logits: the plain and AVX-512 versions against a per-id reference, on random
// masks (all-allowed, all-refused and mixed words) and rows shorter than, equal to and longer than the mask.
#include "constrain/mask_apply.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace lp::constrain {
namespace {

std::vector<float> reference(std::vector<float> row, const std::vector<uint64_t>& bits, size_t vocab) {
  for (size_t i = 0; i < row.size(); ++i)
    if (i >= vocab || !((bits[i / 64] >> (i % 64)) & 1)) row[i] = -INFINITY;
  return row;
}

TEST(ApplyMask, plain_and_avx512_equal_the_reference) {
  std::mt19937_64 rng(5);
  int cases = 0;
  for (size_t vocab : {1ul, 63ul, 64ul, 65ul, 1000ul, 151669ul}) {
    for (int kind = 0; kind < 4; ++kind) {
      std::vector<uint64_t> bits((vocab + 63) / 64);
      for (auto& w : bits) {
        const int pick = static_cast<int>(rng() % 5);
        w = kind == 0   ? ~uint64_t{0}
            : kind == 1 ? 0
            : pick == 0 ? 0
            : pick == 4 ? ~(uint64_t{1} << (rng() % 64) | uint64_t{1} << (rng() % 64))  // one or two refused
            : pick == 1 ? ~uint64_t{0}
                        : rng() & rng();
      }
      if (vocab % 64) bits.back() &= (uint64_t{1} << (vocab % 64)) - 1;  // as Grammar builds them
      for (size_t row_size : {vocab / 2, vocab, vocab + 1, vocab + 100}) {
        std::vector<float> row(row_size);
        for (auto& x : row) x = static_cast<float>(rng() % 1000) / 10.0f;
        const std::vector<float> want = reference(row, bits, vocab);
        std::vector<float> plain = row;
        apply_mask_plain(plain, bits);
        EXPECT_EQ(plain, want) << "plain, vocab " << vocab << " row " << row_size << " kind " << kind;
#if defined(__x86_64__) && defined(__GNUC__)
        if (have_avx512()) {
          std::vector<float> wide = row;
          apply_mask_avx512(wide, bits);
          EXPECT_EQ(wide, want) << "avx512, vocab " << vocab << " row " << row_size << " kind " << kind;
        }
#endif
        std::vector<float> chosen = row;
        apply_mask(chosen, bits);
        EXPECT_EQ(chosen, want);
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 96);
}

}  // namespace
}  // namespace lp::constrain
