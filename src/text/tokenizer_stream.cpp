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
  if (pending < kMaxPending) {
    if (text.size() <= context_text_.size()) return {};             // nothing new yet
    if (std::string_view(text).ends_with(kReplacementUtf8)) return {};  // maybe an incomplete character
  }
  std::string fresh = take_new_text(text);
  // The ids just emitted become the context for the next step.
  window_.erase(window_.begin(), window_.begin() + static_cast<ptrdiff_t>(context_));
  context_ = window_.size();
  context_text_ = tokenizer_.decode(window_, skip_special_);
  return fresh;
}

std::string StreamDecoder::flush() {
  std::string fresh;
  if (window_.size() > context_) fresh = take_new_text(tokenizer_.decode(window_, skip_special_));
  reset();
  return fresh;
}

}  // namespace lp::text
