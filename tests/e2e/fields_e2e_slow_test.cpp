// End to end: tests/e2e/fields.mjs (see its header): vLLM request fields against `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, Fields) { lp::test::run_e2e_script("fields.mjs"); }
