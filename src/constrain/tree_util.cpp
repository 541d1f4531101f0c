#include "constrain/tree_util.h"

#include <utf8proc.h>

#include <algorithm>
#include <unordered_map>

namespace lp::constrain {

std::optional<std::vector<uint32_t>> decode_utf8(std::string_view utf8) {
  std::vector<uint32_t> out;
  out.reserve(utf8.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(utf8.data());
  auto left = static_cast<utf8proc_ssize_t>(utf8.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0 || cp < 0) return std::nullopt;
    out.push_back(static_cast<uint32_t>(cp));
    p += n;
    left -= n;
  }
  return out;
}

std::string encode_utf8(uint32_t cp) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

namespace {

constexpr int64_t kInf = -1;

int64_t add(int64_t a, int64_t b) {
  return a == kInf || b == kInf ? kInf : std::min<int64_t>(a + b, INT64_MAX / 4);
}
int64_t mul(int64_t a, int64_t k) {
  if (k == kInf) return a == 0 ? 0 : kInf;
  if (a == kInf) return k == 0 ? 0 : kInf;
  return a != 0 && k > INT64_MAX / 4 / a ? INT64_MAX / 4 : a * k;
}

}  // namespace

namespace {

using BoundsMemo = std::unordered_map<const Node*, LengthBounds>;
LengthBounds bounds(const Node& n, BoundsMemo& memo);

LengthBounds bounds_uncached(const Node& n, BoundsMemo& memo) {
  switch (n.kind) {
    case Node::Kind::kEmpty:
      return {0, 0};
    case Node::Kind::kText: {
      auto cps = decode_utf8(n.text);
      const int64_t len = cps ? static_cast<int64_t>(cps->size()) : static_cast<int64_t>(n.text.size());
      return {len, len};
    }
    case Node::Kind::kSet:
      return n.ranges.empty() ? LengthBounds{-1, 0} : LengthBounds{1, 1};
    case Node::Kind::kConcat: {
      LengthBounds b{0, 0};
      for (const auto& k : n.kids) {
        const LengthBounds kb = bounds(*k, memo);
        if (kb.min < 0) return {-1, 0};
        b.min = add(b.min, kb.min);
        b.max = add(b.max, kb.max);
      }
      return b;
    }
    case Node::Kind::kAlt: {
      LengthBounds b{-1, 0};
      for (const auto& k : n.kids) {
        const LengthBounds kb = bounds(*k, memo);
        if (kb.min < 0) continue;
        b.min = b.min < 0 ? kb.min : std::min(b.min, kb.min);
        b.max = b.max == kInf || kb.max == kInf ? kInf : std::max(b.max, kb.max);
      }
      return b;
    }
    case Node::Kind::kRepeat: {
      const LengthBounds item = bounds(*n.kids[0], memo);
      LengthBounds sep{0, 0};
      if (n.kids.size() > 1) sep = bounds(*n.kids[1], memo);
      if (n.max == 0) return {0, 0};
      if (item.min < 0 || (sep.min < 0 && n.min > 1))
        return n.min == 0 ? LengthBounds{0, 0} : LengthBounds{-1, 0};
      LengthBounds b;
      b.min = add(mul(item.min, n.min), n.min > 0 ? mul(std::max<int64_t>(sep.min, 0), n.min - 1) : 0);
      if (sep.min < 0) {  // a separator that matches nothing leaves at most one item
        b.max = item.max;
      } else {
        const int64_t k = n.max < 0 ? kInf : n.max;
        b.max = add(mul(item.max, k), mul(sep.max, k == kInf ? kInf : k - 1));
      }
      return b;
    }
  }
  return {0, 0};
}

// Memoized, so a subtree shared many times (a JSON value reused at every position) costs once.
LengthBounds bounds(const Node& n, BoundsMemo& memo) {
  if (auto it = memo.find(&n); it != memo.end()) return it->second;
  const LengthBounds b = bounds_uncached(n, memo);
  memo.emplace(&n, b);
  return b;
}

}  // namespace

LengthBounds length_bounds(const Node& n) {
  BoundsMemo memo;
  return bounds(n, memo);
}

namespace {

uint64_t expanded(const Node* n, uint64_t cap, std::unordered_map<const Node*, uint64_t>& memo) {
  if (auto it = memo.find(n); it != memo.end()) return it->second;
  uint64_t size = 1;
  for (const auto& k : n->kids) size = std::min(cap, size + expanded(k.get(), cap, memo));
  memo.emplace(n, size);
  return size;
}

}  // namespace

uint64_t expanded_size(const NodePtr& n, uint64_t cap) {
  std::unordered_map<const Node*, uint64_t> memo;
  return expanded(n.get(), cap, memo);
}

}  // namespace lp::constrain
