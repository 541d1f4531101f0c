#include "kv/kv_cache.h"

#include <algorithm>

#include "core/check.h"

namespace lp::kv {

uint64_t block_hash(uint64_t prev, uint64_t adapter_key, std::span<const int32_t> tokens) {
  // FNV-1a over (prev, adapter, tokens) then a splitmix finalizer; 0 is reserved for "no hash".
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
  };
  mix(prev);
  mix(adapter_key);
  for (int32_t t : tokens) mix(static_cast<uint32_t>(t));
  h ^= h >> 31;
  h *= 0x7fb5d329728ea185ull;
  h ^= h >> 27;
  return h == 0 ? 1 : h;
}

BlockAllocator::BlockAllocator(int num_blocks, int block_size)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      cached_pos_(num_blocks),
      refs_(num_blocks, 0),
      hash_(num_blocks, 0),
      gen_(num_blocks, 0),
      id_adapter_(num_blocks, 0),
      id_parent_(num_blocks, -1),
      id_parent_gen_(num_blocks, 0),
      id_tokens_(static_cast<size_t>(num_blocks) * static_cast<size_t>(block_size), 0) {
  LP_CHECK(num_blocks >= 0 && block_size > 0);
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);  // block 0 handed out first
}

int32_t BlockAllocator::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!cached_.empty()) {
    b = cached_.front();  // least recently used cached block: forget its hash
    cached_.pop_front();
    index_.erase(hash_[b]);
    hash_[b] = 0;
  } else {
    return -1;
  }
  LP_CHECK(refs_[b] == 0);
  refs_[b] = 1;
  ++gen_[b];  // new contents: blocks registered with this one as their parent no longer match
  return b;
}

void BlockAllocator::release(int32_t block) {
  LP_CHECK(block >= 0 && block < num_blocks_, "block {} out of range", block);
  LP_CHECK(refs_[block] > 0, "double free of block {}", block);
  if (--refs_[block] > 0) return;
  if (hash_[block] != 0) {
    cached_.push_back(block);
    cached_pos_[block] = std::prev(cached_.end());
  } else {
    free_.push_back(block);
  }
}

bool BlockAllocator::identity_matches(int32_t b, const BlockIdentity& id) const {
  if (id_adapter_[b] != id.adapter_key || id_parent_[b] != id.parent) return false;
  if (id.parent >= 0 && id_parent_gen_[b] != gen_[id.parent]) return false;
  LP_CHECK(id.tokens.size() == static_cast<size_t>(block_size_), "block identity of {} tokens", id.tokens.size());
  const int32_t* t = id_tokens_.data() + static_cast<size_t>(b) * block_size_;
  return std::equal(id.tokens.begin(), id.tokens.end(), t);
}

int32_t BlockAllocator::lookup(uint64_t hash, const BlockIdentity& id) {
  auto it = index_.find(hash);
  if (it == index_.end()) return -1;
  int32_t b = it->second;
  if (!identity_matches(b, id)) return -1;
  if (refs_[b] == 0) cached_.erase(cached_pos_[b]);
  ++refs_[b];
  return b;
}

void BlockAllocator::set_hash(int32_t block, uint64_t hash, const BlockIdentity& id) {
  LP_CHECK(block >= 0 && block < num_blocks_ && refs_[block] > 0 && hash != 0);
  LP_CHECK(id.tokens.size() == static_cast<size_t>(block_size_), "block identity of {} tokens", id.tokens.size());
  LP_CHECK(id.parent < num_blocks_ && (id.parent < 0 || refs_[id.parent] > 0), "parent block {} not held", id.parent);
  if (hash_[block] != 0 || index_.count(hash)) return;
  hash_[block] = hash;
  index_[hash] = block;
  id_adapter_[block] = id.adapter_key;
  id_parent_[block] = id.parent;
  id_parent_gen_[block] = id.parent >= 0 ? gen_[id.parent] : 0;
  std::copy(id.tokens.begin(), id.tokens.end(), id_tokens_.begin() + static_cast<ptrdiff_t>(block) * block_size_);
}

KvCache::KvCache(const KvShape& shape, int num_blocks)
    : shape_(shape), num_blocks_(num_blocks), alloc_(num_blocks, shape.block_size) {
  LP_CHECK(shape.n_layers > 0 && shape.n_kv_heads > 0 && shape.head_dim > 0 && shape.block_size > 0);
  size_t n = static_cast<size_t>(layer_stride() * shape.n_layers * esize());
  k_.resize(n);
  v_.resize(n);
  // Untouched blocks are never read (attention reads only positions < ctx_len), but zeroing makes the
  // memory resident up front so the first requests don't pay page faults.
  k_.zero();
  v_.zero();
  k_base_ = k_.data();
  v_base_ = v_.data();
}

KvCache::KvCache(const KvShape& shape, int num_blocks, DeviceMemory& memory)
    : shape_(shape), num_blocks_(num_blocks), alloc_(num_blocks, shape.block_size) {
  LP_CHECK(shape.n_layers > 0 && shape.n_kv_heads > 0 && shape.head_dim > 0 && shape.block_size > 0);
  const size_t n = static_cast<size_t>(layer_stride() * shape.n_layers * esize());
  k_device_ = memory.allocate(n);
  v_device_ = memory.allocate(n);
  k_base_ = static_cast<uint8_t*>(k_device_.get());
  v_base_ = static_cast<uint8_t*>(v_device_.get());
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
