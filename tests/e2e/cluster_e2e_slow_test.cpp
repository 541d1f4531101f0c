// End to end: tests/e2e/cluster.mjs (see its header): scripts/cluster.sh's HAProxy cluster of 3 replicas under
// the load generator, affinity vs round robin, replicas killed mid-run. The sanitized trees leave it out: it
// runs the same binary the other e2e suites check there, and what it measures (placement, loads, replays) is
// the proxy configuration's, at request rates a sanitized build cannot serve (tests/CMakeLists.txt leaves
// this file out of those trees).
#include "e2e_runner.h"

TEST(E2E, Cluster) {
  if (lp::test::run_command("haproxy -v > /dev/null 2>&1") != 0)
    LP_FIXTURE_MISSING() << "haproxy is not installed (scripts/deps.sh installs it)";
  lp::test::run_e2e_script("cluster.mjs");
}
