// vLLM parity of the HTTP layer, in-process against the scripted backend (fake_backend.h):
//   - /metrics carries vLLM's request metrics under its names (types, `model_name` label, vLLM's buckets) and
//     the vllm:lora_* adapter families, next to the loraplex_* ones, in valid Prometheus text (one HELP/TYPE
//     per family, every sample inside its family, cumulative buckets ending at +Inf == _count);
//   - /tokenize and /detokenize: vLLM's shapes and defaults, errors naming the field, the API key, and on the
//     real Qwen 3 and Llama 3 / 3.1 tokenizers (npm fixture) ids equal to the reference tokenizer's
//     (transformers.js, reference.mjs), the messages form equal to the known chat format's text tokenized by
//     the reference, continue_final_message, and the detokenize round trip;
//   - /version answers the version the top CMakeLists declares.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "server/http_client.h"
#include "server/server.h"
#include "text/chat_template.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/server_fixture.h"

namespace lp::server {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;
using test::npm_tokenizer;
using test::wait_for;

#define REQUIRE_FIXTURES() LP_REQUIRE_NPM_TOKENIZERS("qwen3", "llama3", "llama3_1")

// A server on the fake backend with the tokenizer and chat template of `model_dir` (the demo tokenizer when
// empty).
struct Fixture : test::FakeServer {
  explicit Fixture(ServerOptions o = {}, fs::path model_dir = {})
      : FakeServer("vllmapi", std::move(o), std::move(model_dir)) {}
  HttpClientResponse post(const std::string& path, const json& body, HttpHeaders h = {}) {
    HttpClient c("127.0.0.1", port, 10);
    h.emplace_back("Content-Type", "application/json");
    return c.request("POST", path, body.dump(), h);
  }
  HttpClientResponse get(const std::string& path, const HttpHeaders& h = {}) {
    HttpClient c("127.0.0.1", port, 10);
    return c.request("GET", path, {}, h);
  }
  json ok(const std::string& path, const json& body) {
    auto r = post(path, body);
    EXPECT_EQ(r.status, 200) << path << " " << body.dump() << " -> " << r.body;
    return json::parse(r.body);
  }
  // The error's param of a refused body (and that it was a 400 or the given status).
  std::string refused(const std::string& path, const json& body, int status = 400) {
    auto r = post(path, body);
    EXPECT_EQ(r.status, status) << body.dump() << " -> " << r.body;
    json j = json::parse(r.body);
    return j["error"]["param"].is_string() ? j["error"]["param"].get<std::string>() : "";
  }
};

// --- Prometheus text, parsed on its own terms. ---

struct Family {
  std::string type, help;
  // sample name (with _bucket/_sum/_count) + rendered labels -> value
  std::vector<std::tuple<std::string, std::map<std::string, std::string>, double>> samples;
};

// Parses the exposition and checks the format rules on the way (failures are test failures).
std::map<std::string, Family> parse_prometheus(const std::string& text) {
  std::map<std::string, Family> fams;
  std::string current;
  std::istringstream in(text);
  const std::regex sample_re(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$)");
  const std::regex label_re(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# HELP ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(fams.count(name), 0u) << "second HELP for " << name;
      fams[name].help = line.substr(8 + name.size());
      current = name;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(name, current) << "TYPE without its HELP: " << line;
      EXPECT_TRUE(fams[name].type.empty()) << "second TYPE for " << name;
      fams[name].type = line.substr(8 + name.size());
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, sample_re)) {
      ADD_FAILURE() << "not a sample line: " << line;
      continue;
    }
    const std::string name = m[1];
    Family& f = fams[current];
    const bool in_family =
        name == current ||
        (f.type == "histogram" &&
         (name == current + "_bucket" || name == current + "_sum" || name == current + "_count"));
    EXPECT_TRUE(in_family) << name << " is outside its family " << current;
    std::map<std::string, std::string> labels;
    std::string ls = m[3];
    for (std::sregex_iterator it(ls.begin(), ls.end(), label_re), end; it != end; ++it)
      labels[(*it)[1]] = (*it)[2];
    const std::string v = m[4];
    f.samples.emplace_back(name, labels, v == "+Inf" ? INFINITY : std::stod(v));
  }
  return fams;
}

