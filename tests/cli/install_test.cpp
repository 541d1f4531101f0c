// Packaging from outside: `cmake --install` of this build tree into a temporary prefix (and under DESTDIR)
// gives a binary that runs from there; one version in CMakeLists.txt, `--version`, the Dockerfile's label and
// CHANGELOG.md; the image's run-time stage installs a package for every library the binary links, runs as a
// numeric non-root user and its HEALTHCHECK really probes /health; the systemd unit verifies and gives the
// SIGTERM drain more time than the example env file's --shutdown-timeout.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "util/test_util.h"

namespace lp::test {
namespace {

namespace fs = std::filesystem;

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}  // our paths hold no quote

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// project(loraplex VERSION x.y.z) of the top CMakeLists, read from the source.
std::string declared_version() {
  std::smatch m;
  const std::string text = read_file(source_dir() / "CMakeLists.txt");
  if (!std::regex_search(text, m, std::regex(R"(project\(loraplex\s+VERSION\s+([0-9]+\.[0-9]+\.[0-9]+)\b)")))
    return "";
  return m[1];
}

// Installs this build tree under `prefix` (staged under `destdir` when given); returns cmake's output.
std::string install(const fs::path& prefix, const fs::path& destdir = {}) {
  std::string out;
  std::string cmd = "cmake --install " + q(binary_dir()) + " --prefix " + q(prefix) + " 2>&1";
  if (!destdir.empty()) cmd = "DESTDIR=" + q(destdir) + " " + cmd;
  EXPECT_EQ(0, run_command(cmd, &out)) << cmd << "\n" << out;
  return out;
}

// Every regular file under `root`, as paths relative to it.
std::set<std::string> files_under(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), root).string());
  return out;
}

// The "Key=Value" lines of one [Section] of a systemd unit (or of a whole env file when section is empty).
std::multimap<std::string, std::string> ini_section(const std::string& text, const std::string& section) {
  std::multimap<std::string, std::string> out;
  std::istringstream in(text);
  std::string cur;
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      cur = line.substr(1, line.find(']') - 1);
      continue;
    }
    const size_t eq = line.find('=');
    if (eq != std::string::npos && cur == section)
      out.emplace(trim(line.substr(0, eq)), trim(line.substr(eq + 1)));
  }
  return out;
}

std::string one(const std::multimap<std::string, std::string>& m, const std::string& key) {
  auto [a, b] = m.equal_range(key);
  EXPECT_EQ(std::distance(a, b), 1) << key;
  return a == b ? "" : a->second;
}

// A systemd time span ("90", "90s", "1min 30s", "2min") in seconds; -1 if it is none of these.
double timespan_seconds(const std::string& s) {
  static const std::map<std::string, double> unit = {{"", 1}, {"s", 1}, {"sec", 1}, {"min", 60}, {"m", 60}};
  double total = 0;
  std::smatch m;
  std::string rest = s;
  if (trim(rest).empty()) return -1;
  while (std::regex_search(rest, m, std::regex(R"(^\s*([0-9.]+)\s*([a-z]*))"))) {
    auto u = unit.find(m[2]);
    if (u == unit.end()) return -1;
    total += std::stod(m[1]) * u->second;
    rest = m.suffix();
  }
  return trim(rest).empty() ? total : -1;
}

