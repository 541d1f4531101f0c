// LruList: the recency order of a cache tier (adapter slots, the host tier). touch() makes a key the most
// recently used; victim() walks from the least recently used end and returns the first key the caller may
// evict (held slots, pinned adapters and in-progress loads are skipped by the predicate, never reordered).
// Cost: touch/erase O(1) (hash map to list node); victim O(number of keys skipped).
// Not thread-safe: the owner's mutex guards it.
#pragma once

#include <cstddef>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace lp::lora {

template <class Key, class Hash = std::hash<Key>>
class LruList {
 public:
  // Moves `k` to the most-recently-used end (inserting it when absent).
  void touch(const Key& k) {
    auto it = pos_.find(k);
    if (it != pos_.end()) {
      order_.splice(order_.end(), order_, it->second);
      return;
    }
    order_.push_back(k);
    pos_.emplace(k, std::prev(order_.end()));
  }
  void erase(const Key& k) {
    auto it = pos_.find(k);
    if (it == pos_.end()) return;
    order_.erase(it->second);
    pos_.erase(it);
  }
  bool contains(const Key& k) const { return pos_.count(k) != 0; }
  size_t size() const { return order_.size(); }

  // The least recently used key for which evictable(key) is true; nullopt when none is.
  template <class Pred>
  std::optional<Key> victim(Pred&& evictable) const {
    for (const Key& k : order_)
      if (evictable(k)) return k;
    return std::nullopt;
  }
  // Keys from least to most recently used (for tests and listings).
  std::vector<Key> order() const { return {order_.begin(), order_.end()}; }

 private:
  std::list<Key> order_;  // front = least recently used
  std::unordered_map<Key, typename std::list<Key>::iterator, Hash> pos_;
};

}  // namespace lp::lora