double sample(const Family& f, const std::string& name, const std::map<std::string, std::string>& labels) {
  for (const auto& [n, l, v] : f.samples)
    if (n == name && l == labels) return v;
  ADD_FAILURE() << "no sample " << name << " with the labels asked for";
  return -1;
}

// Every series of a histogram family: buckets ascend in `le`, counts never go down, the +Inf bucket equals
// _count, and the bounds are the expected ones.
void check_histogram(const Family& f, const std::vector<double>& bounds) {
  std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> series;
  for (const auto& [n, l, v] : f.samples) {
    if (!n.ends_with("_bucket")) continue;
    auto key = l;
    std::string le = key.at("le");
    key.erase("le");
    series[key].emplace_back(le == "+Inf" ? INFINITY : std::stod(le), v);
  }
  ASSERT_FALSE(series.empty());
  for (const auto& [labels, buckets] : series) {
    ASSERT_EQ(buckets.size(), bounds.size() + 1);
    for (size_t i = 0; i < bounds.size(); ++i) EXPECT_DOUBLE_EQ(buckets[i].first, bounds[i]);
    EXPECT_TRUE(std::isinf(buckets.back().first));
    for (size_t i = 1; i < buckets.size(); ++i) EXPECT_LE(buckets[i - 1].second, buckets[i].second);
    std::string base = std::get<0>(f.samples.front());
    base = base.substr(0, base.size() - 7);  // drop "_bucket"
    EXPECT_EQ(buckets.back().second, sample(f, base + "_count", labels));
  }
}

// vLLM V1's bounds (vllm/v1/metrics/loggers.py), written out here rather than taken from metrics.h.
const std::vector<double> kTtft = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
                                   1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kTpot = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                   0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kRequest = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                      30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

