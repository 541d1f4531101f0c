#include "lora/plan.h"

#include <fmt/format.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/check.h"
#include "kernels/quant.h"
#include "kv/kv_cache.h"
#include "model/checkpoint_quant.h"
#include "lora/slot_bank.h"
#include "model/weights.h"

namespace lp::lora {

int64_t base_param_count(const model::ModelConfig& c) {
  const int64_t H = c.hidden_size, V = c.vocab_size;
  int64_t per_layer = 2 * H;  // input_layernorm, post_attention_layernorm
  for (int p = 0; p < model::kNumProj; ++p) {
    const auto pr = static_cast<model::Proj>(p);
    auto [in, out] = model::proj_shape(c, pr);
    per_layer += static_cast<int64_t>(in) * out;
    if (model::has_bias(c, pr)) per_layer += out;
  }
  int64_t n = V * H + per_layer * c.n_layers + H;  // embed, layers, final norm
  if (!c.tie_word_embeddings) n += V * H;          // lm_head
  return n;
}

MemoryPlan plan_memory(const model::ModelConfig& c, const PlanOptions& o) {
  if (o.max_loras < 1) fail("--max-loras must be at least 1 (got {})", o.max_loras);
  if (o.max_lora_rank < 1) fail("--max-lora-rank must be at least 1 (got {})", o.max_lora_rank);
  MemoryPlan p;
  p.options = o;
  if (p.options.max_cpu_loras == 0) p.options.max_cpu_loras = o.max_loras;
  if (p.options.max_cpu_loras < o.max_loras)
    fail(
        "--max-cpu-loras {} is smaller than --max-loras {}: the host tier holds every adapter that is in a "
        "slot",
        p.options.max_cpu_loras, o.max_loras);
  for (int i = 0; i < kNumModules; ++i) {
    MemoryPlan::ModuleBytes& m = p.modules[i];
    m.module = static_cast<Module>(i);
    std::tie(m.in, m.out) = model::proj_shape(c, m.module);
    m.targeted = o.modules[i];
    if (m.targeted)
      m.slot_bytes = module_slot_bytes(c, m.module, o.max_lora_rank, o.lora_dtype);  // as SlotBank
    p.slot_bytes += m.slot_bytes;
  }
  p.slots_bytes = p.slot_bytes * o.max_loras;
  p.host_bytes = p.slot_bytes * p.options.max_cpu_loras;
  p.base_params = base_param_count(c);
  p.base_bytes = p.base_params * static_cast<int64_t>(dtype_size(c.torch_dtype));
  p.options.kv_dtype = o.kv_dtype.value_or(c.torch_dtype);
  p.kv_bytes_per_token =
      kv::KvShape{c.n_layers, c.n_kv_heads, c.head_dim, 16, *p.options.kv_dtype}.bytes_per_token();
  return p;
}

DType parse_lora_dtype(const std::string& s, DType torch_dtype) {
  return parse_dtype_flag(s, torch_dtype, "--lora-dtype");
}

ModuleSet parse_module_set(const std::vector<std::string>& names) {
  if (names.empty()) return kAllModules;
  ModuleSet set{};
  for (const std::string& n : names) {
    if (n == "all" || n == "all-linear") return kAllModules;
    bool found = false;
    for (int i = 0; i < kNumModules; ++i) {
      if (module_name(static_cast<Module>(i)) == n) {
        set[i] = true;
        found = true;
      }
    }
    if (!found)
      fail("unknown target module '{}' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all)",
           n);
  }
  return set;
}

int64_t parse_byte_size(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 18) fail("invalid byte size '{}' (e.g. 17179869184, 16GiB, 500MB)", s);
  const int64_t n = std::stoll(s.substr(0, i));
  std::string unit = s.substr(i);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  int64_t mul = 0;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "K" || unit == "KIB")
    mul = 1LL << 10;
  else if (unit == "M" || unit == "MIB")
    mul = 1LL << 20;
  else if (unit == "G" || unit == "GIB")
    mul = 1LL << 30;
  else if (unit == "T" || unit == "TIB")
    mul = 1LL << 40;
  else if (unit == "KB")
    mul = 1000;
  else if (unit == "MB")
    mul = 1000 * 1000;
  else if (unit == "GB")
    mul = 1000 * 1000 * 1000;
  else if (unit == "TB")
    mul = 1000LL * 1000 * 1000 * 1000;
  else
    fail("invalid byte size '{}': unknown unit '{}' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, s.substr(i));
  if (n > INT64_MAX / mul) fail("byte size '{}' is too large", s);
  return n * mul;
}

std::string format_bytes(int64_t b) {
  const double d = static_cast<double>(b);
  if (b >= 1000LL * 1000 * 1000) return fmt::format("{:.2f} GB ({:.2f} GiB)", d / 1e9, d / (1 << 30));
  if (b >= 1000 * 1000) return fmt::format("{:.1f} MB ({:.1f} MiB)", d / 1e6, d / (1 << 20));
  if (b >= 1000) return fmt::format("{:.1f} KB ({:.1f} KiB)", d / 1e3, d / 1024);
  return fmt::format("{} B", b);
}

