// End to end: tests/e2e/http.mjs (see its header), the HTTP layer's bounds over raw sockets against `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, Http) { lp::test::run_e2e_script("http.mjs"); }
