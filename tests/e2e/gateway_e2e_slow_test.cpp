// End to end: tests/e2e/gateway.mjs (see its header): the deploy/k8s manifests validated against the
// Kubernetes, Gateway API and Inference Extension schemas, the Deployment's args run for real, and the
// gateway-metrics contract of the endpoint picker asserted against a running `loraplex serve`.
#include <filesystem>

#include "e2e_runner.h"

TEST(E2E, Gateway) {
  const auto modules = lp::test::npm_dir() / "node_modules";
  for (const char* p : {"yaml", "ajv", "kubernetes-models", "@kubernetes-models/gateway-api"})
    if (!std::filesystem::exists(modules / p))
      LP_FIXTURE_MISSING() << "tests/fixtures/npm/node_modules/" << p << " is missing (run make fixtures)";
  lp::test::run_e2e_script("gateway.mjs");
}
