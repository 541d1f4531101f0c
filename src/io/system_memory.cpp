#include "io/system_memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

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

struct Headroom {
  int64_t bytes;
  fs::path dir;
};

// The tightest headroom over `chain`: limit − (usage − inactive_file), clamped at 0.
std::optional<Headroom> tightest(const std::vector<fs::path>& chain, const char* limit_file,
                                 const char* usage_file, const char* inactive_key) {
  std::optional<Headroom> best;
  for (const fs::path& dir : chain) {
    auto lt = slurp(dir / limit_file);
    if (!lt) continue;
    auto limit = parse_cgroup_limit(*lt);
    if (!limit) continue;
    int64_t used = 0;
    if (auto ut = slurp(dir / usage_file)) used = parse_cgroup_bytes(*ut).value_or(0);
    if (auto st = slurp(dir / "memory.stat"))
      used -= std::min(used, parse_memory_stat(*st, inactive_key).value_or(0));
    const int64_t room = std::max<int64_t>(0, *limit - used);
    if (!best || room < best->bytes) best = Headroom{room, dir};
  }
  return best;
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
    while (!ctrls.empty()) {
      size_t c = ctrls.find(',');
      if (ctrls.substr(0, c) == "memory") {
        out.v1_memory_path = std::string(path);
        break;
      }
      if (c == std::string_view::npos) break;
      ctrls.remove_prefix(c + 1);
    }
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
  std::optional<Headroom> h;
  std::string kind;
  if (!self.v2_path.empty()) {
    h = tightest(cgroup_chain(cg, self.v2_path), "memory.max", "memory.current", "inactive_file");
    kind = "cgroup v2 memory.max";
  }
  if (!h && !self.v1_memory_path.empty()) {
    h = tightest(cgroup_chain(cg / "memory", self.v1_memory_path), "memory.limit_in_bytes",
                 "memory.usage_in_bytes", "total_inactive_file");
    kind = "cgroup v1 memory.limit_in_bytes";
  }
  if (h) {
    m.cgroup_headroom = h->bytes;
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

}  // namespace lp::io
