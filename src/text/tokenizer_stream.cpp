#include "text/tokenizer_stream.h"

#include "text/tokenizer_utf8.h"

namespace lp::text {

StreamDecoder::StreamDecoder(Tokenizer tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_(skip_special_tokens) {}

void StreamDecoder::reset() {
  window_.clear();
  context_ = 0;
  context_text_.clear();
}

// The part of `text` after the context's text. The context text is a prefix of `text` for every decoder
// we support on well-formed sequences; should it not be (invalid <0xNN> runs), cut at the first
// character boundary past the context's length so no partial character is ever returned.
std::string StreamDecoder::take_new_text(const std::string& text) const {
  if (text.starts_with(context_text_)) return text.substr(context_text_.size());
  size_t cut = std::min(context_text_.size(), text.size());
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  return text.substr(cut);
}

std::string StreamDecoder::step(int32_t id) {
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  window_.push_back(id);
  const std::string text = tokenizer_.decode(window_, skip_special_);
  const size_t pending = window_.size() - context_;
  const bool incomplete = std::string_view(text).ends_with(kReplacementUtf8);
  if (pending < kMaxPending && (text.size() <= context_text_.size() || incomplete)) return {};
  if (!incomplete) {
    std::string fresh = take_new_text(text);
    // The ids just emitted become the context for the next step.
    window_.erase(window_.begin(), window_.begin() + static_cast<ptrdiff_t>(context_));
    context_ = window_.size();
    context_text_ = tokenizer_.decode(window_, skip_special_);
    return fresh;
  }
  // Many ids and still a U+FFFD at the end: the input holds invalid sequences. Emit all but the last
  // (at most 3) U+FFFD, which may still be an incomplete character, and keep only the last few ids.
  size_t held = 0;
  while (held < 3 && std::string_view(text)
                         .substr(0, text.size() - held * kReplacementUtf8.size())
                         .ends_with(kReplacementUtf8))
    ++held;
  const std::string head = text.substr(0, text.size() - held * kReplacementUtf8.size());
  std::string fresh = head.size() > context_text_.size() ? take_new_text(head) : std::string();
  const size_t keep = std::min<size_t>(window_.size(), 4);
  window_.erase(window_.begin(), window_.end() - static_cast<ptrdiff_t>(keep));
  // The kept ids may end inside a character; they stay in the window (not context) so that the next
  // emission keeps them as context and a byte run is never cut.
  context_ = 0;
  context_text_ = tokenizer_.decode(window_, skip_special_);
  // What is held back is not emitted yet: leave it out of the context text so it comes out later.
  for (size_t i = 0; i < held && std::string_view(context_text_).ends_with(kReplacementUtf8); ++i)
    context_text_.resize(context_text_.size() - kReplacementUtf8.size());
  return fresh;
}

std::string StreamDecoder::flush() {
  std::string fresh;
  if (!window_.empty()) {
    const std::string text = tokenizer_.decode(window_, skip_special_);
    if (text.size() > context_text_.size()) fresh = take_new_text(text);
  }
  reset();
  return fresh;
}

}  // namespace lp::text
