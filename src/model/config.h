// ModelConfig: the shape and numerics of a Llama-family decoder, read from a Hugging Face config.json.
// Supported architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/dtype.h"

namespace lp::model {

// rope_scaling of type "llama3" (Llama 3.1 / 3.2); type "default"/absent means none.
struct RopeScaling {
  bool llama3 = false;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// quantization_config of an int4 checkpoint (detected as vLLM does, from config.json). Only what loraplex
// can run is accepted (from_json refuses the rest naming the field): 4 bits, AWQ's GEMM layout, groups of a
// multiple of 64 input columns (the kQ4 group, kernels/kernels.h) or -1 (one group per row).
struct CheckpointQuant {
  std::string method;      // "" (a float checkpoint), "awq" or "gptq"
  int bits = 0;            // 4
  int group_size = 0;      // input columns per (scale, zero) group; -1: one group per output row
  bool desc_act = false;   // GPTQ: act-order; supported only while g_idx keeps groups contiguous
  bool sym = false;        // GPTQ: symmetric (zero 8); qzeros are read either way
  bool zero_point = true;  // AWQ: asymmetric (the only variant with a GEMM layout)
  std::string version;     // AWQ: "gemm"
  // GPTQ: "gptq" (v1, AutoGPTQ: qzeros hold zero - 1) or "gptq_v2" (GPTQModel: qzeros hold the zero).
  std::string checkpoint_format;
  // What to add to a stored zero nibble to get the zero point.
  int zero_offset() const { return method == "gptq" && checkpoint_format != "gptq_v2" ? 1 : 0; }
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  std::string model_type;    // e.g. "llama"
  int hidden_size = 0;
  int intermediate_size = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and for Llama's attention_bias also o) projections have bias
  bool o_bias = false;
  bool mlp_bias = false;
  DType torch_dtype = DType::kBF16;
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  CheckpointQuant quant;  // method "" unless config.json has a quantization_config

  // from_json bounds heads and head_dim so these products fit in int (<= 2^24).
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // The context length served: max_position_embeddings, capped by a sliding window when one is active
  // (loraplex does not implement sliding-window attention, so it serves only what full attention covers).
  int64_t max_model_len = 0;

  static ModelConfig from_json(const nlohmann::json& j, const std::string& label);
  static ModelConfig from_dir(const std::filesystem::path& dir);
  static const std::vector<std::string>& supported_architectures();
};

// Inverse frequencies for RoPE (head_dim / 2 entries), with llama3 scaling applied when configured; the same
// formula as transformers' _compute_llama3_parameters.
std::vector<double> rope_inv_freq(const ModelConfig& c);

// The rotary table, grown on demand: a Llama 3.1 config allows 131072 positions (64 MiB of table for head_dim
// 128), while what is served is bounded by the KV cache. grow() makes it cover positions [0, n) at least
// (doubling, from 4096, capped at max_model_len) and returns whether it grew; every executor uses this one
// table, so a position rotates the same on every device.
struct RopeTable {
  std::vector<double> inv_freq;  // (head_dim / 2)
  int64_t positions = 0;         // rows the table covers
  std::vector<float> cos, sin;   // (positions, head_dim / 2)
  bool grow(const ModelConfig& c, int64_t n);
};

}  // namespace lp::model
