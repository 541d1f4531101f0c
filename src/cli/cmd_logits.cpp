// `loraplex logits`: raw little-endian f32 logits for every position, through the same Model::forward the
// server uses. Single sequence (--ids → --out FILE, [T, vocab]) or a batch spec (--batch SPEC.json →
// --out-dir DIR/seq<i>.f32, each entry with its own "adapter" folder or null, or a stack of adapters with
// scales, "adapters": [{"adapter": DIR, "scale": S}, ...]), the whole batch evaluated in ONE forward call.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <utility>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/check.h"
#include "model/runner.h"

namespace lp::cli {

namespace {

struct LogitsArgs {
  std::string model;
  std::string ids;
  std::string out;
  std::string batch;
  std::string out_dir;
  std::string adapter;
  std::string lora_dtype = "auto";
  int threads = 0;
  bool mmap_weights = false;
  std::string device = "cpu";
  QuantFlags quant;
  std::string kv_cache_dtype = "auto";
};

struct SeqSpec {
  std::vector<int32_t> ids;
  std::vector<std::pair<std::string, float>> adapters;  // (folder, scale) in stack order; empty = base model
};

void write_f32(const std::filesystem::path& p, const float* data, size_t n) {
  std::ofstream f(p, std::ios::binary);
  if (!f) fail("cannot write {}", p.string());
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
  if (!f) fail("error writing {}", p.string());
}

std::vector<SeqSpec> read_batch_spec(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("cannot open batch spec {}", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  if (!j.is_array() || j.empty()) fail("{}: expected a non-empty JSON list of {{\"ids\": [...]}}", path);
  std::vector<SeqSpec> seqs;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    if (!e.is_object() || !e.contains("ids") || !e["ids"].is_array() || e["ids"].empty())
      fail("{}: entry {} needs a non-empty \"ids\" list", path, i);
    std::vector<int32_t> ids;
    for (const auto& v : e["ids"]) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail("{}: entry {} has a bad id {}", path, i, v.dump());
      ids.push_back(v.get<int32_t>());
    }
    std::vector<std::pair<std::string, float>> adapters;
    if (auto a = e.find("adapter"); a != e.end() && !a->is_null()) {
      if (!a->is_string()) fail("{}: entry {} has a non-string \"adapter\"", path, i);
      adapters.emplace_back(a->get<std::string>(), 1.f);
    }
    if (auto st = e.find("adapters"); st != e.end() && !st->is_null()) {
      if (!adapters.empty()) fail("{}: entry {} has both \"adapter\" and \"adapters\"", path, i);
      if (!st->is_array() || st->empty())
        fail("{}: entry {}: \"adapters\" must be a non-empty list of {{\"adapter\": DIR, \"scale\": S}}", path, i);
      for (const auto& x : *st) {
        if (!x.is_object() || !x.contains("adapter") || !x["adapter"].is_string())
          fail("{}: entry {}: each \"adapters\" item needs an \"adapter\" folder", path, i);
        for (const auto& [k, v] : x.items())
          if (k != "adapter" && k != "scale") fail("{}: entry {}: unknown key \"{}\" in \"adapters\"", path, i, k);
        float scale = 1.f;
        if (auto m = x.find("scale"); m != x.end()) {
          if (!m->is_number() || !std::isfinite(m->get<double>()))
            fail("{}: entry {}: \"scale\" must be a finite number", path, i);
          scale = m->get<float>();
        }
        const std::string dir = x["adapter"].get<std::string>();
        for (const auto& [d, _] : adapters)
          if (d == dir) fail("{}: entry {}: adapter {} is stacked twice", path, i, dir);
        adapters.emplace_back(dir, scale);
      }
    }
    seqs.push_back({std::move(ids), std::move(adapters)});
  }
  return seqs;
}

void run_logits(const LogitsArgs& a) {
  if (a.ids.empty() == a.batch.empty()) fail("give exactly one of --ids or --batch");
  if (!a.ids.empty() && a.out.empty()) fail("--ids needs --out FILE");
  if (!a.batch.empty() && a.out_dir.empty()) fail("--batch needs --out-dir DIR");
  std::vector<SeqSpec> seqs =
      a.ids.empty() ? read_batch_spec(a.batch) : std::vector<SeqSpec>{{parse_ids(a.ids), {}}};
  if (!a.ids.empty() && !a.adapter.empty()) seqs[0].adapters.emplace_back(a.adapter, 1.f);

  auto model = load_executor(resolve_device(a.device), a.model, a.mmap_weights, a.quant);
  const int V = model->config().vocab_size;
  int64_t total = 0;
  std::vector<std::string> adapter_dirs;
  for (const auto& s : seqs) {
    for (int32_t id : s.ids)
      if (id >= V) fail("token id {} is out of range for vocab size {}", id, V);
    total += static_cast<int64_t>(s.ids.size());
    for (const auto& [dir, _] : s.adapters) adapter_dirs.push_back(dir);
  }
  CliAdapters adapters = load_cli_adapters(*model, adapter_dirs, a.lora_dtype);
  ComputePool pool(pool_threads(a.threads));
  // Each sequence needs its own whole blocks.
  model::Runner runner(*model, pool, total + 16 * static_cast<int64_t>(seqs.size()), 16,
                       kv_cache_dtype(a.kv_cache_dtype, model->config().torch_dtype));
  if (adapters.bank) runner.set_lora(&adapters.bank->view());
  std::vector<model::Runner::Item> items;
  for (const auto& s : seqs) {
    model::Runner::LoraStack lora;
    for (size_t k = 0; k < s.adapters.size(); ++k) {
      const int32_t slot = adapters.slot_of.at(s.adapters[k].first);
      if (k == 0)
        lora = model::Runner::LoraStack(slot, s.adapters[k].second);
      else
        lora.more.emplace_back(slot, s.adapters[k].second);
    }
    items.push_back({runner.add_sequence(), s.ids, /*want_all_logits=*/true, std::move(lora)});
  }
  const Buffer<float>& logits = runner.step(items);

  if (!a.ids.empty()) {
    write_f32(a.out, logits.data(), seqs[0].ids.size() * V);
    return;
  }
  std::filesystem::create_directories(a.out_dir);
  size_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    write_f32(std::filesystem::path(a.out_dir) / ("seq" + std::to_string(i) + ".f32"),
              logits.data() + row * V, seqs[i].ids.size() * V);
    row += seqs[i].ids.size();
  }
}

}  // namespace

