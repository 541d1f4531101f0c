// The frozen clock that the reference renders (node, tests/fixtures/chat/reference.mjs) and ours share, so
// strftime_now() gives the same text on both sides.
#pragma once

#include <ctime>

namespace lp::test {

// Environment prefix for the node command line.
inline constexpr const char* kReferenceNowEnv = "TZ=UTC LP_FIXED_NOW=2024-07-26T10:20:00Z";

// The same instant for TemplateOptions::now.
inline std::tm reference_now() {
  std::tm t{};
  t.tm_year = 2024 - 1900;
  t.tm_mon = 6;
  t.tm_mday = 26;
  t.tm_hour = 10;
  t.tm_min = 20;
  return t;
}

}  // namespace lp::test