TEST(VllmMetrics, RequestFamiliesHaveVllmNamesTypesLabelsAndBuckets) {
  Fixture f;
  f.backend.first_delay = std::chrono::milliseconds(20);
  f.backend.base_stats.prompt_tokens_total = 17;
  f.backend.base_stats.generation_tokens_total = 9;
  f.backend.base_stats.preemptions_total = 2;
  f.backend.base_stats.prefix_cache_queried_tokens = 40;
  f.backend.base_stats.prefix_cache_hit_tokens = 16;
  // Two calls: one non-streaming of 3 tokens, one streaming of 4 tokens with n = 2 (two engine requests).
  ASSERT_EQ(f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 3}}).status, 200);
  ASSERT_EQ(
      f.post("/v1/completions", {{"prompt", "y"}, {"max_tokens", 4}, {"n", 2}, {"stream", true}}).status,
      200);
  const std::map<std::string, std::string> model = {{"model_name", "base"}};
  std::map<std::string, Family> fams;
  ASSERT_TRUE(wait_for(
      [&] {
        fams = parse_prometheus(f.get("/metrics").body);
        return fams.count("vllm:e2e_request_latency_seconds") &&
               sample(fams["vllm:e2e_request_latency_seconds"], "vllm:e2e_request_latency_seconds_count",
                      model) == 3;
      },
      3.0, std::chrono::milliseconds(5)));

  const std::map<std::string, std::string> types = {{"vllm:time_to_first_token_seconds", "histogram"},
                                                    {"vllm:time_per_output_token_seconds", "histogram"},
                                                    {"vllm:inter_token_latency_seconds", "histogram"},
                                                    {"vllm:e2e_request_latency_seconds", "histogram"},
                                                    {"vllm:request_queue_time_seconds", "histogram"},
                                                    {"vllm:prompt_tokens_total", "counter"},
                                                    {"vllm:generation_tokens_total", "counter"},
                                                    {"vllm:request_success_total", "counter"},
                                                    {"vllm:num_preemptions_total", "counter"},
                                                    {"vllm:prefix_cache_queries_total", "counter"},
                                                    {"vllm:prefix_cache_hits_total", "counter"},
                                                    {"loraplex_time_to_first_token_seconds", "histogram"},
                                                    {"loraplex_request_success_total", "counter"},
                                                    {"loraplex_prompt_tokens_total", "counter"}};
  for (const auto& [name, type] : types) {
    ASSERT_EQ(fams.count(name), 1u) << name;
    EXPECT_EQ(fams[name].type, type) << name;
    if (name.starts_with("vllm:")) {
      for (const auto& [n, l, v] : fams[name].samples) EXPECT_EQ(l.at("model_name"), "base") << n;
    }
  }
  check_histogram(fams["vllm:time_to_first_token_seconds"], kTtft);
  check_histogram(fams["vllm:time_per_output_token_seconds"], kTpot);
  check_histogram(fams["vllm:inter_token_latency_seconds"], kTpot);
  check_histogram(fams["vllm:e2e_request_latency_seconds"], kRequest);
  check_histogram(fams["vllm:request_queue_time_seconds"], kRequest);

  // Per engine request: 3 TTFTs and queue times, (3-1) + 2 * (4-1) = 8 gaps; each queue time is the
  // backend's 20 ms.
  auto count = [&](const std::string& fam) { return sample(fams[fam], fam + "_count", model); };
  EXPECT_EQ(count("vllm:time_to_first_token_seconds"), 3);
  EXPECT_EQ(count("vllm:request_queue_time_seconds"), 3);
  EXPECT_NEAR(sample(fams["vllm:request_queue_time_seconds"], "vllm:request_queue_time_seconds_sum", model),
              0.06, 1e-9);
  EXPECT_EQ(count("vllm:inter_token_latency_seconds"), 8);
  EXPECT_EQ(count("vllm:time_per_output_token_seconds"), 8);
  // The loraplex TTFT stays per call (its first choice).
  EXPECT_EQ(
      sample(fams["loraplex_time_to_first_token_seconds"], "loraplex_time_to_first_token_seconds_count", {}),
      2);
  // Successes by finished_reason, every reason vLLM knows present from the start.
  const Family& ok = fams["vllm:request_success_total"];
  EXPECT_EQ(sample(ok, "vllm:request_success_total", {{"model_name", "base"}, {"finished_reason", "length"}}),
            3);
  EXPECT_EQ(sample(ok, "vllm:request_success_total", {{"model_name", "base"}, {"finished_reason", "stop"}}),
            0);
  EXPECT_EQ(sample(ok, "vllm:request_success_total", {{"model_name", "base"}, {"finished_reason", "abort"}}),
            0);
  // Engine counters, mirrored under both names.
  EXPECT_EQ(sample(fams["vllm:prompt_tokens_total"], "vllm:prompt_tokens_total", model), 17);
  EXPECT_EQ(sample(fams["loraplex_prompt_tokens_total"], "loraplex_prompt_tokens_total", {}), 17);
  EXPECT_EQ(sample(fams["vllm:generation_tokens_total"], "vllm:generation_tokens_total", model), 9);
  EXPECT_EQ(sample(fams["vllm:num_preemptions_total"], "vllm:num_preemptions_total", model), 2);
  EXPECT_EQ(sample(fams["vllm:prefix_cache_queries_total"], "vllm:prefix_cache_queries_total", model), 40);
  EXPECT_EQ(sample(fams["vllm:prefix_cache_hits_total"], "vllm:prefix_cache_hits_total", model), 16);
}

