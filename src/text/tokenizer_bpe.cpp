#include "text/tokenizer_bpe.h"

#include <algorithm>

#include "core/check.h"
#include "io/json_file.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  shift_ = 60;
  while (cap < n * 2) {
    cap <<= 1;
    --shift_;
  }
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
}

bool MergeTable::insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
  LP_CHECK(!slots_.empty() && size_ * 2 < slots_.size(), "MergeTable::insert beyond reserve()");
  const uint64_t key = pack(a, b);
  for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == key) return false;
    if (s.key == kEmpty) {
      s.key = key;
      s.value = (uint64_t{static_cast<uint32_t>(rank)} << 32) | static_cast<uint32_t>(merged);
      ++size_;
      return true;
    }
  }
}

void StringIdTable::reserve(size_t count, size_t total_bytes) {
  size_t cap = 16;
  while (cap < count * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
  arena_.clear();
  arena_.reserve(total_bytes);
}

bool StringIdTable::insert(std::string_view s, int32_t id) {
  LP_CHECK(id >= 0 && !slots_.empty() && (size_ + 1) * 2 <= slots_.size(),
           "StringIdTable::insert beyond reserve()");
  LP_CHECK(arena_.size() + s.size() < UINT32_MAX, "StringIdTable arena overflow");
  const size_t h = StringHash{}(s);
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    Slot& slot = slots_[i];
    if (slot.id < 0) {
      slot = Slot{tag, id, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(s.size())};
      arena_.append(s);
      ++size_;
      return true;
    }
    if (slot.tag == tag && slot.len == s.size() &&
        std::string_view(arena_.data() + slot.offset, slot.len) == s)
      return false;
  }
}

namespace {

constexpr std::string_view kBpeWhat = "BPE model";
constexpr std::string_view kMetaspace = "\u2581";  // "▁"

// One merge as two tokens; the joined "a b" form must have exactly one space.
std::pair<std::string_view, std::string_view> merge_parts(const MergeSpec& m, size_t rank) {
  if (!m.joined) return {m.a, m.b};
  const std::string& s = m.a;
  const size_t sp = s.find(' ');
  if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
    fail("{}: merge #{} '{}' is not two tokens separated by one space", kBpeWhat, rank, s);
  return {std::string_view(s).substr(0, sp), std::string_view(s).substr(sp + 1)};
}

// A symbol of the word being merged: a token id in a doubly linked list over the initial characters.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

// A candidate merge of symbol `pos` with its right neighbour, ordered by rank then position.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t merged;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

std::unique_ptr<BpeModel> BpeModel::from_json(const Json& model) {
  const Json& vocab_json = json_field(model, "vocab", kBpeWhat);
  if (!vocab_json.is_object()) fail("{}: 'vocab' must be an object of token → id", kBpeWhat);
  std::vector<std::pair<std::string, int64_t>> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [token, id] : vocab_json.items()) {
    if (!id.is_number_integer()) fail("{}: vocab id of '{}' must be an integer", kBpeWhat, token);
    vocab.emplace_back(token, id.get<int64_t>());
  }
  const Json& merges_json = json_field(model, "merges", kBpeWhat);
  if (!merges_json.is_array()) fail("{}: 'merges' must be an array", kBpeWhat);
  std::vector<MergeSpec> merges;
  merges.reserve(merges_json.size());
  for (const Json& m : merges_json) {
    if (m.is_string()) {
      merges.push_back(MergeSpec{m.get<std::string>(), {}, true});
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(MergeSpec{m[0].get<std::string>(), m[1].get<std::string>(), false});
    } else {
      fail("{}: merge #{} must be \"a b\" or [\"a\", \"b\"], got {}", kBpeWhat, merges.size(),
           io::json_type_name(m));
    }
  }
  return from_parts(model, std::move(vocab), std::move(merges));
}

