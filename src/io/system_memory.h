// How much memory this process may still take, for sizing the KV cache: the smaller of the kernel's
// MemAvailable (/proc/meminfo) and the headroom of every memory cgroup from this process's own up to the
// mount root (v2: memory.max; v1: memory.limit_in_bytes), where headroom = limit − working set and the
// working set is usage − inactive_file (as the kubelet counts it: inactive page cache is reclaimed before the
// OOM killer acts). A file that is missing, unreadable or says "max" means "no limit from there".
// The parsers take file text, so tests feed fixture text; read_memory_available() takes the filesystem root.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace lp::io {

// "MemAvailable:   12345 kB" in /proc/meminfo, in bytes; nullopt when absent or malformed.
std::optional<int64_t> parse_meminfo_available(std::string_view meminfo);

// A cgroup limit file (memory.max, memory.limit_in_bytes): bytes, or nullopt for "max", for v1's "no limit"
// (any value >= 2^62: the kernel reports PAGE_COUNTER_MAX pages, about 2^63) and for anything malformed.
std::optional<int64_t> parse_cgroup_limit(std::string_view text);

// A plain byte count (memory.current, memory.usage_in_bytes); nullopt when malformed.
std::optional<int64_t> parse_cgroup_bytes(std::string_view text);

// The value of `key` in a memory.stat file ("inactive_file 1234" lines); nullopt when absent.
std::optional<int64_t> parse_memory_stat(std::string_view stat, std::string_view key);

// This process's cgroup paths from /proc/self/cgroup: the v2 line "0::/path" and the v1 line whose
// controller list holds "memory" ("4:memory:/path"). Empty when absent.
struct SelfCgroup {
  std::string v2_path;
  std::string v1_memory_path;
};
SelfCgroup parse_proc_self_cgroup(std::string_view text);

struct MemoryAvailable {
  std::optional<int64_t> bytes;  // min of the two below; nullopt when neither is known
  std::optional<int64_t> meminfo_available;
  std::optional<int64_t> cgroup_headroom;  // the tightest cgroup's limit − working set (>= 0)
  std::string cgroup_dir;                  // which cgroup folder gave cgroup_headroom (relative to `root`)
  // What `bytes` came from, for the plan printout: "MemAvailable", "cgroup v2 memory.max of /x", "unknown".
  std::string source;
};

// Reads the kernel files under `root` ("/" in production).
MemoryAvailable read_memory_available(const std::filesystem::path& root = "/");

}  // namespace lp::io