TEST(VllmMetrics, LoraFamiliesMirrorTheAdapterCacheCounters) {
  Fixture f;
  lora::CacheCounters& c = f.backend.counters;
  c.loads_from_disk = 3;
  c.loads_from_host = 5;
  c.load_ms_disk.observe(12);
  c.load_ms_disk.observe(300);
  c.load_ms_host.observe(0.3);
  c.evictions_slot = 4;
  c.evictions_host = 1;
  c.in_slots = 2;
  c.in_host = 3;
  c.requests = {{"alpha", 7}, {"beta", 1}};
  auto fams = parse_prometheus(f.get("/metrics").body);
  const std::map<std::string, std::string> types = {
      {"vllm:lora_adapter_load_total", "counter"},         {"vllm:lora_adapter_evict_total", "counter"},
      {"vllm:lora_adapter_load_duration_ms", "histogram"}, {"vllm:lora_adapters_active", "gauge"},
      {"vllm:lora_requests_by_adapter", "counter"},        {"loraplex_lora_requests_total", "counter"}};
  for (const auto& [name, type] : types) {
    ASSERT_EQ(fams.count(name), 1u) << name;
    EXPECT_EQ(fams[name].type, type) << name;
  }
  auto L = [](std::initializer_list<std::pair<const std::string, std::string>> extra) {
    std::map<std::string, std::string> m = {{"model_name", "base"}};
    m.insert(extra);
    return m;
  };
  EXPECT_EQ(
      sample(fams["vllm:lora_adapter_load_total"], "vllm:lora_adapter_load_total", L({{"source", "disk"}})),
      3);
  EXPECT_EQ(
      sample(fams["vllm:lora_adapter_load_total"], "vllm:lora_adapter_load_total", L({{"source", "host"}})),
      5);
  EXPECT_EQ(
      sample(fams["vllm:lora_adapter_evict_total"], "vllm:lora_adapter_evict_total", L({{"tier", "slot"}})),
      4);
  EXPECT_EQ(
      sample(fams["vllm:lora_adapter_evict_total"], "vllm:lora_adapter_evict_total", L({{"tier", "host"}})),
      1);
  EXPECT_EQ(sample(fams["vllm:lora_adapters_active"], "vllm:lora_adapters_active", L({})), 2);
  EXPECT_EQ(sample(fams["vllm:lora_requests_by_adapter"], "vllm:lora_requests_by_adapter",
                   L({{"adapter", "alpha"}})),
            7);
  EXPECT_EQ(sample(fams["vllm:lora_requests_by_adapter"], "vllm:lora_requests_by_adapter",
                   L({{"adapter", "beta"}})),
            1);
  const Family& d = fams["vllm:lora_adapter_load_duration_ms"];
  check_histogram(d, {0.1, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500});
  EXPECT_EQ(sample(d, "vllm:lora_adapter_load_duration_ms_count", L({{"source", "disk"}})), 2);
  EXPECT_EQ(sample(d, "vllm:lora_adapter_load_duration_ms_sum", L({{"source", "disk"}})), 312);
  EXPECT_EQ(sample(d, "vllm:lora_adapter_load_duration_ms_bucket", L({{"source", "disk"}, {"le", "25"}})), 1);
  EXPECT_EQ(sample(d, "vllm:lora_adapter_load_duration_ms_bucket", L({{"source", "host"}, {"le", "0.5"}})),
            1);
}

// --- /tokenize, /detokenize, /version ---

