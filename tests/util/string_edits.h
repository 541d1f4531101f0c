// Small random edits of test strings: near misses of valid inputs, to check that a matcher refuses (or a
// reference agrees on) what is one code unit away from what it accepts.
#pragma once

#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace lp::test {

// Picks the code unit an edit writes at position `at` of the string being edited.
using EditUnit = std::function<char(const std::string& s, size_t at)>;

// Up to `count` variants of `s` (none when it is empty), each one edit away: at a position drawn from `rng`,
// the code unit is erased, or insert(s, at) is inserted before it, or it is replaced by replace(s, at) (the
// kind drawn from `rng` after the position; the callbacks may draw from it too).
std::vector<std::string> one_edit_mutations(const std::string& s, std::mt19937& rng, int count,
                                            const EditUnit& insert, const EditUnit& replace);

}  // namespace lp::test