// The Dockerfile as instructions (continuation lines joined, comments dropped), grouped by stage (FROM).
struct Instr {
  std::string op, args;
};
std::vector<std::vector<Instr>> dockerfile_stages() {
  std::istringstream in(read_file(source_dir() / "Dockerfile"));
  std::vector<std::vector<Instr>> stages;
  std::string pending;
  for (std::string line; std::getline(in, line);) {
    if (pending.empty() && trim(line).rfind('#', 0) == 0) continue;
    if (!line.empty() && line.back() == '\\') {
      pending += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    std::string full = trim(pending + line);
    pending.clear();
    if (full.empty()) continue;
    const size_t sp = full.find_first_of(" \t");
    Instr ins{full.substr(0, sp), sp == std::string::npos ? "" : trim(full.substr(sp))};
    for (auto& c : ins.op) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (ins.op == "FROM") stages.emplace_back();
    if (!stages.empty()) stages.back().push_back(ins);
  }
  return stages;
}

std::vector<std::string> args_of(const std::vector<Instr>& stage, const std::string& op) {
  std::vector<std::string> out;
  for (const auto& i : stage)
    if (i.op == op) out.push_back(i.args);
  return out;
}

// The Debian package owning a file ("" if none): ldd prints /lib/... where dpkg may record /usr/lib/... (the
// merged /usr), so both spellings are asked.
std::string owning_package(const std::string& path) {
  std::vector<std::string> tries = {path};
  if (path.rfind("/usr/", 0) == 0)
    tries.push_back(path.substr(4));
  else
    tries.push_back("/usr" + path);
  for (const auto& p : tries) {
    std::string out;
    if (run_command("dpkg -S " + q(p) + " 2>/dev/null", &out) == 0 && !out.empty()) {
      std::string pkg = out.substr(0, out.find(':'));  // "libfmt9:amd64: /usr/lib/..."
      return pkg;
    }
  }
  return "";
}

TEST(Install, PrefixInstallRunsWithoutTheBuildTree) {
  TempDir tmp("install");
  const fs::path prefix = tmp / "usr";
  install(prefix);
  const std::set<std::string> want = {"bin/loraplex",
                                      "lib/systemd/system/loraplex.service",
                                      "share/doc/loraplex/LICENSE",
                                      "share/doc/loraplex/README.md",
                                      "share/doc/loraplex/CHANGELOG.md",
                                      "share/doc/loraplex/loraplex.env",
                                      "share/doc/loraplex/docs/api.md",
                                      "share/doc/loraplex/docs/architecture.md",
                                      "share/doc/loraplex/docs/deploy.md"};
  const std::set<std::string> got = files_under(prefix);
  for (const auto& f : want) EXPECT_TRUE(got.count(f)) << f << " not installed";
  for (const auto& f : got)  // no test, bench or helper executable, nothing outside the three places
    EXPECT_TRUE(f == "bin/loraplex" || f.rfind("share/doc/loraplex/", 0) == 0 ||
                f.rfind("lib/systemd/", 0) == 0)
        << f << " should not be installed";
  EXPECT_EQ(read_file(prefix / "share/doc/loraplex/LICENSE"), read_file(source_dir() / "LICENSE"));
  for (const auto& d : fs::directory_iterator(source_dir() / "docs"))
    EXPECT_TRUE(got.count("share/doc/loraplex/docs/" + d.path().filename().string())) << d.path();

  // Nothing points back into the build or source tree: no RPATH/RUNPATH, every library found elsewhere.
  const fs::path bin = prefix / "bin/loraplex";
  std::string out;
  ASSERT_EQ(0, run_command("readelf -d " + q(bin) + " 2>&1", &out)) << out;
  EXPECT_EQ(out.find("RPATH"), std::string::npos) << out;
  EXPECT_EQ(out.find("RUNPATH"), std::string::npos) << out;
  ASSERT_EQ(0, run_command("ldd " + q(bin) + " 2>&1", &out)) << out;
  EXPECT_EQ(out.find("not found"), std::string::npos) << out;
  EXPECT_EQ(out.find(binary_dir().string()), std::string::npos) << out;
  EXPECT_EQ(out.find(source_dir().string()), std::string::npos) << out;

  // The installed copy runs: its version, and a model written and run by it gives what the build's binary
  // gives.
  ASSERT_EQ(0, run_command(q(bin) + " --version 2>&1", &out)) << out;
  EXPECT_EQ(trim(out), "loraplex " + declared_version());
  ASSERT_EQ(0, run_command(q(bin) + " demo-model " + q(tmp / "m") + " --shape tiny --seed 3 2>&1", &out))
      << out;
  std::string installed, built;
  const std::string gen =
      " generate --model " + q(tmp / "m") + " --ids 5,6,7 -n 3 2>/dev/null | grep tokens:";
  ASSERT_EQ(0, run_command("cd " + q(tmp.path()) + " && " + q(bin) + gen, &installed));
  ASSERT_EQ(0, run_command(q(loraplex_binary()) + gen, &built));
  EXPECT_EQ(words(installed).size(), 4u) << installed;  // "tokens:" and 3 ids
  EXPECT_EQ(installed, built);
}

TEST(Install, DestdirStagesAndTheUnitNamesThePrefix) {
  TempDir tmp("destdir");
  // A prefix that must stay untouched: only DESTDIR/prefix may be written.
  const fs::path prefix = "/opt/loraplex-install-test-" + std::to_string(::getpid());
  const fs::path stage = tmp / "stage";
  install(prefix, stage);
  EXPECT_FALSE(fs::exists(prefix)) << "installed outside DESTDIR";
  const fs::path staged = stage / prefix.relative_path();
  ASSERT_TRUE(fs::exists(staged / "bin/loraplex"));
  std::string out;
  ASSERT_EQ(0, run_command(q(staged / "bin/loraplex") + " --version 2>&1", &out)) << out;
  EXPECT_EQ(trim(out), "loraplex " + declared_version());
  // The staged unit runs the binary where it will be installed, not where it was staged.
  const auto service = ini_section(read_file(staged / "lib/systemd/system/loraplex.service"), "Service");
  EXPECT_EQ(words(one(service, "ExecStart")).at(0), (prefix / "bin/loraplex").string());
  EXPECT_TRUE(fs::exists(staged / "share/doc/loraplex/CHANGELOG.md"));
}

TEST(Packaging, OneVersionEverywhere) {
  const std::string v = declared_version();
  ASSERT_FALSE(v.empty()) << "no project(loraplex VERSION x.y.z) in CMakeLists.txt";
  std::string out;
  ASSERT_EQ(0, run_command(q(loraplex_binary()) + " --version 2>&1", &out)) << out;
  EXPECT_EQ(trim(out), "loraplex " + v);

  std::smatch m;
  const std::string docker = read_file(source_dir() / "Dockerfile");
  ASSERT_TRUE(std::regex_search(docker, m, std::regex(R"(org\.opencontainers\.image\.version="([^"]*)\")")));
  EXPECT_EQ(m[1], v) << "Dockerfile LABEL org.opencontainers.image.version";

  // The newest release: the first "## [x.y.z]" heading of CHANGELOG.md ([Unreleased] is not one).
  const std::string changelog = read_file(source_dir() / "CHANGELOG.md");
  ASSERT_TRUE(std::regex_search(changelog, m,
                                std::regex(R"((^|\n)## \[([0-9]+\.[0-9]+\.[0-9]+)\] - \d{4}-\d\d-\d\d)")));
  EXPECT_EQ(m[2], v) << "CHANGELOG.md's newest release";
}

TEST(Dockerfile, RuntimeStageHasEveryLinkedLibraryAndNoRoot) {
  const auto stages = dockerfile_stages();
  ASSERT_EQ(stages.size(), 2u) << "a build stage and a run-time stage";
  EXPECT_EQ(words(stages[0][0].args).at(0), "debian:12");
  EXPECT_EQ(words(stages[1][0].args).at(0), "debian:12-slim");
  std::string build_runs;
  for (const auto& r : args_of(stages[0], "RUN")) build_runs += r + "\n";
  EXPECT_NE(build_runs.find("scripts/deps.sh"), std::string::npos) << "the builder runs scripts/deps.sh";
  EXPECT_NE(build_runs.find("make build"), std::string::npos) << "the builder runs `make build`";

  // Packages the run-time stage installs.
  std::set<std::string> installed;
  std::string runtime_runs;
  for (const auto& r : args_of(stages[1], "RUN")) {
    runtime_runs += r + "\n";
    const auto w = words(r);
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      if (w[i] != "apt-get" || std::find(w.begin() + i, w.end(), "install") == w.end()) continue;
      size_t j = std::find(w.begin() + i, w.end(), "install") - w.begin() + 1;
      for (; j < w.size() && w[j] != "&&" && w[j] != ";" && w[j] != "\\"; ++j)
        if (w[j][0] != '-') installed.insert(w[j]);
    }
  }
  EXPECT_FALSE(installed.empty()) << "no apt-get install in the run-time stage";

  // What debian:12-slim already holds: the C and C++ runtimes, which apt (in every Debian image) depends on.
  const std::set<std::string> base = {"libc6", "libgcc-s1", "libstdc++6"};
  std::string out;
  if (run_command("command -v dpkg >/dev/null && command -v ldd >/dev/null") != 0) {
    LP_FIXTURE_MISSING() << "dpkg / ldd missing: not a Debian host";
  }
  ASSERT_EQ(0, run_command("dpkg-query -W -f='${Depends}' apt", &out));
  std::set<std::string> apt_depends;  // "libc6 (>= 2.34), gpgv | gpgv2, ...": the package names
  for (const auto& w : words(std::regex_replace(out, std::regex(R"(\([^)]*\)|[,|])"), " ")))
    apt_depends.insert(w);
  for (const auto& p : base) EXPECT_TRUE(apt_depends.count(p)) << p << " is not a dependency of apt: " << out;

  ASSERT_EQ(0, run_command("ldd " + q(loraplex_binary()) + " 2>&1", &out)) << out;
  std::istringstream lines(out);
  int libs = 0;
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, std::regex(R"((/\S+) \(0x)"))) continue;  // linux-vdso has no file
    const std::string path = m[1];
    const std::string pkg = owning_package(path);
    ASSERT_FALSE(pkg.empty()) << path << " belongs to no Debian package";
#ifdef LP_SANITIZED_BUILD
    // The image is built from the release tree; the sanitizer runtimes are this tree's own.
    if (std::regex_match(pkg, std::regex("lib(a|ub|t)san[0-9]+"))) continue;
#endif
    ++libs;
    EXPECT_TRUE(installed.count(pkg) || base.count(pkg))
        << path << " comes from " << pkg << ", which the run-time stage does not install";
  }
  EXPECT_GE(libs, 4) << out;

  // A numeric non-root user (Kubernetes' runAsNonRoot can check only a number), created with that uid.
  const auto users = args_of(stages[1], "USER");
  ASSERT_EQ(users.size(), 1u);
  EXPECT_EQ(users[0], "10001:10001");
  EXPECT_TRUE(
      std::regex_search(runtime_runs, std::regex(R"(useradd\b[^\n]*--uid 10001\b[^\n]*\bloraplex\b)")))
      << runtime_runs;
  EXPECT_TRUE(
      std::regex_search(runtime_runs, std::regex(R"(groupadd\b[^\n]*--gid 10001\b[^\n]*\bloraplex\b)")))
      << runtime_runs;

  // Where the Kubernetes manifests expect things: the binary, the entry point, the port, the model path.
  std::string copies;
  for (const auto& c : args_of(stages[1], "COPY")) copies += c + "\n";
  EXPECT_NE(copies.find(" /usr/local/bin/loraplex\n"), std::string::npos) << copies;
  EXPECT_EQ(args_of(stages[1], "ENTRYPOINT"), std::vector<std::string>{R"(["loraplex"])"});
  EXPECT_EQ(args_of(stages[1], "EXPOSE"), std::vector<std::string>{"8000"});
  ASSERT_EQ(args_of(stages[1], "CMD").size(), 1u);
  EXPECT_EQ(args_of(stages[1], "CMD")[0],
            R"(["serve", "/models/base", "--host", "0.0.0.0", "--port", "8000"])");
  std::string labels;
  for (const auto& l : args_of(stages[1], "LABEL")) labels += l + " ";
  for (const char* k :
       {"org.opencontainers.image.title=\"loraplex\"", "org.opencontainers.image.licenses=\"Apache-2.0\""})
    EXPECT_NE(labels.find(k), std::string::npos) << k;
}