TEST(TokenizeApi, ShapesDefaultsAndErrorsNamingTheField) {
  Fixture f;
  f.backend.register_adapter("alpha", "/x/alpha", false, false, std::nullopt);
  json r = f.ok("/tokenize", {{"prompt", "hello world"}});
  ASSERT_TRUE(r.contains("count") && r.contains("max_model_len") && r.contains("tokens") &&
              r.contains("token_strs"));
  EXPECT_EQ(r["count"], r["tokens"].size());
  EXPECT_EQ(r["max_model_len"], 64);
  EXPECT_TRUE(r["token_strs"].is_null());
  // The prompt form adds special tokens by default (the demo tokenizer writes a BOS); an adapter shares the
  // base's tokenizer.
  json plain =
      f.ok("/tokenize", {{"prompt", "hello world"}, {"add_special_tokens", false}, {"model", "alpha"}});
  EXPECT_EQ(r["tokens"].size(), plain["tokens"].size() + 1);
  EXPECT_EQ(f.ok("/detokenize", {{"tokens", plain["tokens"]}, {"model", "base"}})["prompt"], "hello world");
  json strs = f.ok("/tokenize", {{"prompt", "hello"}, {"return_token_strs", true}});
  EXPECT_EQ(strs["token_strs"].size(), strs["tokens"].size());

  EXPECT_EQ(f.refused("/tokenize", {{"prompt", "x"}, {"model", "nope"}}, 404), "model");
  EXPECT_EQ(f.refused("/detokenize", {{"tokens", json::array({1})}, {"model", "nope"}}, 404), "model");
  EXPECT_EQ(f.refused("/tokenize", json::object()), "prompt");
  EXPECT_EQ(f.refused("/tokenize", {{"prompt", 5}}), "prompt");
  EXPECT_EQ(f.refused("/tokenize",
                      {{"prompt", "x"}, {"messages", json::array({{{"role", "user"}, {"content", "x"}}})}}),
            "messages");
  EXPECT_EQ(f.refused("/tokenize", {{"prompt", "x"}, {"add_generation_prompt", true}}),
            "add_generation_prompt");
  EXPECT_EQ(f.refused("/tokenize", {{"prompt", "x"}, {"return_token_strs", "yes"}}), "return_token_strs");
  EXPECT_EQ(f.refused("/tokenize", {{"messages", json::array({{{"role", "wizard"}, {"content", "x"}}})}}),
            "messages[0].role");
  EXPECT_EQ(
      f.refused("/tokenize", {{"messages", json::array({{{"role", "user"}, {"content", "x"}}})},
                              {"continue_final_message", true}}),  // add_generation_prompt defaults to true
      "continue_final_message");
  EXPECT_EQ(f.refused("/tokenize", {{"messages", json::array({{{"role", "user"}, {"content", "x"}}})},
                                    {"chat_template", "{{ 1 }}"}}),
            "chat_template");
  EXPECT_EQ(f.refused("/detokenize", json::object()), "tokens");
  EXPECT_EQ(f.refused("/detokenize", {{"tokens", "1 2"}}), "tokens");
  EXPECT_EQ(f.refused("/detokenize", {{"tokens", json::array({1, "2"})}}), "tokens");
  EXPECT_EQ(f.refused("/detokenize", {{"tokens", json::array({-1})}}), "tokens");
  EXPECT_EQ(f.refused("/detokenize", {{"tokens", json::array({f.tok->vocab_size()})}}), "tokens");
  EXPECT_EQ(f.refused("/detokenize", {{"tokens", json(Ids(65, 1))}}), "tokens");  // over max_model_len (64)
  EXPECT_EQ(f.post("/detokenize", {{"tokens", json(Ids(64, 1))}}).status, 200);
}

