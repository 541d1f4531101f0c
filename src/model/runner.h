// Runner: the smallest driver of Executor::forward for a fixed set of sequences — builds flat batches,
// reserves KV blocks, tracks positions. Used by the CLI (logits, generate, bench) and by tests; the
// serving scheduler (sched/) builds its batches itself with the same pieces.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/batch.h"
#include "model/executor.h"
#include "model/model.h"  // most users of the Runner drive the CPU Model

namespace lp::model {

class Runner {
 public:
  // A KV cache of `kv_tokens` token capacity (rounded up to whole blocks), elements of `kv_dtype` (default:
  // the model's torch_dtype).
  Runner(Executor& model, ComputePool& pool, int64_t kv_tokens, int block_size = 16,
         std::optional<DType> kv_dtype = std::nullopt);

  // Adds a sequence with no tokens yet; returns its id.
  int add_sequence();
  void release_sequence(int id);
  int64_t length(int id) const { return seqs_[id].len; }

  // The adapters of one item, slots in the bank given to set_lora(): `slot` (-1 = base model) at `scale`
  // (a multiplier of its alpha/r, kernels/lora.h), then `more` (slot, scale) stacked on it in order.
  // Converts from a plain slot, so {seq, tokens, all_logits, slot} reads as before.
  struct LoraStack {
    LoraStack(int32_t s = -1, float m = 1.f, std::vector<std::pair<int32_t, float>> rest = {})  // NOLINT
        : slot(s), scale(m), more(std::move(rest)) {}
    int32_t slot;
    float scale;
    std::vector<std::pair<int32_t, float>> more;
  };
  // One item of a step: append `tokens` to sequence `seq`; want_all_logits asks for a logits row for every
  // appended token, otherwise only the last one's.
  struct Item {
    int seq;
    std::span<const int32_t> tokens;
    bool want_all_logits = false;
    LoraStack lora{};  // an adapter slot (-1 = base model), or a slot with a scale and more stacked on it
  };
  // Runs ONE forward call over all items and returns the logits rows, in item order
  // (rows × vocab, row-major). Throws lp::Error if the KV cache or the context length is exhausted.
  const Buffer<float>& step(std::span<const Item> items);

  kv::KvCache& cache() { return *cache_; }
  // Adapter slots the items' LoraStacks refer to (must outlive the runner's steps); null = none.
  void set_lora(const LoraBankView* lora) { lora_ = lora; }

 private:
  struct Seq {
    kv::SeqBlocks blocks;
    int64_t len = 0;
    bool live = false;
  };
  Executor& model_;
  ComputePool& pool_;
  std::unique_ptr<kv::KvCache> cache_;
  std::vector<Seq> seqs_;
  Batch batch_;
  Buffer<float> logits_;
  const LoraBankView* lora_ = nullptr;
};

}  // namespace lp::model
