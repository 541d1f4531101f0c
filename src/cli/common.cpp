#include "cli/common.h"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "core/check.h"

namespace lp::cli {

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string part = s.substr(i, j - i);
    while (!part.empty() && part.front() == ' ') part.erase(part.begin());
    while (!part.empty() && part.back() == ' ') part.pop_back();
    int32_t v = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || ec != std::errc() || p != part.data() + part.size() || v < 0)
      fail("invalid token id '{}' in --ids (expected comma-separated non-negative integers)", part);
    ids.push_back(v);
    i = j + 1;
  }
  if (ids.empty()) fail("--ids is empty");
  return ids;
}

int64_t resident_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  return 0;
}

int pool_threads(int requested) {
  if (requested > 0) return requested;
  if (const char* e = std::getenv("LORAPLEX_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace lp::cli
