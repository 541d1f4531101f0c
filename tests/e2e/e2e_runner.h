// Runs one end-to-end node script (tests/e2e/*.mjs) against the real `loraplex` binary of this build and
// fails the gtest when the script exits non-zero; the script's log (one line per check) is printed either way.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <string>

#include "util/test_util.h"

namespace lp::test {

// `env`: extra VAR=value words put before the command (e.g. "SOAK_SECONDS=60").
inline void run_e2e_script(const std::string& script, const std::string& env = "") {
  namespace fs = std::filesystem;
  if (!fs::exists(npm_dir() / "node_modules" / "openai") ||
      !fs::exists(npm_dir() / "node_modules" / "parse-prometheus-text-format"))
    LP_FIXTURE_MISSING() << "tests/fixtures/npm/node_modules is missing (run make fixtures)";
  ASSERT_TRUE(fs::exists(loraplex_binary())) << loraplex_binary() << " is not built";
  if (run_command("node --version > /dev/null 2>&1") != 0) LP_FIXTURE_MISSING() << "node is not installed";
  std::string out;
#ifdef LP_SANITIZED_BUILD
  const std::string sanitized = "LP_SANITIZED=1 ";
#else
  const std::string sanitized;
#endif
  std::string cmd = sanitized + env + " LP_BIN='" + loraplex_binary().string() + "' LP_NPM_DIR='" + npm_dir().string() + "' node '" +
                    (source_dir() / "tests" / "e2e" / script).string() + "' 2>&1";
  int rc = run_command(cmd, &out);
  std::cout << out;
  EXPECT_EQ(rc, 0) << script << " failed:\n" << out;
}

}  // namespace lp::test