// The HEALTHCHECK's command, run as Docker runs it (/bin/sh -c) against a real server: 0 on a 200 from
// /health, not 0 when the answer is another status or nobody listens. It may use only what debian:12-slim
// has.
TEST(Dockerfile, HealthcheckProbesHealth) {
  const auto stages = dockerfile_stages();
  ASSERT_FALSE(stages.empty());
  const auto hc = args_of(stages.back(), "HEALTHCHECK");
  ASSERT_EQ(hc.size(), 1u);
  const size_t at = hc[0].find(" CMD ");
  ASSERT_NE(at, std::string::npos) << hc[0];
  const std::string cmd = hc[0].substr(at + 5);
  ASSERT_EQ(cmd.rfind("bash -c ", 0), 0u) << "bash is essential in Debian images; curl is not in slim";
  ASSERT_NE(cmd.find("/dev/tcp/127.0.0.1/8000"), std::string::npos) << cmd;  // the port of the CMD
  ASSERT_NE(cmd.find("GET /health "), std::string::npos) << cmd;

  TempDir tmp("health");
  std::string out;
  ASSERT_EQ(
      0,
      run_command(q(loraplex_binary()) + " demo-model " + q(tmp / "m") + " --shape tiny --seed 4 2>&1", &out))
      << out;
  const fs::path log = tmp / "serve.log";
  ASSERT_EQ(0, run_command(q(loraplex_binary()) + " serve " + q(tmp / "m") +
                               " --port 0 --kv-cache-tokens 4096 > " + q(log) + " 2>&1 & echo $!",
                           &out));
  const pid_t pid = std::atoi(out.c_str());
  ASSERT_GT(pid, 1) << out;
  struct Stop {  // the server goes whatever happens below
    pid_t pid;
    ~Stop() { ::kill(pid, SIGKILL); }
  } stop{pid};
  std::smatch m;
  std::string text;
  ASSERT_TRUE(wait_for(
      [&] {
        text = read_file(log);
        return text.find("INFO ready:") != std::string::npos;
      },
      30 * time_scale()))
      << text;
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(listening on http://127\.0\.0\.1:([0-9]+))"))) << text;
  const std::string port = m[1];
  auto probe = [&](const std::string& path) {
    std::string c =
        std::regex_replace(cmd, std::regex("/dev/tcp/127\\.0\\.0\\.1/8000"), "/dev/tcp/127.0.0.1/" + port);
    c = std::regex_replace(c, std::regex("GET /health "), "GET " + path + " ");
    std::ofstream(tmp / "probe.sh") << c << "\n";  // what Docker hands to /bin/sh -c
    return run_command("/bin/sh " + q(tmp / "probe.sh") + " 2>&1");
  };
  EXPECT_EQ(probe("/health"), 0) << "a ready server is healthy";
  EXPECT_NE(probe("/no-such-path"), 0) << "a 404 must not pass for healthy";
  ASSERT_EQ(0, ::kill(pid, SIGTERM));
  ASSERT_TRUE(wait_for([&] { return read_file(log).find("shut down cleanly") != std::string::npos; },
                       30 * time_scale()))
      << read_file(log);
  EXPECT_NE(probe("/health"), 0) << "nobody listening is unhealthy";
}

TEST(Systemd, UnitVerifiesAndOutlastsTheDrain) {
  TempDir tmp("unit");
  const fs::path prefix = tmp / "usr";
  install(prefix);
  const fs::path unit = prefix / "lib/systemd/system/loraplex.service";
  const std::string text = read_file(unit);

  std::string out;
  if (run_command("command -v systemd-analyze >/dev/null") == 0) {
    // verify loads the unit as systemd would: unknown keys, bad values and a missing ExecStart binary are
    // reported (on stderr, some with status 0), so any output fails too.
    const int rc = run_command("systemd-analyze verify " + q(unit) + " 2>&1", &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(trim(out), "") << out;
  } else {
    std::cout << "systemd-analyze not installed: structural checks only\n";
  }

  const auto service = ini_section(text, "Service");
  EXPECT_TRUE(one(service, "Type") == "simple" || one(service, "Type") == "exec");
  EXPECT_EQ(one(service, "KillSignal"), "SIGTERM");
  EXPECT_EQ(one(service, "Restart"), "on-failure");
  EXPECT_EQ(one(service, "EnvironmentFile"), "/etc/loraplex/loraplex.env");
  EXPECT_EQ(one(service, "NoNewPrivileges"), "yes");
  EXPECT_EQ(one(service, "ProtectSystem"), "strict");
  const bool dynamic = service.count("DynamicUser") && service.find("DynamicUser")->second == "yes";
  const bool named = service.count("User") && service.find("User")->second != "root";
  EXPECT_TRUE(dynamic || named) << "the service must not run as root";
  EXPECT_EQ(ini_section(text, "Install").count("WantedBy"), 1u);

  // ExecStart: the installed binary, serve, and --shutdown-timeout from the env file.
  const auto exec = words(one(service, "ExecStart"));
  ASSERT_GE(exec.size(), 2u);
  EXPECT_EQ(exec[0], (prefix / "bin/loraplex").string());
  EXPECT_EQ(exec[1], "serve");
  const auto st = std::find(exec.begin(), exec.end(), "--shutdown-timeout");
  ASSERT_NE(st, exec.end());
  ASSERT_NE(st + 1, exec.end());
  EXPECT_EQ(st[1], "${LORAPLEX_SHUTDOWN_TIMEOUT}");

  // The example env file sets every variable ExecStart uses, and the drain fits in TimeoutStopSec.
  const auto env = ini_section("[env]\n" + read_file(prefix / "share/doc/loraplex/loraplex.env"), "env");
  for (const auto& w : exec) {
    std::smatch m;
    if (std::regex_search(w, m, std::regex(R"(^\$\{?([A-Z_]+)\}?$)"))) {
      EXPECT_EQ(env.count(m[1]), 1u) << m[1] << " is not set in loraplex.env";
    }
  }
  const double drain = std::stod(one(env, "LORAPLEX_SHUTDOWN_TIMEOUT"));
  const double stop = timespan_seconds(one(service, "TimeoutStopSec"));
  EXPECT_GT(drain, 0);
  EXPECT_GT(stop, drain + 5) << "systemd would SIGKILL a drain that uses its --shutdown-timeout";

  // Every flag ExecStart and LORAPLEX_ARGS pass exists on `serve`.
  ASSERT_EQ(0, run_command(q(prefix / "bin/loraplex") + " serve --help 2>&1", &out)) << out;
  std::vector<std::string> flags = exec;
  for (const auto& w : words(one(env, "LORAPLEX_ARGS"))) flags.push_back(w);
  for (const auto& f : flags) {
    if (f.rfind("--", 0) == 0) {
      EXPECT_TRUE(std::regex_search(out, std::regex("(^|[ ,])" + f + R"(\b)"))) << f;
    }
  }
}

}  // namespace
}  // namespace lp::test
