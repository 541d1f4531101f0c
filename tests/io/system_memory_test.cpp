// Reading how much memory this process may take, from fixture text and fixture trees laid out as the kernel
// does: MemAvailable alone; a cgroup v2 limit tighter than it (nested: the tightest ancestor wins; inactive
// page cache counts as free); "max" and v1's huge "no limit"; a v1 hierarchy; missing and malformed files
// meaning "no limit from there".
#include "io/system_memory.h"

#include <gtest/gtest.h>

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
