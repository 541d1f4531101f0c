#include "model/runner.h"

#include "core/check.h"

namespace lp::model {

Runner::Runner(Executor& model, ComputePool& pool, int64_t kv_tokens, int block_size,
               std::optional<DType> kv_dtype)
    : model_(model),
      pool_(pool),
      cache_(model.make_kv_cache(model.kv_shape(block_size, kv_dtype),
                                 static_cast<int>((kv_tokens + block_size - 1) / block_size))) {}

int Runner::add_sequence() {
  seqs_.push_back(Seq{});
  seqs_.back().live = true;
  return static_cast<int>(seqs_.size()) - 1;
}

void Runner::release_sequence(int id) {
  LP_CHECK(id >= 0 && id < static_cast<int>(seqs_.size()) && seqs_[id].live);
  seqs_[id].blocks.release(cache_->allocator());
  seqs_[id].live = false;
  seqs_[id].len = 0;
}

const Buffer<float>& Runner::step(std::span<const Item> items) {
  const int bs = cache_->shape().block_size;
  const int64_t max_len = model_.config().max_model_len;
  batch_.clear();
  for (size_t a = 0; a < items.size(); ++a)
    for (size_t b = a + 1; b < items.size(); ++b)
      LP_CHECK(items[a].seq != items[b].seq, "sequence {} appears twice in one step", items[a].seq);
  bool any_lora = false;
  for (const Item& it : items) any_lora |= it.lora.slot >= 0 || !it.lora.more.empty();
  LP_CHECK(!any_lora || lora_ != nullptr, "an item names an adapter slot but no bank is set");
  for (const Item& it : items) {
    LP_CHECK(it.seq >= 0 && it.seq < static_cast<int>(seqs_.size()) && seqs_[it.seq].live);
    LP_CHECK(!it.tokens.empty(), "empty item");
    Seq& s = seqs_[it.seq];
    int64_t new_len = s.len + static_cast<int64_t>(it.tokens.size());
    if (new_len > max_len) fail("sequence of {} tokens exceeds the context length {}", new_len, max_len);
    if (!s.blocks.reserve(cache_->allocator(), bs, new_len))
      fail("KV cache full: {} tokens do not fit ({} free blocks of {})", new_len,
           cache_->allocator().num_free(), bs);
    kernels::AttnSeq as;
    as.q_begin = static_cast<int32_t>(batch_.tokens.size());
    as.q_len = static_cast<int32_t>(it.tokens.size());
    as.ctx_len = static_cast<int32_t>(new_len);
    as.block_table = s.blocks.table().data();
    batch_.seqs.push_back(as);
    for (size_t i = 0; i < it.tokens.size(); ++i) {
      int64_t pos = s.len + static_cast<int64_t>(i);
      if (it.want_all_logits || i + 1 == it.tokens.size())
        batch_.logit_rows.push_back(static_cast<int32_t>(batch_.tokens.size()));
      batch_.tokens.push_back(it.tokens[i]);
      batch_.positions.push_back(static_cast<int32_t>(pos));
      batch_.slots.push_back(s.blocks.slot(pos, bs));
      if (any_lora) {  // a scale of 1 computes exactly what no scale does (kernels/lora.h)
        batch_.lora_slots.push_back(it.lora.slot);
        batch_.lora_scales.push_back(it.lora.scale);
      }
      for (auto [slot, scale] : it.lora.more)
        batch_.lora_more.push_back({static_cast<int32_t>(batch_.tokens.size() - 1), slot, scale});
    }
  }
  logits_.resize(batch_.logit_rows.size() * static_cast<size_t>(model_.config().vocab_size));
  model_.forward(pool_, batch_, *cache_, logits_.data(), any_lora ? lora_ : nullptr);
  // Lengths advance only once the step has run: an error above leaves every sequence as it was (blocks
  // reserved for the failed step are reused by the next one).
  for (const Item& it : items) seqs_[it.seq].len += static_cast<int64_t>(it.tokens.size());
  return logits_;
}

}  // namespace lp::model
