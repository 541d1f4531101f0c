#include "cli/common.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <fstream>

#include "core/check.h"
#include "core/log.h"
#include "cuda/cuda_model.h"
#include "cuda/device.h"
#include "io/system_memory.h"
#include "lora/adapter.h"
#include "lora/plan.h"

namespace lp::cli {

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string part = s.substr(i, j - i);
    while (!part.empty() && part.front() == ' ') part.erase(part.begin());
    while (!part.empty() && part.back() == ' ') part.pop_back();
    int32_t v = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || ec != std::errc() || p != part.data() + part.size() || v < 0)
      fail("invalid token id '{}' in --ids (expected comma-separated non-negative integers)", part);
    ids.push_back(v);
    i = j + 1;
  }
  if (ids.empty()) fail("--ids is empty");
  return ids;
}

int64_t resident_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  return 0;
}

void add_quant_flags(CLI::App* c, QuantFlags& f) {
  c->add_option("--quantization,-q", f.quantization,
                "none | int8 (the projections, weight-only per output channel, at load) | awq | gptq (int4 "
                "checkpoints, detected from config.json anyway: the value must match it)");
  c->add_flag("--quantize-lm-head", f.quantize_lm_head,
              "Quantize lm_head to int8 too (default: it keeps the file dtype, as the embeddings)");
}

void check_quantization_flag(const std::string& v) {
  if (v != "none" && v != "int8" && v != "awq" && v != "gptq")
    fail(
        "--quantization {}: expected none, int8, awq or gptq (int8 quantizes a float checkpoint at load; an "
        "AWQ / GPTQ checkpoint is detected from config.json, awq / gptq only confirm it)",
        v);
}

model::LoadOptions load_options(const QuantFlags& q, const model::ModelConfig& c, bool mmap_weights) {
  check_quantization_flag(q.quantization);
  const std::string& method = c.quant.method;  // "" for a float checkpoint
  model::LoadOptions o;
  o.placement = mmap_weights ? model::WeightPlacement::kMapped : model::WeightPlacement::kMemory;
  o.quantize_lm_head = q.quantize_lm_head;
  if (q.quantization == "awq" || q.quantization == "gptq") {
    if (method.empty())
      fail(
          "--quantization {}: config.json has no quantization_config (not an int4 checkpoint); use none or "
          "int8",
          q.quantization);
    if (method != q.quantization)
      fail("--quantization {}: config.json's quantization_config says {}; give {} or drop the flag",
           q.quantization, method, method);
    return o;  // the checkpoint loads as what it is
  }
  o.quantization = model::parse_quantization_flag(q.quantization, "--quantization");
  model::check_load_options(c, o);  // int8 on an int4 checkpoint: refused before anything is read
  return o;
}

std::unique_ptr<model::Model> load_model(const std::string& dir, bool mmap_weights, const QuantFlags& quant) {
  check_quantization_flag(quant.quantization);  // before config.json is read
  return model::Model::load(dir, load_options(quant, model::ModelConfig::from_dir(dir), mmap_weights));
}

void add_device_flag(CLI::App* command, std::string& device) {
  command->add_option("--device", device, kDeviceHelp)->capture_default_str();
}

model::Device resolve_device(const std::string& flag) {
  if (flag == "cpu") return model::Device::kCpu;
  if (flag != "cuda" && flag != "auto") fail("--device must be cpu, cuda or auto (got '{}')", flag);
  std::string why;
  if (cuda::probe_device(0, nullptr, &why)) return model::Device::kCuda;
  if (flag == "cuda") fail("--device cuda: {}", why);
  log_info("--device auto: cpu ({})", why);
  return model::Device::kCpu;
}

void check_device_supports(model::Device device, const model::LoadOptions& load, const model::ModelConfig& c) {
  if (device == model::Device::kCpu) return;
  if (!c.quant.method.empty())
    fail("--device {}: this is a {} checkpoint; the CUDA backend runs dense F32 / BF16 / F16 weights only "
         "(int4 runs on --device cpu)", model::device_name(device), c.quant.method);
  if (load.quantization != model::Quantization::kNone || load.quantize_lm_head)
    fail("--device {}: --quantization int8 is CPU-only; the CUDA backend runs the weights in their file "
         "dtype", model::device_name(device));
}

void plan_on_device(lora::KvPlanOptions& o, model::Device device) {
  if (device == model::Device::kCpu) return;
  o.device = model::device_name(device);
  cuda::DeviceInfo info;
  std::string why;
  if (cuda::probe_device(0, &info, &why)) {
    o.memory_available = info.free_bytes;
    o.memory_source = fmt::format("free on cuda:{} {}", info.index, info.name);
  } else {
    o.memory_available.reset();
    o.memory_source = fmt::format("no CUDA device here ({}); give --memory-budget", why);
  }
}

