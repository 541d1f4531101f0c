// End to end: tests/e2e/isolation.mjs (see its header): pins, per-tenant caps, slot waits against `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, Isolation) { lp::test::run_e2e_script("isolation.mjs"); }
