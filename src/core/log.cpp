#include "core/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

namespace lp {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("LORAPLEX_LOG");
  if (!v) return LogLevel::kInfo;
  if (!std::strcmp(v, "debug")) return LogLevel::kDebug;
  if (!std::strcmp(v, "warn")) return LogLevel::kWarn;
  if (!std::strcmp(v, "error")) return LogLevel::kError;
  return LogLevel::kInfo;
}

}  // namespace

bool log_enabled(LogLevel level) {
  static const LogLevel min_level = level_from_env();  // read once; immutable afterwards
  return level >= min_level;
}

void log_write(LogLevel level, std::string_view msg) {
  static const char* names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::string line = fmt::format("[{}.{:03d}] {} {}\n", ms / 1000, static_cast<int>(ms % 1000),
                                 names[static_cast<int>(level)], msg);
  ssize_t ignored = ::write(2, line.data(), line.size());  // one syscall per line: lines never interleave
  (void)ignored;
}

}  // namespace lp
