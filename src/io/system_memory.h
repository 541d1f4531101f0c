// How much of the machine this process may use, for start-up sizing.
// Memory, for the KV cache: the smaller of the kernel's
// MemAvailable (/proc/meminfo) and the headroom of every memory cgroup from this process's own up to the
// mount root (v2: memory.max; v1: memory.limit_in_bytes), where headroom = limit − working set and the
// working set is usage − inactive_file (as the kubelet counts it: inactive page cache is reclaimed before the
// OOM killer acts). A file that is missing, unreadable or says "max" means "no limit from there".
// CPUs, for the compute pool: the smaller of the affinity mask's CPU count and the tightest CPU quota of the
// same cgroup chain (v2: cpu.max; v1: cpu.cfs_quota_us / cpu.cfs_period_us), rounded up. Kubernetes'
// limits.cpu and `docker run --cpus` set the quota, not the mask, and threads beyond it are only throttled.
// The parsers take file text, so tests feed fixture text; the readers take the filesystem root.
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

// This process's cgroup paths from /proc/self/cgroup: the v2 line "0::/path" and the v1 lines whose
// controller list holds "memory" ("4:memory:/path") and "cpu" ("3:cpu,cpuacct:/path"). Empty when absent.
struct SelfCgroup {
  std::string v2_path;
  std::string v1_memory_path;
  std::string v1_cpu_path;
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

// A CFS bandwidth limit: the cgroup's tasks together may run `quota_us` of every `period_us`.
struct CpuQuota {
  int64_t quota_us = 0;
  int64_t period_us = 0;
  // Whole CPUs: quota / period rounded up (1.5 CPUs of time keep 2 threads busy part of the time), >= 1.
  int cpus() const;
};

// A v2 cpu.max file: "200000 100000" (quota, period); nullopt for "max 100000" and for anything malformed.
std::optional<CpuQuota> parse_cpu_max(std::string_view text);

// v1's cpu.cfs_quota_us ("-1" = no limit) and cpu.cfs_period_us; nullopt for no limit or malformed text.
std::optional<CpuQuota> parse_cfs_quota(std::string_view quota_text, std::string_view period_text);

struct CpuAvailable {
  int count = 1;                  // min(affinity (else online), quota's cpus()); >= 1
  std::optional<int> affinity;    // CPUs in the affinity mask
  std::optional<CpuQuota> quota;  // the tightest cgroup CPU quota
  std::string cgroup_dir;         // which cgroup folder gave `quota` (relative to `root`)
  int online = 1;                 // std::thread::hardware_concurrency(), for the start-up log
  // What `count` came from, for the start-up log: "cgroup v2 cpu.max 200000/100000 of /sys/fs/cgroup/x",
  // "the affinity mask, no cgroup CPU quota", "online CPUs (cgroup v1 ... allows 96)".
  std::string source;
};

// Reads the cgroup files under `root` ("/" in production); `affinity` is the mask's count (the process's own,
// lp::affinity_cpu_count(), in production; tests pass their own, since a mask is not a file under a root).
CpuAvailable read_cpu_available(const std::filesystem::path& root, std::optional<int> affinity);
// The real thing: root "/" and this thread's affinity mask.
CpuAvailable read_cpu_available();

// Why `count` is what it is, for the start-up log: "cgroup v2 cpu.max 200000/100000 of /sys/fs/cgroup/x;
// 64 in the affinity mask, 64 online".
std::string cpu_plan_text(const CpuAvailable& c);

}  // namespace lp::io