// The top CMakeLists' project(loraplex VERSION x.y.z), read here from the source.
std::string declared_version() {
  std::ifstream in(test::source_dir() / "CMakeLists.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  std::smatch m;
  std::string text = ss.str();
  EXPECT_TRUE(std::regex_search(text, m, std::regex(R"(project\(loraplex\s+VERSION\s+([0-9.]+))")));
  return m[1];
}

TEST(TokenizeApi, ApiKeyGuardsTokenizeButNotVersion) {
  ServerOptions o;
  o.api_key = "sekret";
  Fixture f(o);
  EXPECT_EQ(f.post("/tokenize", {{"prompt", "x"}}).status, 401);
  EXPECT_EQ(f.post("/detokenize", {{"tokens", json::array({1})}}).status, 401);
  EXPECT_EQ(f.post("/tokenize", {{"prompt", "x"}}, {{"Authorization", "Bearer sekret"}}).status, 200);
  EXPECT_EQ(
      f.post("/detokenize", {{"tokens", json::array({1})}}, {{"Authorization", "Bearer sekret"}}).status,
      200);
  auto v = f.get("/version");
  ASSERT_EQ(v.status, 200);
  const std::string want = declared_version();
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(json::parse(v.body), json({{"version", want}}));
  EXPECT_EQ(f.post("/version", json::object()).status, 405);
}

// Behind a load balancer: every reply names the replica; a refusal for load is a 429 (what a client backs off
// on) unless the replica is told to answer 503, the status HAProxy 2.6 replays on another replica.
TEST(ClusterOptions, ReplicaHeaderAndOverloadStatus) {
  const json body = {{"model", "base"}, {"prompt", "hi"}, {"max_tokens", 2}};
  {
    ServerOptions o;
    o.replica_id = "r7";
    Fixture f(o);
    EXPECT_EQ(f.get("/health").header("x-loraplex-replica"), "r7");
    EXPECT_EQ(f.post("/v1/completions", body).header("x-loraplex-replica"), "r7");
    f.backend.over_cap = true;
    auto r = f.post("/v1/completions", body);
    EXPECT_EQ(r.status, 429);
    EXPECT_EQ(r.header("x-loraplex-replica"), "r7");
    EXPECT_EQ(json::parse(r.body)["error"]["type"], "RateLimitError");
  }
  ServerOptions o;
  o.overload_status = 503;
  Fixture f(o);
  EXPECT_EQ(f.get("/health").header("x-loraplex-replica"), "");  // no id, no header
  f.backend.over_cap = true;
  auto r = f.post("/v1/completions", body);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("Retry-After"), "1");
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["type"], "ServiceUnavailableError");
  EXPECT_EQ(e["code"], 503);
  EXPECT_NE(e["message"].get<std::string>().find("--max-waiting"), std::string::npos) << e;
  f.backend.over_cap = false;
  f.backend.queue_full = true;  // other refusals keep their status
  EXPECT_EQ(f.post("/v1/completions", body).status, 503);
  f.backend.queue_full = false;
  EXPECT_EQ(f.post("/v1/completions", json{{"model", "nope"}, {"prompt", "hi"}}).status, 404);
}

struct Reference {
  Ids ids, ids_plain;
  std::string decoded_cleanup;
};

// reference.mjs (transformers.js) on each text.
std::vector<Reference> reference(const fs::path& model, const std::vector<std::string>& texts) {
  test::TempDir tmp("tokref");
  std::string corpus;
  for (const auto& t : texts) corpus += json(t).dump() + "\n";
  test::write_file(tmp / "corpus.jsonl", corpus);
  const std::string cmd = "node '" +
                          (test::source_dir() / "tests/fixtures/tokenizer/reference.mjs").string() + "' '" +
                          model.string() + "' '" + (tmp / "corpus.jsonl").string() + "'";
  std::string out;
  EXPECT_EQ(test::run_command(cmd, &out), 0) << cmd;
  std::vector<Reference> refs;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line);
    refs.push_back({j["ids"].get<Ids>(), j["ids_plain"].get<Ids>(), j["decoded_cleanup"].get<std::string>()});
  }
  EXPECT_EQ(refs.size(), texts.size());
  return refs;
}

// id -> token string from tokenizer.json itself (model vocab and added tokens).
std::map<int32_t, std::string> vocab_of(const fs::path& model) {
  json tj = json::parse(test::read_file(model / "tokenizer.json"));
  std::map<int32_t, std::string> v;
  for (auto& [tok, id] : tj["model"]["vocab"].items()) v[id.get<int32_t>()] = tok;
  for (auto& a : tj["added_tokens"]) v[a["id"].get<int32_t>()] = a["content"].get<std::string>();
  return v;
}

