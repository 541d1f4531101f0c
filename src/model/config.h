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

}  // namespace lp::model
