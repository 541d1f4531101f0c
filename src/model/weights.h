// ModelWeights: views of every tensor a Llama-family forward needs, validated against the config.
// Tensors keep their file dtype. The matrices a decode step streams (the seven projections of every layer
// and lm_head) are by default copied once into huge-page memory (WeightPlacement::kMemory) and their file
// pages dropped, so resident memory stays about one copy; with kMapped everything is read in place from the
// memory-mapped safetensors files (zero-copy; 4 KiB pages). Only the small bias vectors are converted to f32
// at load. A missing tensor or a wrong shape is an lp::Error naming the tensor, its shape and the expected
// shape. An AWQ / GPTQ checkpoint (config.quant.method set) has its projections unpacked into kQ4 at load
// (model/checkpoint_quant.h); its embeddings, norms and lm_head are read as any float tensor.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/buffer.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "model/config.h"

namespace lp::model {

// The seven projections LoRA can target, in a fixed order used for slot layouts.
enum class Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumProj = 7;
const char* proj_name(Proj p);          // "q_proj", ...
const char* proj_parent(Proj p);        // "self_attn" or "mlp"

struct LayerWeights {
  kernels::MatView proj[kNumProj];       // [out][in] each: q (q_dim, H), k/v (kv_dim, H), o (H, q_dim),
                                         // gate/up (I, H), down (H, I)
  const float* bias[kNumProj] = {};      // (out) f32, or null
  const void* attn_norm = nullptr;       // (H) in norm_dtype
  const void* mlp_norm = nullptr;        // (H)
  DType norm_dtype = DType::kF32;
};

// Where the streamed matrices live (see the top of this file).
enum class WeightPlacement {
  kMemory,  // copied into huge-page memory at load: a decode step streams them ~6-10% faster
  kMapped,  // read in place from the file mapping: no copy at load, 4 KiB pages
};

// Quantization applied at load to a checkpoint of F32/F16/BF16 weights (int4 checkpoints come quantized).
enum class Quantization { kNone, kInt8 };
// "none" / "int8" -> value; anything else throws lp::Error naming `flag` and the accepted values.
Quantization parse_quantization_flag(std::string_view value, std::string_view flag);

struct LoadOptions {
  WeightPlacement placement = WeightPlacement::kMemory;
  // kInt8: the seven projections of every layer become kQ8 (kernels/quant.h, QuantMatrix::quantize_int8);
  // embeddings and lm_head keep the file dtype unless quantize_lm_head.
  Quantization quantization = Quantization::kNone;
  bool quantize_lm_head = false;
  // Called during the slow parts of a load, after each matrix: `what` ("quantizing", "copying"), bytes done
  // and in all for that part. The caller decides what to log (serve: a line a second at most).
  std::function<void(std::string_view what, size_t done, size_t total)> progress;
};

// Throws lp::Error when `options` cannot apply to a checkpoint of this config (int8 at load on an AWQ /
// GPTQ int4 checkpoint). ModelWeights::load and lora::plan_weights both check with it.
void check_load_options(const ModelConfig& config, const LoadOptions& options);

struct ModelWeights {
  io::TensorSet tensors;
  Buffer<uint8_t> streamed;  // kMemory: the copies of the projections and lm_head
  kernels::MatView embed;    // (vocab, H)
  kernels::MatView lm_head;  // (vocab, H); == embed when tied
  const void* final_norm = nullptr;  // (H)
  DType final_norm_dtype = DType::kF32;
  std::vector<LayerWeights> layers;
  std::vector<Buffer<float>> bias_storage;
  std::vector<kernels::QuantMatrix> quant_storage;  // the quantized matrices the views point into
  // What runs: "none" (file dtype), "int8" (quantized at load), "awq" or "gptq" (int4 checkpoint).
  std::string quantization = "none";
  size_t bytes_per_decode_step = 0;  // bytes of all weights a decode step reads (layers + lm_head + norms)
  size_t total_bytes = 0;

  static ModelWeights load(const std::filesystem::path& dir, const ModelConfig& config,
                           const LoadOptions& options = {});
  // Bytes of the matrices a decode step streams, by storage format ("BF16", "int8", "int4", ...).
  std::vector<std::pair<std::string, size_t>> bytes_by_format() const;
};

// (in, out) of projection p in a model of this config.
std::pair<int, int> proj_shape(const ModelConfig& c, Proj p);
// Whether projection p has a bias vector (out) in a model of this config: q/k/v with attention_bias, o with
// o_bias, gate/up/down with mlp_bias.
bool has_bias(const ModelConfig& c, Proj p);

}  // namespace lp::model
