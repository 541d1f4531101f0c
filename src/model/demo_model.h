// Deterministic synthetic models in the exact Hugging Face layout (config.json + model.safetensors), so
// tests and benchmarks run without a model hub. Shapes: tiny, small, smol (SmolLM2-135M's), 1b
// (Llama-3.2-1B's), 8b (Llama-3.1-8B's: 16 GB in BF16, for the GPU benchmarks). The same (shape, seed,
// dtype, arch) always gives the same bytes. Shape "story" names
// the config of the constructed story model (model/demo_story.h), whose weights write_story_model writes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"

namespace lp::model {

struct DemoSpec {
  std::string shape = "tiny";  // tiny | small | smol | 1b | 8b (| story: config only, see above)
  uint64_t seed = 1;
  DType dtype = DType::kBF16;
  std::string arch = "llama";  // llama | mistral | qwen2 (q/k/v bias)
  bool attention_bias = false;  // llama only: q/k/v/o biases
  bool mlp_bias = false;        // llama only: gate/up/down biases
  std::vector<int32_t> bos_ids;
  std::vector<int32_t> eos_ids;
  // "" (float weights), "awq" or "gptq": the seven projections of every layer are written as that int4
  // checkpoint (model/checkpoint_quant.h), quantized per group from the same pseudo-random weights a float
  // model of this seed has; everything else, and the config's torch_dtype, is F16 (dtype is ignored), as in
  // such checkpoints. Group 128 when it divides every projection's input features, else 64. AWQ is
  // asymmetric (min/max per group) and needs every input count to be a multiple of the group (not tiny:
  // its intermediate size is 176); GPTQ is v1 (qzeros hold zero - 1) with g_idx = k / group.
  std::string quantization;
  bool gptq_sym = true;  // gptq: symmetric (zero 8) or, false, asymmetric like AWQ
};

// The config.json that write_demo_model writes, as JSON text (for tests and `plan`).
std::string demo_config_json(const DemoSpec& spec);
// Vocabulary size of a shape (so the tokenizer can be written first).
int demo_vocab_size(const std::string& shape);
// Writes config.json and model.safetensors into dir (created if missing).
void write_demo_model(const std::filesystem::path& dir, const DemoSpec& spec);

// Deterministic pseudo-random numbers, seeded by (seed, name): the same tensor gets the same values
// whatever else is generated. uniform() is in [-1, 1).
class DemoRng {
 public:
  DemoRng(uint64_t seed, const std::string& name);
  uint64_t next();
  float uniform();

 private:
  uint64_t s_;
};

}  // namespace lp::model
