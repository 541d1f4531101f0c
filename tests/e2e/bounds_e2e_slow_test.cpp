// End to end: tests/e2e/bounds.mjs (see its header): every request bound against `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, Bounds) {
  lp::test::run_e2e_script("bounds.mjs");
}