std::string plan_text(const MemoryPlan& p) {
  const PlanOptions& o = p.options;
  std::string s =
      fmt::format("LoRA memory plan: max_loras {}, max_lora_rank {}, lora dtype {}, max_cpu_loras {}\n",
                  o.max_loras, o.max_lora_rank, dtype_name(o.lora_dtype), o.max_cpu_loras);
  auto row = [&](const std::string& label, int64_t bytes) {
    s += fmt::format("  {:<38} {:>14}  {}\n", label, bytes, format_bytes(bytes));
  };
  for (const auto& m : p.modules) {
    std::string label = fmt::format("{} (in {}, out {})", module_name(m.module), m.in, m.out);
    if (m.targeted)
      row(label, m.slot_bytes);
    else
      s += fmt::format("  {:<38} {:>14}  (not targeted)\n", label, 0);
  }
  row("one slot", p.slot_bytes);
  row(fmt::format("all {} slots", o.max_loras), p.slots_bytes);
  row(fmt::format("host tier ({} adapters at full rank)", o.max_cpu_loras), p.host_bytes);
  row(fmt::format("base weights ({} params)", p.base_params), p.base_bytes);
  row(fmt::format("KV cache per token ({})", dtype_name(*o.kv_dtype)), p.kv_bytes_per_token);
  return s;
}

nlohmann::json plan_json(const MemoryPlan& p) {
  const PlanOptions& o = p.options;
  nlohmann::json mods = nlohmann::json::object();
  for (const auto& m : p.modules)
    if (m.targeted)
      mods[std::string(module_name(m.module))] = {{"in", m.in}, {"out", m.out}, {"slot_bytes", m.slot_bytes}};
  return {
      {"max_loras", o.max_loras},
      {"max_lora_rank", o.max_lora_rank},
      {"lora_dtype", dtype_name(o.lora_dtype)},
      {"max_cpu_loras", o.max_cpu_loras},
      {"modules", mods},
      {"slot_bytes", p.slot_bytes},
      {"slots_bytes", p.slots_bytes},
      {"host_bytes", p.host_bytes},
      {"base_params", p.base_params},
      {"base_bytes", p.base_bytes},
      {"kv_dtype", dtype_name(*o.kv_dtype)},
      {"kv_bytes_per_token", p.kv_bytes_per_token},
  };
}

WeightPlan plan_weights(const model::ModelConfig& c, const model::LoadOptions& o) {
  WeightPlan p;
  p.quantize_lm_head = o.quantize_lm_head;
  const int64_t d = static_cast<int64_t>(dtype_size(c.torch_dtype));
  const std::string dense(dtype_name(c.torch_dtype));
  model::check_load_options(c, o);  // as the loader: no int8 on top of an int4 checkpoint
  const bool q8 = o.quantization == model::Quantization::kInt8;
  const bool q4 = !c.quant.method.empty();  // an AWQ / GPTQ checkpoint: the projections load as kQ4
  if (q8) p.quantization = "int8";
  if (q4) p.quantization = c.quant.method;
  auto add = [&](const std::string& format, int64_t bytes) {
    for (auto& [name, n] : p.by_format)
      if (name == format) return void(n += bytes);
    p.by_format.emplace_back(format, bytes);
  };
  const int64_t H = c.hidden_size, V = c.vocab_size;
  int64_t small = H * d;  // final norm; + per layer the two norms and the biases (in the file dtype)
  for (int l = 0; l < c.n_layers; ++l) {
    small += 2 * H * d;
    for (int i = 0; i < model::kNumProj; ++i) {
      const auto pr = static_cast<model::Proj>(i);
      auto [in, out] = model::proj_shape(c, pr);
      if (model::has_bias(c, pr)) small += int64_t{out} * d;
      if (q4)  // the kQ4 group the loader picks (checkpoint_quant.h; a desc_act g_idx may force 64)
        add("int4", kernels::quant_matrix_bytes(kernels::WeightFormat::kQ4, out, in,
                                           model::kq4_group(in, c.quant.group_size)));
      else if (q8)
        add("int8", kernels::quant_matrix_bytes(kernels::WeightFormat::kQ8, out, in));
      else
        add(dense, int64_t{in} * out * d);
    }
  }
  const int64_t lm_head =
      o.quantize_lm_head ? kernels::quant_matrix_bytes(kernels::WeightFormat::kQ8, V, H) : V * H * d;
  add(o.quantize_lm_head ? "int8" : dense, lm_head);
  int64_t streamed = 0;
  for (const auto& [name, n] : p.by_format) streamed += n;
  p.decode_step_bytes = streamed + small;
  // The embedding stays dense; a tied lm_head is that same matrix unless it was quantized into a copy.
  const bool lm_head_shares_embed = c.tie_word_embeddings && !o.quantize_lm_head;
  p.resident_bytes = V * H * d + streamed + small - (lm_head_shares_embed ? lm_head : 0);
  return p;
}

std::string weight_plan_text(const WeightPlan& p) {
  std::string s = fmt::format("base weights (quantization {}{}):\n", p.quantization,
                              p.quantize_lm_head ? ", lm_head int8" : "");
  auto row = [&](const std::string& label, int64_t bytes) {
    s += fmt::format("  {:<38} {:>14}  {}\n", label, bytes, format_bytes(bytes));
  };
  for (const auto& [format, n] : p.by_format) row(format + " matrices (read every step)", n);
  row("read per decode step", p.decode_step_bytes);
  row("resident (embeddings too)", p.resident_bytes);
  return s;
}

nlohmann::json weight_plan_json(const WeightPlan& p) {
  nlohmann::json by = nlohmann::json::object();
  for (const auto& [format, n] : p.by_format) by[format] = n;
  return {{"quantization", p.quantization},
          {"quantize_lm_head", p.quantize_lm_head},
          {"weight_bytes_by_format", by},
          {"decode_step_bytes", p.decode_step_bytes},
          {"resident_weight_bytes", p.resident_bytes}};
}

}  // namespace lp::lora
