// Small helpers shared by the CLI subcommands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"

namespace lp::cli {

// "1,2,3" → {1, 2, 3}; throws lp::Error on anything else.
std::vector<int32_t> parse_ids(const std::string& s);
// Resident set size of this process in bytes (from /proc/self/status), 0 if unknown.
int64_t resident_bytes();
// Threads for the compute pool: `requested` if > 0, else LORAPLEX_THREADS, else all cores.
int pool_threads(int requested);

}  // namespace lp::cli
