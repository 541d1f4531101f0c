// Paged KV cache storage and its block allocator.
// The cache is `num_blocks` fixed-size blocks per layer; a sequence owns a list of blocks (its block table)
// and grows one block at a time, so a growing sequence's KV is never copied. Blocks are handed out from a
// free list. Layout of one layer (f32):
//   k[block][kv_head][slot_in_block][head_dim]     (v likewise)
// so one head's keys of one block are contiguous (what attention streams).
// Owned by the engine thread; not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "core/buffer.h"

namespace lp::kv {

struct KvShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int64_t bytes_per_token() const { return int64_t{2} * n_layers * n_kv_heads * head_dim * 4; }
  int64_t bytes_per_block() const { return bytes_per_token() * block_size; }
};

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);
  // Returns a free block id, or -1 when none is left.
  int32_t allocate();
  void release(int32_t block);
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_blocks() const { return num_blocks_; }

 private:
  int num_blocks_;
  std::vector<int32_t> free_;      // LIFO: recently freed blocks are warm in cache
  std::vector<uint8_t> in_use_;    // (num_blocks) guards double free
};

class KvCache {
 public:
  KvCache(const KvShape& shape, int num_blocks);
  const KvShape& shape() const { return shape_; }
  int num_blocks() const { return num_blocks_; }
  float* k(int layer) { return k_.data() + layer_stride() * layer; }
  float* v(int layer) { return v_.data() + layer_stride() * layer; }
  BlockAllocator& allocator() { return alloc_; }
  const BlockAllocator& allocator() const { return alloc_; }
  int64_t bytes() const { return 2 * layer_stride() * shape_.n_layers * 4; }

 private:
  int64_t layer_stride() const {
    return int64_t{num_blocks_} * shape_.n_kv_heads * shape_.block_size * shape_.head_dim;
  }
  KvShape shape_;
  int num_blocks_;
  Buffer<float> k_;  // (n_layers, num_blocks, n_kv_heads, block_size, head_dim)
  Buffer<float> v_;  // same
  BlockAllocator alloc_;
};

// The blocks of one sequence. Grows on demand; returns its blocks to the allocator on release().
class SeqBlocks {
 public:
  SeqBlocks() = default;
  // Makes room for `n_tokens` tokens in total. Returns false (and allocates nothing) if the allocator
  // does not have enough free blocks.
  bool reserve(BlockAllocator& alloc, int block_size, int64_t n_tokens);
  // Physical cache slot of token position `pos` (which must be reserved).
  int32_t slot(int64_t pos, int block_size) const;
  void release(BlockAllocator& alloc);
  const std::vector<int32_t>& table() const { return table_; }
  int64_t capacity(int block_size) const { return static_cast<int64_t>(table_.size()) * block_size; }

 private:
  std::vector<int32_t> table_;
};

}  // namespace lp::kv
