// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): vocab, ranked merges, and the options
// real checkpoints use (byte_fallback with <0xNN> tokens, unk_token + fuse_unk, ignore_merges,
// continuing_subword_prefix, end_of_word_suffix). tokenize() turns one pre-tokenized word into ids by
// starting from its characters and repeatedly applying the lowest-ranked merge (leftmost on ties), as
// Hugging Face tokenizers does. Results for words under 256 bytes are cached (sharded, thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer_json_sax.h"
#include "text/tokenizer_json_util.h"

namespace lp::text {

// Transparent string hash so maps keyed by std::string can be probed with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// Token text → id, built once and read-only after: an open-addressing table over one byte arena (a
// node-based unordered_map spends most of a 128k-vocab load in allocation and cache misses).
class StringIdTable {
 public:
  void reserve(size_t count, size_t total_bytes);
  // Adds s → id; returns false (and changes nothing) when s is already present.
  bool insert(std::string_view s, int32_t id);
  // The id of s, or -1.
  int32_t find(std::string_view s) const {
    if (slots_.empty()) return -1;
    const size_t h = StringHash{}(s);
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.id < 0) return -1;
      if (slot.tag == tag && slot.len == s.size() &&
          std::string_view(arena_.data() + slot.offset, slot.len) == s)
        return slot.id;
    }
  }
  size_t size() const { return size_; }
  // Calls f(text, id) for every entry.
  template <class F>
  void for_each(F&& f) const {
    for (const Slot& slot : slots_)
      if (slot.id >= 0) f(std::string_view(arena_.data() + slot.offset, slot.len), slot.id);
  }

 private:
  struct Slot {
    uint32_t tag = 0;  // high hash bits, to skip most string compares
    int32_t id = -1;   // -1: empty slot
    uint32_t offset = 0;
    uint32_t len = 0;
  };
  std::string arena_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Open-addressing map from a pair of token ids to (rank, merged id); built once, read-only after.
class MergeTable {
 public:
  void reserve(size_t n);
  // Returns false if the pair was already present (the first rank is kept).
  bool insert(int32_t a, int32_t b, int32_t rank, int32_t merged);
  // Packed (rank << 32 | merged) or -1 when the pair does not merge.
  int64_t find(int32_t a, int32_t b) const {
    if (slots_.empty()) return -1;
    const uint64_t key = pack(a, b);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return static_cast<int64_t>(s.value);
      if (s.key == kEmpty) return -1;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    uint64_t value = 0;
  };
  static uint64_t pack(int32_t a, int32_t b) {
    return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
  }
  size_t slot_of(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

class BpeModel {
 public:
  // Parses a "model" object of type BPE. Throws lp::Error for anything malformed or unsupported.
  static std::unique_ptr<BpeModel> from_json(const Json& model);
  // The same from a "model" object whose vocab / merges were streamed out by parse_tokenizer_json().
  static std::unique_ptr<BpeModel> from_parts(const Json& model,
                                              std::vector<std::pair<std::string, int64_t>> vocab,
                                              std::vector<MergeSpec> merges);

  // Appends the ids of one pre-tokenized word to *out. Characters that are neither in the vocab nor
  // byte-fallback encodable become the unk token (fused when fuse_unk), or are dropped without one.
  void tokenize(std::string_view word, std::vector<int32_t>* out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Token text of `id`, or nullopt when the vocab has no such id.
  std::optional<std::string_view> id_to_token(int32_t id) const;
  // One past the largest id in the vocab.
  int32_t id_limit() const { return static_cast<int32_t>(tokens_.size()); }

 private:
  BpeModel() = default;
  // One word that needs no further cutting: cache lookup, then merge_word.
  void tokenize_word(std::string_view word, std::vector<int32_t>* out) const;
  void merge_word(std::string_view word, std::vector<int32_t>* out) const;

  StringIdTable vocab_;
  std::vector<std::string_view> tokens_;  // id → text (into vocab_'s arena); a null view for unused ids
  MergeTable merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  // SentencePiece-style models encode the whole text as one word. When "▁" is in the vocab and no token
  // has a "▁" after another character, no merge can span the start of a "▁" run, so such a word may be
  // cut there into independent (and cacheable) pieces with the same result: O(n log n) on the text
  // becomes O(n log w) on its words.
  bool split_at_metaspace_ = false;
  std::string prefix_;     // continuing_subword_prefix
  std::string suffix_;     // end_of_word_suffix
  int32_t byte_ids_[256];  // <0xNN> ids, -1 where missing

  struct CacheShard {
    std::mutex mu;  // guards map
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheShardCapacity = 8192;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::unique_ptr<CacheShard[]> cache_;
};

}  // namespace lp::text
