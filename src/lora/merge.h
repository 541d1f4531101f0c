// Merging an adapter into its base model: W' = W + s·B·A for every adapted projection, written as a complete
// Hugging Face model folder (config.json, merged model.safetensors in the base dtype, tokenizer files
// copied). For a deployment that serves one adapter only, this removes all LoRA overhead; tests use it as the
// reference for "adapter output == merged model output".
// A quantized base (an AWQ / GPTQ checkpoint: quantization_config in config.json) is refused: W + s·B·A
// would have to be requantized, and the adapter's update, small next to a quantization step, would mostly
// round away. Serve the adapter on top of the quantized base instead, or merge into the unquantized model.
#pragma once

#include <filesystem>
#include <span>

namespace lp::lora {

// Throws lp::Error for a quantized checkpoint (see above), bad folders or an adapter that does not fit.
void merge_adapter(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                   const std::filesystem::path& out_dir);

// Several adapters, each with a multiplier of its own alpha/r scale (a request's "adapters" stack):
// W' = W + sum_i scale_i·s_i·B_i·A_i, summed in double and rounded once.
struct MergeTerm {
  std::filesystem::path adapter;
  double scale = 1.0;
};
void merge_adapters(const std::filesystem::path& model_dir, std::span<const MergeTerm> terms,
                    const std::filesystem::path& out_dir);

}  // namespace lp::lora
