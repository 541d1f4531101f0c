// Merging an adapter into its base model: W' = W + s·B·A for every adapted projection, written as a complete
// Hugging Face model folder (config.json, merged model.safetensors in the base dtype, tokenizer files copied).
// For a deployment that serves one adapter only, this removes all LoRA overhead; tests use it as the
// reference for "adapter output == merged model output".
#pragma once

#include <filesystem>

namespace lp::lora {

void merge_adapter(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                   const std::filesystem::path& out_dir);

}  // namespace lp::lora