std::unique_ptr<model::Executor> load_executor(model::Device device, const std::string& dir,
                                               const model::LoadOptions& load) {
  if (device == model::Device::kCpu) return model::Model::load(dir, load);
#ifdef LP_HAVE_CUDA
  check_device_supports(device, load, model::ModelConfig::from_dir(dir));
  return cuda::CudaModel::load(dir, load);  // reads the weights from their mapping, whatever the placement
#else
  std::string why;
  cuda::probe_device(0, nullptr, &why);
  fail("--device cuda: {}", why);
#endif
}

std::unique_ptr<model::Executor> load_executor(model::Device device, const std::string& dir, bool mmap_weights,
                                               const QuantFlags& quant) {
  check_quantization_flag(quant.quantization);  // before config.json is read
  return load_executor(device, dir, load_options(quant, model::ModelConfig::from_dir(dir), mmap_weights));
}

std::string bytes_by_format_text(const std::vector<std::pair<std::string, size_t>>& by_format) {
  std::string s;
  for (const auto& [format, n] : by_format)
    s += fmt::format("{}{} {:.1f} MiB", s.empty() ? "" : ", ", format, static_cast<double>(n) / (1 << 20));
  return s;
}

lora::KvPlanOptions kv_plan_options(const KvFlags& f, DType torch_dtype) {
  lora::KvPlanOptions o;
  o.kv_cache_tokens = f.kv_cache_tokens;
  if (f.kv_cache_tokens < 0) fail("--kv-cache-tokens must not be negative (got {})", f.kv_cache_tokens);
  if (!f.kv_cache_memory.empty()) {
    try {
      o.kv_cache_memory = lora::parse_byte_size(f.kv_cache_memory);
    } catch (const Error& e) {
      fail("--kv-cache-memory: {}", e.what());
    }
    if (o.kv_cache_memory == 0) fail("--kv-cache-memory must be more than 0 bytes");
  }
  o.max_num_seqs = f.max_num_seqs;
  o.max_model_len = f.max_model_len;
  o.kv_dtype = kv_cache_dtype(f.kv_cache_dtype, torch_dtype);
  io::MemoryAvailable m = io::read_memory_available();
  o.memory_available = m.bytes;
  o.memory_source = m.source;
  return o;
}

PoolThreads pool_threads_plan(int requested) {
  std::string given;
  int n = requested;
  if (n > 0) {
    given = "--threads";
  } else if (const char* e = std::getenv("LORAPLEX_THREADS"); e && std::atoi(e) > 0) {
    n = std::atoi(e);
    given = "LORAPLEX_THREADS";
  }
  const io::CpuAvailable c = io::read_cpu_available();
  if (given.empty()) return {c.count, io::cpu_plan_text(c)};
  // An explicit count is kept, but say so when the quota or mask will leave some threads waiting.
  if (n > c.count)
    given += fmt::format("; more than the {} CPUs this process may use: {}", c.count, io::cpu_plan_text(c));
  return {n, given};
}

int pool_threads(int requested) {
  return pool_threads_plan(requested).threads;
}

}  // namespace lp::cli

namespace lp::cli {

CliAdapters load_cli_adapters(model::Executor& m, const std::vector<std::string>& dirs,
                              const std::string& lora_dtype) {
  CliAdapters out;
  std::vector<std::string> uniq;
  for (const auto& d : dirs)
    if (std::find(uniq.begin(), uniq.end(), d) == uniq.end()) uniq.push_back(d);
  if (uniq.empty()) return out;
  DType dt = lora::parse_lora_dtype(lora_dtype, m.config().torch_dtype);
  std::vector<lora::PackedAdapter> packed;
  int max_rank = 1;
  for (const auto& d : uniq) {
    packed.push_back(lora::pack_adapter(lora::load_adapter(d, lora::base_shapes(m.config())), dt, m.slot_memory()));
    max_rank = std::max(max_rank, packed.back().max_rank);
  }
  out.bank = std::make_unique<lora::SlotBank>(m.config(), static_cast<int>(uniq.size()), max_rank, dt,
                                              lora::kAllModules, m.slot_memory());
  for (size_t i = 0; i < uniq.size(); ++i) {
    out.bank->load(static_cast<int>(i), packed[i]);
    out.slot_of[uniq[i]] = static_cast<int>(i);
  }
  return out;
}

}  // namespace lp::cli