void add_logits_command(CLI::App& app) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* c = app.add_subcommand("logits", "Write raw f32 logits for every position");
  c->add_option("--model", args->model, "Model folder (config.json + safetensors)")->required();
  c->add_option("--ids", args->ids, "Comma-separated token ids of one sequence");
  c->add_option("--out", args->out, "Output file for --ids: [T, vocab] little-endian f32");
  c->add_option("--batch", args->batch, "JSON list of {\"ids\": [...]} evaluated in one forward call");
  c->add_option("--out-dir", args->out_dir, "Output folder for --batch: seq<i>.f32");
  c->add_option("--adapter", args->adapter, "PEFT adapter folder for --ids (batch entries use \"adapter\")");
  c->add_option("--lora-dtype", args->lora_dtype, "Adapter slot dtype: bf16 | f32 | auto (= base dtype)");
  c->add_option("--threads", args->threads,
                "Compute threads (default: the CPUs this process may use: affinity mask, cgroup CPU quota)");
  c->add_flag("--mmap-weights", args->mmap_weights, kMmapWeightsHelp);
  add_quant_flags(c, args->quant);
  add_device_flag(c, args->device);
  c->add_option("--kv-cache-dtype", args->kv_cache_dtype, kKvCacheDtypeHelp)->check(dtype_flag_check());
  c->callback([args] { run_logits(*args); });
}

}  // namespace lp::cli
