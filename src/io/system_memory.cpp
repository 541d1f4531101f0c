#include "io/system_memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "core/thread_pool.h"

namespace lp::io {

namespace fs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A non-negative decimal integer filling all of `s`.
std::optional<int64_t> parse_uint(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// The lines of `text`, without their newlines.
std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

// The whole text of a small kernel file (their stat size is 0, so read to the end); nullopt when unreadable.
std::optional<std::string> slurp(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return std::nullopt;
  return ss.str();
}

// The folders from `base / rel` up to `base` itself, innermost first.
std::vector<fs::path> cgroup_chain(const fs::path& base, const std::string& rel) {
  std::vector<fs::path> out;
  fs::path r = fs::path(rel).relative_path().lexically_normal();
  while (true) {
    if (r.empty() || r == ".") {
      out.push_back(base);
      break;
    }
    out.push_back(base / r);
    r = r.parent_path();
  }
  return out;
}

// Whether a v1 controller list ("cpu,cpuacct") names `name` exactly ("cpuacct" is not "cpu").
bool has_controller(std::string_view ctrls, std::string_view name) {
  while (true) {
    size_t c = ctrls.find(',');
    if (ctrls.substr(0, c) == name) return true;
    if (c == std::string_view::npos) return false;
    ctrls.remove_prefix(c + 1);
  }
}

// A signed decimal integer filling all of `s` (cfs_quota_us says -1 for "no limit").
std::optional<int64_t> parse_int(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// quota / period as a CpuQuota, or nullopt unless both are positive.
std::optional<CpuQuota> quota_of(std::optional<int64_t> quota, std::optional<int64_t> period) {
  if (!quota || !period || *quota <= 0 || *period <= 0) return std::nullopt;
  return CpuQuota{*quota, *period};
}

// The tightest of the values `read` finds along `chain` (by `less`), and the folder it came from: a parent's
// limit caps all its children together, so the smallest one anywhere on the way up applies.
template <class T>
struct Tightest {
  T value;
  fs::path dir;
};
template <class T, class Read, class Less>
std::optional<Tightest<T>> tightest(const std::vector<fs::path>& chain, Read read, Less less) {
  std::optional<Tightest<T>> best;
  for (const fs::path& dir : chain)
    if (std::optional<T> v = read(dir); v && (!best || less(*v, best->value))) best = Tightest<T>{*v, dir};
  return best;
}

// The tightest memory headroom along `chain`: limit − (usage − inactive_file), clamped at 0.
std::optional<Tightest<int64_t>> tightest_headroom(const std::vector<fs::path>& chain, const char* limit_file,
                                                   const char* usage_file, const char* inactive_key) {
  auto headroom = [&](const fs::path& dir) -> std::optional<int64_t> {
    auto lt = slurp(dir / limit_file);
    auto limit = lt ? parse_cgroup_limit(*lt) : std::nullopt;
    if (!limit) return std::nullopt;
    int64_t used = 0;
    if (auto ut = slurp(dir / usage_file)) used = parse_cgroup_bytes(*ut).value_or(0);
    if (auto st = slurp(dir / "memory.stat"))
      used -= std::min(used, parse_memory_stat(*st, inactive_key).value_or(0));
    return std::max<int64_t>(0, *limit - used);
  };
  return tightest<int64_t>(chain, headroom, std::less<int64_t>());
}

// The smallest CPU quota along `chain`, quota / period compared as fractions (in 128 bits: no product of two
// int64 overflows).
template <class Read>
std::optional<Tightest<CpuQuota>> tightest_quota(const std::vector<fs::path>& chain, Read read) {
  return tightest<CpuQuota>(chain, read, [](const CpuQuota& a, const CpuQuota& b) {
    return static_cast<__int128>(a.quota_us) * b.period_us < static_cast<__int128>(b.quota_us) * a.period_us;
  });
}

}  // namespace

std::optional<int64_t> parse_meminfo_available(std::string_view meminfo) {
  for (std::string_view line : lines(meminfo)) {
    if (!line.starts_with("MemAvailable:")) continue;
    line.remove_prefix(13);
    line = trim(line);
    int64_t mul = 1;
    if (line.ends_with("kB")) {
      mul = 1024;
      line.remove_suffix(2);
    }
    auto v = parse_uint(line);
    if (!v || *v > INT64_MAX / mul) return std::nullopt;
    return *v * mul;
  }
  return std::nullopt;
}

std::optional<int64_t> parse_cgroup_limit(std::string_view text) {
  text = trim(text);
  if (text == "max") return std::nullopt;
  auto v = parse_uint(text);
  if (!v || *v >= (int64_t{1} << 62)) return std::nullopt;
  return v;
}

std::optional<int64_t> parse_cgroup_bytes(std::string_view text) {
  return parse_uint(text);
}

std::optional<int64_t> parse_memory_stat(std::string_view stat, std::string_view key) {
  for (std::string_view line : lines(stat)) {
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ' ')
      return parse_uint(line.substr(key.size() + 1));
  }
  return std::nullopt;
}

SelfCgroup parse_proc_self_cgroup(std::string_view text) {
  SelfCgroup out;
  for (std::string_view line : lines(text)) {
    // hierarchy-ID:controller-list:cgroup-path (the path may itself hold ':')
    size_t a = line.find(':');
    if (a == std::string_view::npos) continue;
    size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    std::string_view id = line.substr(0, a), ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (id == "0" && ctrls.empty()) {
      out.v2_path = std::string(path);
      continue;
    }
    if (has_controller(ctrls, "memory")) out.v1_memory_path = std::string(path);
    if (has_controller(ctrls, "cpu")) out.v1_cpu_path = std::string(path);
  }
  return out;
}

MemoryAvailable read_memory_available(const fs::path& root) {
  MemoryAvailable m;
  if (auto t = slurp(root / "proc/meminfo")) m.meminfo_available = parse_meminfo_available(*t);
  SelfCgroup self;
  if (auto t = slurp(root / "proc/self/cgroup")) self = parse_proc_self_cgroup(*t);
  const fs::path cg = root / "sys/fs/cgroup";
  // v2 (unified: memory.max at the mount root's tree) first; v1's memory hierarchy when the v2 tree has no
  // memory limits (hybrid hosts mount v2 without the memory controller).
  std::optional<Tightest<int64_t>> h;
  std::string kind;
  if (!self.v2_path.empty()) {
    h = tightest_headroom(cgroup_chain(cg, self.v2_path), "memory.max", "memory.current", "inactive_file");
    kind = "cgroup v2 memory.max";
  }
  if (!h && !self.v1_memory_path.empty()) {
    h = tightest_headroom(cgroup_chain(cg / "memory", self.v1_memory_path), "memory.limit_in_bytes",
                          "memory.usage_in_bytes", "total_inactive_file");
    kind = "cgroup v1 memory.limit_in_bytes";
  }
  if (h) {
    m.cgroup_headroom = h->value;
    m.cgroup_dir = h->dir.lexically_relative(root).string();
  }
  if (m.cgroup_headroom && (!m.meminfo_available || *m.cgroup_headroom < *m.meminfo_available)) {
    m.bytes = m.cgroup_headroom;
    m.source = fmt::format("{} of /{} minus its working set", kind, m.cgroup_dir);
  } else if (m.meminfo_available) {
    m.bytes = m.meminfo_available;
    m.source = "MemAvailable in /proc/meminfo";
  } else {
    m.source = "unknown (no /proc/meminfo, no cgroup limit)";
  }
  return m;
}

int CpuQuota::cpus() const {
  if (quota_us <= 0 || period_us <= 0) return 1;
  const int64_t whole = quota_us / period_us + (quota_us % period_us != 0 ? 1 : 0);
  return static_cast<int>(std::clamp<int64_t>(whole, 1, INT32_MAX));
}

std::optional<CpuQuota> parse_cpu_max(std::string_view text) {
  text = trim(text);
  const size_t sp = text.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  const std::string_view quota = text.substr(0, sp), period = text.substr(sp + 1);
  if (quota == "max") return std::nullopt;
  return quota_of(parse_uint(quota), parse_uint(period));
}

std::optional<CpuQuota> parse_cfs_quota(std::string_view quota_text, std::string_view period_text) {
  return quota_of(parse_int(quota_text), parse_uint(period_text));  // -1 (no limit) fails quota > 0
}

CpuAvailable read_cpu_available(const fs::path& root, std::optional<int> affinity) {
  CpuAvailable c;
  c.affinity = affinity && *affinity > 0 ? affinity : std::nullopt;
  c.online = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  SelfCgroup self;
  if (auto t = slurp(root / "proc/self/cgroup")) self = parse_proc_self_cgroup(*t);
  const fs::path cg = root / "sys/fs/cgroup";
  // As for memory: the v2 tree first, then v1's cpu hierarchy (hybrid hosts mount v2 without controllers).
  std::optional<Tightest<CpuQuota>> q;
  std::string kind;
  if (!self.v2_path.empty()) {
    q = tightest_quota(cgroup_chain(cg, self.v2_path), [](const fs::path& dir) -> std::optional<CpuQuota> {
      auto t = slurp(dir / "cpu.max");
      return t ? parse_cpu_max(*t) : std::nullopt;
    });
    kind = "cgroup v2 cpu.max";
  }
  if (!q && !self.v1_cpu_path.empty()) {
    // The cpu controller is mounted as "cpu,cpuacct" with "cpu" a link to it, or alone as "cpu".
    fs::path base = cg / "cpu";
    std::error_code ec;
    if (!fs::is_directory(base, ec)) base = cg / "cpu,cpuacct";
    q = tightest_quota(cgroup_chain(base, self.v1_cpu_path),
                       [](const fs::path& dir) -> std::optional<CpuQuota> {
                         auto qt = slurp(dir / "cpu.cfs_quota_us");
                         auto pt = slurp(dir / "cpu.cfs_period_us");
                         return qt && pt ? parse_cfs_quota(*qt, *pt) : std::nullopt;
                       });
    kind = "cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us";
  }
  if (q) {
    c.quota = q->value;
    c.cgroup_dir = q->dir.lexically_relative(root).string();
  }
  // Without a mask, the online CPUs are the ceiling (a quota can exceed them).
  const int mask = c.affinity.value_or(c.online);
  const char* mask_name = c.affinity ? "the affinity mask" : "online CPUs";
  const std::string quota_text =
      c.quota ? fmt::format("{} {}/{} of /{}", kind, c.quota->quota_us, c.quota->period_us, c.cgroup_dir)
              : "";
  if (c.quota && c.quota->cpus() < mask) {
    c.count = c.quota->cpus();
    c.source = quota_text;
  } else {
    c.count = std::max(1, mask);
    c.source = c.quota ? fmt::format("{} ({} allows {})", mask_name, quota_text, c.quota->cpus())
                       : fmt::format("{}, no cgroup CPU quota", mask_name);
  }
  return c;
}

CpuAvailable read_cpu_available() {
  return read_cpu_available("/", affinity_cpu_count());
}

std::string cpu_plan_text(const CpuAvailable& c) {
  return fmt::format("{}; {} in the affinity mask, {} online", c.source,
                     c.affinity ? std::to_string(*c.affinity) : std::string("unknown"), c.online);
}

}  // namespace lp::io