std::unique_ptr<BpeModel> BpeModel::from_parts(const Json& model,
                                               std::vector<std::pair<std::string, int64_t>> vocab,
                                               std::vector<MergeSpec> merges) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  size_t total_bytes = 0;
  for (const auto& [token, id] : vocab) total_bytes += token.size();
  m->vocab_.reserve(vocab.size(), total_bytes);
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0 || id > int64_t{64} * 1024 * 1024)
      fail("{}: vocab id of '{}' must be a non-negative integer below 2^26", kBpeWhat, token);
    // A repeated token is refused. Only a streamed vocab can repeat one (a DOM object keeps just the last
    // value of a repeated key). HF tokenizers would keep the last id, but the files it writes never repeat
    // a token: a repeat means a malformed file, refused rather than loaded with a guess.
    if (!m->vocab_.insert(token, static_cast<int32_t>(id)))
      fail("{}: token '{}' appears twice in the vocab", kBpeWhat, token);
    max_id = std::max(max_id, id);
  }
  vocab.clear();
  vocab.shrink_to_fit();
  m->tokens_.resize(static_cast<size_t>(max_id + 1));
  m->vocab_.for_each([&](std::string_view token, int32_t id) {
    if (m->tokens_[id].data()) fail("{}: tokens '{}' and '{}' share id {}", kBpeWhat, m->tokens_[id], token, id);
    m->tokens_[id] = token;
  });

  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      fail("{}: BPE dropout is not supported (it makes encoding random)", kBpeWhat);
  }
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    const std::string unk = json_string(model, "unk_token", kBpeWhat);
    const int32_t id = m->vocab_.find(unk);
    if (id < 0) fail("{}: unk_token '{}' is not in the vocab", kBpeWhat, unk);
    m->unk_id_ = id;
  }
  m->fuse_unk_ = json_bool_or(model, "fuse_unk", false, kBpeWhat);
  m->byte_fallback_ = json_bool_or(model, "byte_fallback", false, kBpeWhat);
  m->ignore_merges_ = json_bool_or(model, "ignore_merges", false, kBpeWhat);
  if (auto it = model.find("continuing_subword_prefix"); it != model.end() && !it->is_null())
    m->prefix_ = json_string(model, "continuing_subword_prefix", kBpeWhat);
  if (auto it = model.find("end_of_word_suffix"); it != model.end() && !it->is_null())
    m->suffix_ = json_string(model, "end_of_word_suffix", kBpeWhat);
  for (int b = 0; b < 256; ++b) m->byte_ids_[b] = m->vocab_.find(fmt::format("<0x{:02X}>", b));

  m->merges_.reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto [a, b] = merge_parts(merges[rank], rank);
    const int32_t ia = m->vocab_.find(a);
    const int32_t ib = m->vocab_.find(b);
    if (ia < 0 || ib < 0)
      fail("{}: merge #{} '{} {}' uses a token that is not in the vocab", kBpeWhat, rank, a, b);
    joined.assign(a);
    joined.append(!m->prefix_.empty() && b.starts_with(m->prefix_) ? b.substr(m->prefix_.size()) : b);
    const int32_t im = m->vocab_.find(joined);
    if (im < 0)
      fail("{}: merge #{} '{} {}' makes '{}', which is not in the vocab", kBpeWhat, rank, a, b, joined);
    m->merges_.insert(ia, ib, static_cast<int32_t>(rank), im);
  }
  m->cache_ = std::make_unique<CacheShard[]>(kCacheShards);
  if (m->prefix_.empty() && m->suffix_.empty() && !m->ignore_merges_ && m->vocab_.find(kMetaspace) >= 0) {
    bool inner = false;  // some token has "▁" after another character
    m->vocab_.for_each([&](std::string_view token, int32_t) {
      size_t pos = 0;
      while (token.substr(pos, kMetaspace.size()) == kMetaspace) pos += kMetaspace.size();
      if (token.find(kMetaspace, pos) != std::string_view::npos) inner = true;
    });
    m->split_at_metaspace_ = !inner;
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const int32_t id = vocab_.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::optional<std::string_view> BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit() || !tokens_[id].data()) return std::nullopt;
  return tokens_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (!split_at_metaspace_) {
    tokenize_word(word, out);
    return;
  }
  // Cut before every "▁" run that follows another character (see split_at_metaspace_).
  size_t start = 0;
  for (size_t pos = word.find(kMetaspace, 1); pos != std::string_view::npos;
       pos = word.find(kMetaspace, pos + kMetaspace.size())) {
    if (pos >= kMetaspace.size() && word.substr(pos - kMetaspace.size(), kMetaspace.size()) == kMetaspace)
      continue;
    tokenize_word(word.substr(start, pos - start), out);
    start = pos;
  }
  tokenize_word(word.substr(start), out);
}

