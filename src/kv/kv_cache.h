// Paged KV cache storage, its block allocator, and the prefix-cache index.
// The cache is `num_blocks` fixed-size blocks per layer; a sequence owns a list of blocks (its block table)
// and grows one block at a time, so a growing sequence's KV is never copied. Layout of one layer:
//   k[block][kv_head][slot_in_block][head_dim]     (v likewise)
// so one head's keys of one block are contiguous (what attention streams). Elements are F32, BF16 or F16
// (KvShape::dtype; by default the model's torch_dtype, as vLLM's --kv-cache-dtype auto): a 16-bit cache
// holds twice the tokens and halves the bytes a decode step's attention reads.
//
// Prefix caching: a full block can be registered under a hash of (adapter identity, every token up to and
// including this block). A later sequence with the same adapter and the same leading tokens adopts those
// blocks instead of recomputing them (blocks are reference-counted and shared read-only). A block whose last
// user is gone stays cached (LRU) until its memory is needed. Two adapters never share KV: the adapter
// identity is part of every hash.
// The hash only finds a candidate; a hit is accepted only when the candidate's identity equals the
// request's exactly (BlockIdentity: adapter, tokens of the block, and the very block before it, unchanged
// since). So a crafted (or accidental) hash collision can never hand one tenant another tenant's KV, whatever
// the hash function: equal hashes of different prompts just miss.
// Owned by the engine thread; not thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/buffer.h"
#include "core/device_memory.h"
#include "core/dtype.h"

namespace lp::kv {

struct KvShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  DType dtype = DType::kF32;
  int64_t bytes_per_token() const {
    return int64_t{2} * n_layers * n_kv_heads * head_dim * static_cast<int64_t>(dtype_size(dtype));
  }
  int64_t bytes_per_block() const { return bytes_per_token() * block_size; }
};

// Hash of one full block given the hash of the block before it (0 for the first) and the adapter identity.
uint64_t block_hash(uint64_t prev, uint64_t adapter_key, std::span<const int32_t> tokens);

// What a cached block must match for a prefix-cache hit. By induction this pins the whole prefix: the parent
// block was itself verified (or computed) by the sequence that looks up this one, and a block's generation
// changes whenever it is handed out again, so "the same parent, same generation" means the same tokens before.
struct BlockIdentity {
  uint64_t adapter_key = 0;           // the adapter registration (0 = base model)
  int32_t parent = -1;                // the physical block before this one in the sequence (-1: first)
  std::span<const int32_t> tokens;    // the block's token ids (block_size of them)
};

class BlockAllocator {
 public:
  // `block_size` tokens per block (the identity of a cached block keeps that many token ids).
  BlockAllocator(int num_blocks, int block_size);
  // A block with one reference: a never-used one if any, else the least recently used cached block (whose
  // hash is forgotten). -1 when every block is referenced.
  int32_t allocate();
  // Drops one reference; at zero the block becomes free (cached if it has a hash).
  void release(int32_t block);
  // The cached block registered under `hash` whose identity equals `id`, with one more reference; -1 if
  // none (no block under that hash, or one that only collides).
  int32_t lookup(uint64_t hash, const BlockIdentity& id);
  // Registers a full, computed block under `hash` with its identity (no-op if the block already has a hash
  // or another block holds that hash: a colliding block is simply not shared).
  void set_hash(int32_t block, uint64_t hash, const BlockIdentity& id);

  int num_free() const { return static_cast<int>(free_.size() + cached_.size()); }  // allocatable now
  int num_blocks() const { return num_blocks_; }
  int num_cached() const { return static_cast<int>(index_.size()); }

 private:
  bool identity_matches(int32_t block, const BlockIdentity& id) const;

  int num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;  // unreferenced blocks without a hash (LIFO: warm first)
  std::list<int32_t> cached_;  // unreferenced blocks with a hash, least recently used first
  std::vector<std::list<int32_t>::iterator> cached_pos_;  // (num_blocks) valid while in cached_
  std::vector<int32_t> refs_;                             // (num_blocks)
  std::vector<uint64_t> hash_;                            // (num_blocks) 0 = none
  std::unordered_map<uint64_t, int32_t> index_;           // hash -> block
  // Identity of each hashed block: adapter, parent (block, generation) and its tokens.
  std::vector<uint64_t> gen_;             // (num_blocks) bumped every time allocate() hands the block out
  std::vector<uint64_t> id_adapter_;      // (num_blocks)
  std::vector<int32_t> id_parent_;        // (num_blocks)
  std::vector<uint64_t> id_parent_gen_;   // (num_blocks)
  std::vector<int32_t> id_tokens_;        // (num_blocks, block_size)
};

class KvCache {
 public:
  // Storage in host memory.
  KvCache(const KvShape& shape, int num_blocks);
  // Storage in an executor's device memory (model/executor.h): k() and v() are then device pointers, which
  // only that executor's forward reads; the allocator and the prefix index stay here, on the host.
  KvCache(const KvShape& shape, int num_blocks, DeviceMemory& memory);
  const KvShape& shape() const { return shape_; }
  int num_blocks() const { return num_blocks_; }
  bool on_device() const { return k_device_ != nullptr; }
  // Layer `layer`'s K (V) array: layer_stride() elements of shape().dtype.
  void* k(int layer) { return k_base_ + layer_stride() * layer * esize(); }
  void* v(int layer) { return v_base_ + layer_stride() * layer * esize(); }
  BlockAllocator& allocator() { return alloc_; }
  const BlockAllocator& allocator() const { return alloc_; }
  int64_t bytes() const { return 2 * layer_stride() * shape_.n_layers * esize(); }

 private:
  int64_t esize() const { return static_cast<int64_t>(dtype_size(shape_.dtype)); }
  int64_t layer_stride() const {  // elements
    return int64_t{num_blocks_} * shape_.n_kv_heads * shape_.block_size * shape_.head_dim;
  }
  KvShape shape_;
  int num_blocks_;
  Buffer<uint8_t> k_;  // (n_layers, num_blocks, n_kv_heads, block_size, head_dim) elements of shape_.dtype
  Buffer<uint8_t> v_;  // same
  std::shared_ptr<void> k_device_, v_device_;  // instead of k_ / v_ when the storage is on a device
  uint8_t* k_base_ = nullptr;
  uint8_t* v_base_ = nullptr;
  BlockAllocator alloc_;
};

// The blocks of one sequence. Grows on demand; drops its references on release().
class SeqBlocks {
 public:
  SeqBlocks() = default;
  // Makes room for `n_tokens` tokens in total. Returns false (and allocates nothing) if the allocator
  // does not have enough free blocks.
  bool reserve(BlockAllocator& alloc, int block_size, int64_t n_tokens);
  // Appends a shared block found by BlockAllocator::lookup (its reference is now ours).
  void adopt(int32_t block) { table_.push_back(block); }
  // Physical cache slot of token position `pos` (which must be reserved).
  int32_t slot(int64_t pos, int block_size) const;
  void release(BlockAllocator& alloc);
  const std::vector<int32_t>& table() const { return table_; }
  int64_t capacity(int block_size) const { return static_cast<int64_t>(table_.size()) * block_size; }

 private:
  std::vector<int32_t> table_;
};

}  // namespace lp::kv