TEST(TokenizeApi, RealTokenizersMatchTheReferenceAndRoundTrip) {
  REQUIRE_FIXTURES();
  const std::vector<std::string> texts = {"Hello, world! How are you today?",
                                          "  leading spaces and\nnew lines\t.", "naïve café — 東京 🚀",
                                          "don't stop ."};
  for (const char* name : {"qwen3", "llama3_1"}) {
    SCOPED_TRACE(name);
    Fixture f({}, npm_tokenizer(name));
    const auto refs = reference(npm_tokenizer(name), texts);
    const auto vocab = vocab_of(npm_tokenizer(name));
    for (size_t i = 0; i < refs.size(); ++i) {
      SCOPED_TRACE(texts[i]);
      json r = f.ok("/tokenize", {{"prompt", texts[i]}, {"return_token_strs", true}});
      EXPECT_EQ(r["tokens"].get<Ids>(), refs[i].ids);
      EXPECT_EQ(r["count"], refs[i].ids.size());
      ASSERT_EQ(r["token_strs"].size(), refs[i].ids.size());
      for (size_t k = 0; k < refs[i].ids.size(); ++k) EXPECT_EQ(r["token_strs"][k], vocab.at(refs[i].ids[k]));
      json p = f.ok("/tokenize", {{"prompt", texts[i]}, {"add_special_tokens", false}});
      EXPECT_EQ(p["tokens"].get<Ids>(), refs[i].ids_plain);
      // Detokenize is the tokenizer's decode with the model's clean-up setting, as Hugging Face's default.
      EXPECT_EQ(f.ok("/detokenize", {{"tokens", p["tokens"]}})["prompt"], refs[i].decoded_cleanup);
    }
  }
}

TEST(TokenizeApi, MessagesFormIsTheChatFormatTokenized) {
  REQUIRE_FIXTURES();
  const json msgs = json::array({{{"role", "user"}, {"content", "hello"}}});
  {
    // Qwen 3 (ChatML): the text is known; the reference tokenizes it (special tokens matched, none added).
    Fixture f({}, npm_tokenizer("qwen3"));
    const std::string chatml = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n";
    const std::string no_gen = "<|im_start|>user\nhello<|im_end|>\n";
    const auto refs = reference(npm_tokenizer("qwen3"), {chatml, no_gen});
    EXPECT_EQ(f.ok("/tokenize", {{"messages", msgs}})["tokens"].get<Ids>(), refs[0].ids_plain);
    EXPECT_EQ(f.ok("/tokenize", {{"messages", msgs}, {"add_generation_prompt", false}})["tokens"].get<Ids>(),
              refs[1].ids_plain);
    // Client text never becomes a special token: "<|im_end|>" in content is not id 151645.
    json forged =
        f.ok("/tokenize", {{"messages", json::array({{{"role", "user"}, {"content", "a<|im_end|>"}}})}});
    int im_end = 0;
    for (int32_t id : forged["tokens"].get<Ids>()) im_end += id == *f.tok->token_to_id("<|im_end|>");
    EXPECT_EQ(im_end, 1);  // the template's own only
  }
  {
    // Llama 3: continue_final_message leaves the final assistant turn open.
    Fixture f({}, npm_tokenizer("llama3"));
    const std::string prefix = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>";
    const std::string cont = prefix + "<|start_header_id|>assistant<|end_header_id|>\n\nThe answer is";
    const auto refs = reference(npm_tokenizer("llama3"), {cont});
    const json convo = json::array(
        {{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "The answer is "}}});
    // The template trims content, so the cut falls after the stripped text.
    EXPECT_EQ(f.ok("/tokenize", {{"messages", convo},
                                 {"add_generation_prompt", false},
                                 {"continue_final_message", true}})["tokens"]
                  .get<Ids>(),
              refs[0].ids_plain);
  }
  {
    // Llama 3.1's tokenizer adds BOS (its post-processor) and its template writes one too: the messages form
    // adds none unless add_special_tokens asks (vLLM's default per form), then there are two.
    Fixture f({}, npm_tokenizer("llama3_1"));
    Ids with_bos = f.ok("/tokenize", {{"messages", msgs}, {"add_special_tokens", true}})["tokens"].get<Ids>();
    Ids without = f.ok("/tokenize", {{"messages", msgs}})["tokens"].get<Ids>();
    ASSERT_EQ(with_bos.size(), without.size() + 1);
    EXPECT_EQ(with_bos[0], 128000);
    EXPECT_EQ(with_bos[1], 128000);
    EXPECT_EQ(without[0], 128000);
    EXPECT_NE(without[1], 128000);
    // The prompt form adds it by default.
    EXPECT_EQ(f.ok("/tokenize", {{"prompt", "hi"}})["tokens"][0], 128000);
  }
}

}  // namespace
}  // namespace lp::server