void BpeModel::tokenize_word(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const int32_t id = vocab_.find(word); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  if (word.size() >= kMaxCachedWordBytes) {
    merge_word(word, out);
    return;
  }
  CacheShard& shard = cache_[std::hash<std::string_view>{}(word) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (auto it = shard.map.find(word); it != shard.map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out->size();
  merge_word(word, out);
  std::vector<int32_t> ids(out->begin() + static_cast<ptrdiff_t>(first), out->end());
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() >= kCacheShardCapacity) shard.map.clear();
  shard.map.emplace(std::string(word), std::move(ids));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>* out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  thread_local std::string piece;
  symbols.clear();
  heap.clear();

  // 1. One symbol per character (with prefix / suffix), byte fallback or unk for unknown characters.
  int32_t pending_unk = -1;  // an unk waiting to be emitted (so consecutive ones can fuse)
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1, true});
  };
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    size_t n = utf8_valid_len(word, pos);
    pos += n == 0 ? utf8_invalid_len(word, pos) : n;  // tokens are valid UTF-8; be safe anyway
    std::string_view ch = word.substr(start, pos - start);
    std::string_view key = ch;
    if ((start > 0 && !prefix_.empty()) || (pos == word.size() && !suffix_.empty())) {
      piece.assign(start > 0 ? prefix_ : std::string());
      piece.append(ch);
      if (pos == word.size()) piece.append(suffix_);
      key = piece;
    }
    if (const int32_t id = vocab_.find(key); id >= 0) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : key) all = all && byte_ids_[c] >= 0;
      if (all) {
        // As in HF tokenizers, a pending unk is not flushed here: it lands after these bytes.
        for (unsigned char c : key) add(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // 2. Apply merges, lowest rank first (leftmost on ties), re-checking each candidate when popped.
  const auto count = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i + 1 < count; ++i) {
    const int64_t m = merges_.find(symbols[i].id, symbols[i + 1].id);
    if (m >= 0)
      heap.push_back(Candidate{static_cast<int32_t>(m >> 32), i, static_cast<int32_t>(m & 0xFFFFFFFF)});
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const int64_t m = merges_.find(left.id, right.id);
    if (m < 0 || static_cast<int32_t>(m & 0xFFFFFFFF) != c.merged || static_cast<int32_t>(m >> 32) != c.rank)
      continue;
    left.id = c.merged;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = c.pos;
    if (left.prev >= 0) {
      const int64_t pm = merges_.find(symbols[left.prev].id, left.id);
      if (pm >= 0) {
        heap.push_back(
            Candidate{static_cast<int32_t>(pm >> 32), left.prev, static_cast<int32_t>(pm & 0xFFFFFFFF)});
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    }
    if (left.next >= 0) {
      const int64_t nm = merges_.find(left.id, symbols[left.next].id);
      if (nm >= 0) {
        heap.push_back(
            Candidate{static_cast<int32_t>(nm >> 32), c.pos, static_cast<int32_t>(nm & 0xFFFFFFFF)});
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

}  // namespace lp::text
