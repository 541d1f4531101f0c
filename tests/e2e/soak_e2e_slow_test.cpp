// End to end: tests/e2e/soak.mjs (see its header): churn, disconnects and floods for minutes against one server.
// Sanitized builds run it for a shorter time (their steps are several times slower; the same paths are hit).
#include "e2e_runner.h"

#ifdef LP_SANITIZED_BUILD
TEST(E2E, Soak) { lp::test::run_e2e_script("soak.mjs", "SOAK_SECONDS=30"); }
#else
TEST(E2E, Soak) { lp::test::run_e2e_script("soak.mjs", "SOAK_SECONDS=40"); }
#endif
