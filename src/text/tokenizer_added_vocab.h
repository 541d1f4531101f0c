// Added tokens of tokenizer.json ("added_tokens"): special tokens (<|begin_of_text|>, <s>) and other
// tokens added on top of the model vocab (<think>). They are found in the input before normalization
// and pre-tokenization and encoded as one id each, with Hugging Face's rules: leftmost-longest match;
// tokens with normalized=false match the raw input, those with normalized=true match each normalized
// piece; single_word refuses a match inside a word; lstrip / rstrip swallow the whitespace on that side.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"  // ByteRange

namespace lp::text {

class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A piece of the input: [start, end) bytes and the added token id it is, or -1 for ordinary text.
struct TextPiece {
  size_t start = 0;
  size_t end = 0;
  int32_t id = -1;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) rewrites the content of normalized tokens for matching.
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool has_normalized_tokens() const { return !normalized_.nodes.empty(); }

  // Cuts `text` into ordinary pieces and added tokens (covering all of it, empty pieces omitted), using
  // the raw-input tokens (normalized_set = false) or the normalized-input tokens (true). No added token is
  // matched that overlaps a `plain` range (sorted, disjoint): that text stays ordinary text.
  std::vector<TextPiece> split(std::string_view text, bool normalized_set,
                               std::span<const ByteRange> plain = {}) const;

  // Leftmost-longest occurrences of special tokens' content in `text`, matched as raw bytes whatever the
  // token's normalized / single_word / strip flags (a superset of what split() would match).
  std::vector<ByteRange> find_special(std::string_view text) const;

 private:
  // Byte trie over token contents; node 0 is the root.
  struct Trie {
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
      int32_t token = -1;                                 // index into tokens_ when a content ends here
    };
    std::vector<Node> nodes;
    bool first_byte[256] = {};
    void add(std::string_view content, int32_t token);
    // Length of the longest content starting at text[pos] and its token index, or {0, -1}.
    std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  Trie raw_, normalized_;
  Trie special_;  // contents of the special tokens, for find_special
};

}  // namespace lp::text
