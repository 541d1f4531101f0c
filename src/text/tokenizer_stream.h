// Incremental detokenizer for streaming generation: feed ids one at a time, get back the text that is
// now final. Never returns part of a UTF-8 character (a byte-level or <0xNN> token that ends mid-character
// is held until the character completes) and never loses one (flush() returns what is held at the end).
// The concatenation of every step() and the final flush() equals Tokenizer::decode(all ids) for what
// encode() produces, for both families: the first token's leading-space handling (Metaspace / Strip
// decoders) is decided exactly as the full decode decides it.
//
// How: like Hugging Face's DecodeStream, keep the ids of the last emitted token(s) as context, decode
// context + pending ids, and emit what extends the context's text, unless it ends in U+FFFD (an incomplete
// character). Cost per step: two decodes of a few tokens. Not thread-safe (one per request).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace lp::text {

class StreamDecoder {
 public:
  explicit StreamDecoder(Tokenizer tokenizer, bool skip_special_tokens = false);

  // Adds one id; returns the newly completed text (often empty while a character is incomplete).
  std::string step(int32_t id);
  // Returns the text still held back (an incomplete character decodes to U+FFFD, as decode() would) and
  // starts a fresh stream.
  std::string flush();
  // Forgets everything (a fresh stream).
  void reset();

 private:
  // After this many pending ids a held-back tail is emitted anyway (no character spans more than 4 bytes,
  // so only invalid input gets here).
  static constexpr size_t kMaxPending = 8;

  std::string take_new_text(const std::string& text) const;

  Tokenizer tokenizer_;
  bool skip_special_;
  std::vector<int32_t> window_;  // context ids (text already emitted) followed by pending ids
  size_t context_ = 0;           // window_[0, context_) is context
  std::string context_text_;     // decode(window_[0, context_))
};

}  // namespace lp::text
