// End to end: tests/e2e/dashboard.mjs (see its header), the operator dashboard in headless Chromium against
// `loraplex serve`.
#include "e2e_runner.h"

TEST(E2E, Dashboard) {
  if (lp::test::run_command("command -v chromium > /dev/null 2>&1") != 0)
    LP_FIXTURE_MISSING() << "chromium is not installed (scripts/deps.sh installs it)";
  lp::test::run_e2e_script("dashboard.mjs");
}
