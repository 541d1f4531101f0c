// The prefix-cache index accepts a hit only for a block whose identity (adapter, tokens, the very block before
// it) equals the request's: hashes that collide, on purpose or not, never share KV.
#include <gtest/gtest.h>

#include <vector>

#include "kv/kv_cache.h"

namespace lp::kv {
namespace {

constexpr int kBs = 4;

BlockIdentity id_of(uint64_t adapter, int32_t parent, const std::vector<int32_t>& toks) {
  return BlockIdentity{adapter, parent, std::span<const int32_t>(toks)};
}

TEST(PrefixCache, HitNeedsTheSameTokensAdapterAndParent) {
  BlockAllocator a(8, kBs);
  std::vector<int32_t> t1 = {1, 2, 3, 4}, t2 = {5, 6, 7, 8}, other = {1, 2, 3, 5};
  int32_t b0 = a.allocate(), b1 = a.allocate();
  a.set_hash(b0, 42, id_of(0, -1, t1));
  a.set_hash(b1, 43, id_of(0, b0, t2));
  // Same hash, different tokens / adapter: a miss, and no reference taken.
  EXPECT_EQ(a.lookup(42, id_of(0, -1, other)), -1);
  EXPECT_EQ(a.lookup(42, id_of(7, -1, t1)), -1);
  // The right identity hits.
  int32_t h0 = a.lookup(42, id_of(0, -1, t1));
  EXPECT_EQ(h0, b0);
  // The second block only with b0 as its parent.
  EXPECT_EQ(a.lookup(43, id_of(0, -1, t2)), -1);
  EXPECT_EQ(a.lookup(43, id_of(0, b0, t2)), b1);
  a.release(b1);
  a.release(b1);
  a.release(b0);
  a.release(b0);
  EXPECT_EQ(a.num_free(), 8);
}

TEST(PrefixCache, ChildOfAReusedParentNeverMatches) {
  BlockAllocator a(2, kBs);  // two blocks: reusing one forces the parent out
  std::vector<int32_t> t1 = {1, 2, 3, 4}, t2 = {5, 6, 7, 8}, t3 = {9, 9, 9, 9};
  int32_t p = a.allocate(), c = a.allocate();
  a.set_hash(p, 10, id_of(0, -1, t1));
  a.set_hash(c, 11, id_of(0, p, t2));
  a.release(p);  // p is the least recently used cached block
  a.release(c);
  int32_t q = a.allocate();  // evicts p (its hash forgotten) and hands the same block out with new contents
  EXPECT_EQ(q, p);
  a.set_hash(q, 12, id_of(0, -1, t3));
  // A request whose first block is q (prefix t3) must not adopt c (computed after t1): same parent index,
  // different generation.
  EXPECT_EQ(a.lookup(11, id_of(0, q, t2)), -1);
  a.release(q);
}

TEST(PrefixCache, CollidingRegistrationIsNotShared) {
  BlockAllocator a(4, kBs);
  std::vector<int32_t> t1 = {1, 2, 3, 4}, t2 = {4, 3, 2, 1};
  int32_t b0 = a.allocate(), b1 = a.allocate();
  a.set_hash(b0, 99, id_of(0, -1, t1));
  a.set_hash(b1, 99, id_of(0, -1, t2));  // same hash: not indexed
  EXPECT_EQ(a.lookup(99, id_of(0, -1, t2)), -1);
  EXPECT_EQ(a.lookup(99, id_of(0, -1, t1)), b0);
  a.release(b0);
  a.release(b0);
  a.release(b1);
}

}  // namespace
}  // namespace lp::kv
