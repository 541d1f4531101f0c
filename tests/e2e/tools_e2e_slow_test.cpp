// End to end: tests/e2e/tools.mjs (see its header) with the official openai client against `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, Tools) { lp::test::run_e2e_script("tools.mjs"); }
