#include "kv/kv_cache.h"

#include "core/check.h"

namespace lp::kv {

BlockAllocator::BlockAllocator(int num_blocks) : num_blocks_(num_blocks), in_use_(num_blocks, 0) {
  LP_CHECK(num_blocks >= 0);
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // block 0 handed out first
}

int32_t BlockAllocator::allocate() {
  if (free_.empty()) return -1;
  int32_t b = free_.back();
  free_.pop_back();
  in_use_[b] = 1;
  return b;
}

void BlockAllocator::release(int32_t block) {
  LP_CHECK(block >= 0 && block < num_blocks_, "block {} out of range", block);
  LP_CHECK(in_use_[block], "double free of block {}", block);
  in_use_[block] = 0;
  free_.push_back(block);
}

KvCache::KvCache(const KvShape& shape, int num_blocks)
    : shape_(shape), num_blocks_(num_blocks), alloc_(num_blocks) {
  LP_CHECK(shape.n_layers > 0 && shape.n_kv_heads > 0 && shape.head_dim > 0 && shape.block_size > 0);
  size_t n = static_cast<size_t>(layer_stride()) * shape.n_layers;
  k_.resize(n);
  v_.resize(n);
  // Untouched blocks are never read (attention reads only positions < ctx_len), but zeroing makes the
  // memory resident up front so the first requests don't pay page faults.
  k_.zero();
  v_.zero();
}

bool SeqBlocks::reserve(BlockAllocator& alloc, int block_size, int64_t n_tokens) {
  int64_t need = (n_tokens + block_size - 1) / block_size - static_cast<int64_t>(table_.size());
  if (need <= 0) return true;
  if (need > alloc.num_free()) return false;
  for (int64_t i = 0; i < need; ++i) table_.push_back(alloc.allocate());
  return true;
}

int32_t SeqBlocks::slot(int64_t pos, int block_size) const {
  size_t bi = static_cast<size_t>(pos / block_size);
  LP_CHECK(pos >= 0 && bi < table_.size(), "position {} not reserved ({} blocks)", pos, table_.size());
  return table_[bi] * block_size + static_cast<int32_t>(pos % block_size);
}

void SeqBlocks::release(BlockAllocator& alloc) {
  for (int32_t b : table_) alloc.release(b);
  table_.clear();
}

}  // namespace lp::kv
