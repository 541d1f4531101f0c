// Reading how much memory this process may take, from fixture text and fixture trees laid out as the kernel
// does: MemAvailable alone; a cgroup v2 limit tighter than it (nested: the tightest ancestor wins; inactive
// page cache counts as free); "max" and v1's huge "no limit"; a v1 hierarchy; missing and malformed files
// meaning "no limit from there". And the CPUs it may use: v2 cpu.max and v1 cfs quota/period parsing (rounded
// up, never below 1), the tightest ancestor's quota, the min with the affinity mask, and the real mask of
// this process against /proc/self/status.
#include "io/system_memory.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "core/thread_pool.h"
#include "util/test_util.h"

namespace lp::io {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr const char* kMeminfo =
    "MemTotal:       32768000 kB\n"
    "MemFree:         1000000 kB\n"
    "MemAvailable:   20000000 kB\n"
    "Buffers:          100000 kB\n";

void put(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  test::write_file(p, text);
}

TEST(SystemMemory, ParsesMeminfo) {
  EXPECT_EQ(parse_meminfo_available(kMeminfo), 20000000LL * 1024);
  EXPECT_EQ(parse_meminfo_available("MemTotal: 5 kB\n"), std::nullopt);
  EXPECT_EQ(parse_meminfo_available("MemAvailable: lots kB\n"), std::nullopt);
  EXPECT_EQ(parse_meminfo_available(""), std::nullopt);
}

TEST(SystemMemory, ParsesCgroupFiles) {
  EXPECT_EQ(parse_cgroup_limit("max\n"), std::nullopt);
  EXPECT_EQ(parse_cgroup_limit("8589934592\n"), 8589934592LL);
  EXPECT_EQ(parse_cgroup_limit("9223372036854771712\n"), std::nullopt);  // v1 "no limit"
  EXPECT_EQ(parse_cgroup_limit("-1\n"), std::nullopt);
  EXPECT_EQ(parse_cgroup_limit("12abc"), std::nullopt);
  EXPECT_EQ(parse_cgroup_bytes("4096\n"), 4096);
  EXPECT_EQ(parse_memory_stat("anon 10\ninactive_file 300\nactive_file 7\n", "inactive_file"), 300);
  EXPECT_EQ(parse_memory_stat("total_inactive_file 5\n", "inactive_file"), std::nullopt);
  EXPECT_EQ(parse_memory_stat("total_inactive_file 5\n", "total_inactive_file"), 5);

  SelfCgroup v2 = parse_proc_self_cgroup("0::/user.slice/app.scope\n");
  EXPECT_EQ(v2.v2_path, "/user.slice/app.scope");
  EXPECT_EQ(v2.v1_memory_path, "");
  SelfCgroup v1 = parse_proc_self_cgroup("5:cpuacct,cpu:/\n4:memory:/docker/abc\n0::/\n");
  EXPECT_EQ(v1.v1_memory_path, "/docker/abc");
  EXPECT_EQ(v1.v2_path, "/");
  EXPECT_EQ(parse_proc_self_cgroup("3:cpuset,memory:/x:y\n").v1_memory_path, "/x:y");
  EXPECT_EQ(v1.v1_cpu_path, "/");
  // "cpuacct" and "cpuset" are not "cpu".
  SelfCgroup acct = parse_proc_self_cgroup("2:cpuacct:/a\n3:cpuset:/b\n4:cpu,cpuacct:/kubepods/c\n");
  EXPECT_EQ(acct.v1_cpu_path, "/kubepods/c");
  EXPECT_EQ(parse_proc_self_cgroup("2:cpuacct:/a\n3:cpuset:/b\n").v1_cpu_path, "");
}

TEST(SystemCpu, ParsesQuotaFiles) {
  auto cpus = [](std::optional<CpuQuota> q) { return q ? q->cpus() : -1; };
  EXPECT_EQ(parse_cpu_max("max 100000\n"), std::nullopt);
  EXPECT_EQ(cpus(parse_cpu_max("200000 100000\n")), 2);
  EXPECT_EQ(cpus(parse_cpu_max("150000 100000\n")), 2);  // 1.5 CPUs: round up
  EXPECT_EQ(cpus(parse_cpu_max("100001 100000")), 2);
  EXPECT_EQ(cpus(parse_cpu_max("50000 100000\n")), 1);  // half a CPU: still one thread
  EXPECT_EQ(cpus(parse_cpu_max("1000 100000\n")), 1);
  EXPECT_EQ(cpus(parse_cpu_max("6400000 100000\n")), 64);
  ASSERT_TRUE(parse_cpu_max("250000 50000").has_value());
  EXPECT_EQ(parse_cpu_max("250000 50000")->quota_us, 250000);
  EXPECT_EQ(parse_cpu_max("250000 50000")->period_us, 50000);
  EXPECT_EQ(cpus(parse_cpu_max("250000 50000")), 5);
  for (const char* bad : {"", "\n", "200000", "200000 0", "0 100000", "-1 100000", "2e5 100000", "200000 1e5",
                          "max", "200000 100000 7", "two 100000"})
    EXPECT_EQ(parse_cpu_max(bad), std::nullopt) << "'" << bad << "'";

  EXPECT_EQ(parse_cfs_quota("-1\n", "100000\n"), std::nullopt);  // v1 "no limit"
  EXPECT_EQ(cpus(parse_cfs_quota("400000\n", "100000\n")), 4);
  EXPECT_EQ(cpus(parse_cfs_quota("350000\n", "100000\n")), 4);
  EXPECT_EQ(cpus(parse_cfs_quota("20000\n", "100000\n")), 1);
  EXPECT_EQ(parse_cfs_quota("400000", "0"), std::nullopt);
  EXPECT_EQ(parse_cfs_quota("400000", ""), std::nullopt);
  EXPECT_EQ(parse_cfs_quota("lots", "100000"), std::nullopt);
}

TEST(SystemCpu, TightestV2AncestorAndTheAffinityMask) {
  TempDir root("cpu");
  put(root / "proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  const fs::path cg = root / "sys/fs/cgroup";
  put(cg / "kubepods/pod1/ctr/cpu.max", "max 100000\n");  // the container: no limit of its own
  put(cg / "kubepods/pod1/cpu.max", "300000 100000\n");   // the pod: 3 CPUs, the tightest
  put(cg / "kubepods/cpu.max", "1600000 100000\n");       // all pods: 16
  CpuAvailable c = read_cpu_available(root.path(), 64);
  EXPECT_EQ(c.count, 3);
  EXPECT_EQ(c.affinity, 64);
  ASSERT_TRUE(c.quota.has_value());
  EXPECT_EQ(c.quota->quota_us, 300000);
  EXPECT_EQ(c.cgroup_dir, "sys/fs/cgroup/kubepods/pod1");
  EXPECT_EQ(c.source, "cgroup v2 cpu.max 300000/100000 of /sys/fs/cgroup/kubepods/pod1");
  EXPECT_NE(cpu_plan_text(c).find("64 in the affinity mask"), std::string::npos) << cpu_plan_text(c);

  // A smaller mask (a cpuset, the static CPU manager) wins over the quota.
  c = read_cpu_available(root.path(), 2);
  EXPECT_EQ(c.count, 2);
  EXPECT_NE(c.source.find("the affinity mask"), std::string::npos) << c.source;
  EXPECT_NE(c.source.find("allows 3"), std::string::npos) << c.source;

  // Equal: either way 3 threads.
  EXPECT_EQ(read_cpu_available(root.path(), 3).count, 3);

  // A fractional quota of the container, tighter than its pod's: 1.5 CPUs -> 2 threads; compared as a
  // fraction, so 150000/100000 beats an ancestor's 80000/50000 (1.6) although its quota_us is larger.
  put(cg / "kubepods/pod1/ctr/cpu.max", "150000 100000\n");
  put(cg / "kubepods/cpu.max", "80000 50000\n");
  c = read_cpu_available(root.path(), 64);
  EXPECT_EQ(c.count, 2);
  EXPECT_EQ(c.cgroup_dir, "sys/fs/cgroup/kubepods/pod1/ctr");

  // No mask known: the online CPUs are the ceiling even for a larger quota.
  put(cg / "kubepods/pod1/ctr/cpu.max", "max 100000\n");
  put(cg / "kubepods/pod1/cpu.max", "max 100000\n");
  const int online = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  put(cg / "kubepods/cpu.max", fmt::format("{} 100000\n", (online + 5) * 100000));
  c = read_cpu_available(root.path(), std::nullopt);
  EXPECT_EQ(c.count, online);
  EXPECT_EQ(c.online, online);
  EXPECT_NE(c.source.find("online CPUs"), std::string::npos) << c.source;
}

TEST(SystemCpu, CgroupV1CpuHierarchyMaxAndMissingOrMalformedFiles) {
  TempDir root("cpu");
  put(root / "proc/self/cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:cpuacct:/\n0::/\n");
  // Mounted as "cpu,cpuacct" only (no "cpu" link): found all the same.
  const fs::path cg = root / "sys/fs/cgroup/cpu,cpuacct";
  put(cg / "docker/abc/cpu.cfs_quota_us", "-1\n");
  put(cg / "docker/abc/cpu.cfs_period_us", "100000\n");
  put(cg / "docker/cpu.cfs_quota_us", "250000\n");  // the tighter ancestor: 2.5 -> 3
  put(cg / "docker/cpu.cfs_period_us", "100000\n");
  put(cg / "cpu.cfs_quota_us", "-1\n");
  put(cg / "cpu.cfs_period_us", "100000\n");
  CpuAvailable c = read_cpu_available(root.path(), 8);
  EXPECT_EQ(c.count, 3);
  EXPECT_EQ(c.cgroup_dir, "sys/fs/cgroup/cpu,cpuacct/docker");
  EXPECT_NE(c.source.find("cgroup v1"), std::string::npos) << c.source;

  // A quota without its period, and a garbled one, are no limit, not a guess.
  fs::remove(cg / "docker/cpu.cfs_period_us");
  EXPECT_EQ(read_cpu_available(root.path(), 8).count, 8);
  put(cg / "docker/cpu.cfs_period_us", "100000\n");
  put(cg / "docker/cpu.cfs_quota_us", "2.5 CPUs\n");
  c = read_cpu_available(root.path(), 8);
  EXPECT_EQ(c.count, 8);
  EXPECT_EQ(c.quota, std::nullopt);
  EXPECT_EQ(c.source, "the affinity mask, no cgroup CPU quota");

  // Preferring "cpu" when it is a folder of its own.
  put(root / "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us", "100000\n");
  put(root / "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(read_cpu_available(root.path(), 8).count, 1);

  // v2 says "max" all the way up and a garbled cpu.max: no quota; nothing at all: the mask alone.
  TempDir v2("cpu");
  put(v2 / "proc/self/cgroup", "0::/a/b\n");
  put(v2 / "sys/fs/cgroup/a/b/cpu.max", "max 100000\n");
  put(v2 / "sys/fs/cgroup/a/cpu.max", "2 CPUs\n");
  EXPECT_EQ(read_cpu_available(v2.path(), 5).count, 5);
  EXPECT_EQ(read_cpu_available(v2.path(), 5).quota, std::nullopt);
  TempDir empty("cpu");
  EXPECT_EQ(read_cpu_available(empty.path(), 5).count, 5);
  EXPECT_EQ(read_cpu_available(empty.path(), 0).count, read_cpu_available(empty.path(), std::nullopt).count);
  EXPECT_GE(read_cpu_available(empty.path(), std::nullopt).count, 1);
}

// CPUs in a list like "0-3,8,10-11" (Cpus_allowed_list of /proc/self/status).
int count_cpu_list(std::string_view list) {
  int n = 0;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view part = list.substr(0, comma);
    size_t dash = part.find('-');
    const int lo = std::stoi(std::string(part.substr(0, dash)));
    const int hi = dash == std::string_view::npos ? lo : std::stoi(std::string(part.substr(dash + 1)));
    n += hi - lo + 1;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return n;
}

TEST(SystemCpu, AffinityIsThisProcessMaskAsProcSaysIt) {
  const std::string status = test::read_file("/proc/self/status");
  const size_t at = status.find("Cpus_allowed_list:");
  ASSERT_NE(at, std::string::npos) << "no Cpus_allowed_list in /proc/self/status";
  std::string list = status.substr(at + 18, status.find('\n', at) - at - 18);
  list.erase(0, list.find_first_not_of(" \t"));
  const int expected = count_cpu_list(list);
  ASSERT_GE(expected, 1) << list;
  EXPECT_EQ(affinity_cpu_count(), expected) << "Cpus_allowed_list: " << list;
  CpuAvailable c = read_cpu_available();
  EXPECT_EQ(c.affinity, expected);
  EXPECT_GE(c.count, 1);
  EXPECT_LE(c.count, expected);
}

TEST(SystemMemory, MemAvailableAloneWhenThereIsNoCgroupLimit) {
  TempDir root("mem");
  put(root / "proc/meminfo", kMeminfo);
  put(root / "proc/self/cgroup", "0::/\n");
  put(root / "sys/fs/cgroup/memory.max", "max\n");  // never at the real root, but "max" anywhere is no limit
  MemoryAvailable m = read_memory_available(root.path());
  EXPECT_EQ(m.bytes, 20000000LL * 1024);
  EXPECT_EQ(m.cgroup_headroom, std::nullopt);
  EXPECT_EQ(m.source, "MemAvailable in /proc/meminfo");
}

TEST(SystemMemory, TightestCgroupV2AncestorWinsAndInactiveFileCountsAsFree) {
  TempDir root("mem");
  put(root / "proc/meminfo", kMeminfo);
  put(root / "proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  const fs::path cg = root / "sys/fs/cgroup";
  // The container: 8 GiB limit, 3 GiB charged of which 1 GiB inactive page cache -> 6 GiB of headroom.
  put(cg / "kubepods/pod1/ctr/memory.max", "8589934592\n");
  put(cg / "kubepods/pod1/ctr/memory.current", "3221225472\n");
  put(cg / "kubepods/pod1/ctr/memory.stat", "anon 2147483648\ninactive_file 1073741824\n");
  // The pod: 10 GiB limit, 5 GiB used -> 5 GiB of headroom: tighter.
  put(cg / "kubepods/pod1/memory.max", "10737418240\n");
  put(cg / "kubepods/pod1/memory.current", "5368709120\n");
  // kubepods: no limit.
  put(cg / "kubepods/memory.max", "max\n");
  MemoryAvailable m = read_memory_available(root.path());
  EXPECT_EQ(m.cgroup_headroom, 5368709120LL);
  EXPECT_EQ(m.cgroup_dir, "sys/fs/cgroup/kubepods/pod1");
  EXPECT_EQ(m.bytes, 5368709120LL);  // < MemAvailable (19 GiB)
  EXPECT_NE(m.source.find("cgroup v2"), std::string::npos) << m.source;

  // Over its limit (usage above max): no headroom at all, never negative.
  put(cg / "kubepods/pod1/ctr/memory.current", "9663676416\n");
  put(cg / "kubepods/pod1/ctr/memory.stat", "inactive_file 0\n");
  EXPECT_EQ(read_memory_available(root.path()).bytes, 0);
}

TEST(SystemMemory, CgroupV1HierarchyAndMissingFiles) {
  TempDir root("mem");
  put(root / "proc/meminfo", kMeminfo);
  put(root / "proc/self/cgroup", "4:memory:/docker/abc\n1:cpu:/\n0::/\n");
  const fs::path cg = root / "sys/fs/cgroup/memory";
  put(cg / "docker/abc/memory.limit_in_bytes", "4294967296\n");
  put(cg / "docker/abc/memory.usage_in_bytes", "1073741824\n");
  put(cg / "docker/abc/memory.stat", "inactive_file 1\ntotal_inactive_file 536870912\n");
  put(cg / "memory.limit_in_bytes", "9223372036854771712\n");
  MemoryAvailable m = read_memory_available(root.path());
  EXPECT_EQ(m.bytes, 4294967296LL - (1073741824LL - 536870912LL));
  EXPECT_NE(m.source.find("cgroup v1"), std::string::npos) << m.source;

  // A limit file without usage: the limit itself is the headroom.
  fs::remove(cg / "docker/abc/memory.usage_in_bytes");
  EXPECT_EQ(read_memory_available(root.path()).bytes, 4294967296LL);

  // Nothing readable at all: unknown, not zero.
  TempDir empty("mem");
  MemoryAvailable none = read_memory_available(empty.path());
  EXPECT_EQ(none.bytes, std::nullopt);
  EXPECT_NE(none.source.find("unknown"), std::string::npos);

  // A garbled meminfo and a garbled limit are ignored, not trusted.
  TempDir junk("mem");
  put(junk / "proc/meminfo", "MemAvailable: -5 kB\n");
  put(junk / "proc/self/cgroup", "0::/\n");
  put(junk / "sys/fs/cgroup/memory.max", "12 GiB\n");
  EXPECT_EQ(read_memory_available(junk.path()).bytes, std::nullopt);
}

}  // namespace
}  // namespace lp::io
