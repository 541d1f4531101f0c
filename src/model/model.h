// Model: a Llama-family decoder (Llama, Mistral, Qwen2) evaluated over a flat Batch on the CPU (the CPU
// model::Executor).
// forward() runs every layer for all T tokens at once: each linear is one matmul over the whole batch
// (weights read once per step), attention reads and writes the paged KV cache. Activations are f32; weights
// stay in their file dtype. Scratch buffers grow to the largest batch seen and are reused.
// Owned and called by one thread (the engine thread); not thread-safe.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/buffer.h"
#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/executor.h"
#include "model/lora_view.h"
#include "model/weights.h"

namespace lp::model {

class Model : public Executor {
 public:
  static std::unique_ptr<Model> load(const std::filesystem::path& dir,
                                     WeightPlacement placement = WeightPlacement::kMemory);
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const LoadOptions& options);
  Model(ModelConfig config, ModelWeights weights);

  Device device() const override { return Device::kCpu; }
  std::string describe() const override;
  const ModelConfig& config() const override { return config_; }
  // Benchmarks only: false makes every LoRA token its own group (weights re-read per token, "naive").
  void set_lora_grouping(bool merge) { lora_merge_ = merge; }
  const ModelWeights& weights() const override { return weights_; }
  std::unique_ptr<kv::KvCache> make_kv_cache(const kv::KvShape& shape, int num_blocks) override;

  // Runs the batch; writes logits (batch.logit_rows.size(), vocab) row-major to `logits`. With `lora`, every
  // projection adds the LoRA term of the slot in batch.lora_slots for each token (one fused pass for all
  // adapters); tokens with slot -1, or a null `lora`, run the base model only.
  void forward(ComputePool& pool, const Batch& batch, kv::KvCache& cache, float* logits,
               const LoraBankView* lora = nullptr) override;

 private:
  void ensure_scratch(int64_t T, int64_t R);
  void attention_block(ComputePool& pool, const Batch& batch, kv::KvCache& cache, int layer);
  void mlp_block(ComputePool& pool, int64_t T, int layer);
  // y (+)= x · Wᵀ (+ bias) for projection p of `layer` (base weights, all tokens).
  void project(ComputePool& pool, int layer, Proj p, const float* x, int64_t T, float* y, bool accumulate);
  // The weights the forward reads right after projection p of `layer` (o after q/k/v, gate/up after o,
  // down after gate/up, the next layer's q/k/v or lm_head after down): the matmul prefetch hint.
  std::span<const kernels::MatView> weights_after(int layer, Proj p) const;
  // Several projections of the same input (q/k/v, gate/up) in one dispatch; outputs are overwritten.
  void project_multi(ComputePool& pool, int layer, const float* x, int64_t T,
                     std::initializer_list<std::pair<Proj, float*>> outs);
  // Adds the LoRA term of each token's adapter to the outputs of projections that share the input x.
  void add_lora(ComputePool& pool, int layer, const float* x,
                std::initializer_list<std::pair<Proj, float*>> outs);

  ModelConfig config_;
  ModelWeights weights_;
  RopeTable rope_;  // grown on demand
  // Scratch, grown on demand:
  int64_t cap_tokens_ = 0, cap_rows_ = 0;
  Buffer<float> x_;     // (T, H) residual stream
  Buffer<float> xn_;    // (T, H) normalized input of a block
  Buffer<float> q_;     // (T, q_dim)
  Buffer<float> k_;     // (T, kv_dim)
  Buffer<float> v_;     // (T, kv_dim)
  Buffer<float> attn_;  // (T, q_dim)
  Buffer<float> gate_;  // (T, I)
  Buffer<float> up_;    // (T, I)
  Buffer<float> last_;  // (R, H) final-normed rows that need logits
  // LoRA state of the current forward call:
  const LoraBankView* lora_ = nullptr;
  bool lora_merge_ = true;
  kernels::LoraPlan lora_plan_;
  kernels::LoraScratch lora_scratch_;
};

}  // namespace lp::model
