#include "sched/output_text.h"

#include <algorithm>

namespace lp::sched {

OutputText::OutputText(const text::Tokenizer& tok, bool skip_special_tokens,
                       std::shared_ptr<const std::vector<std::string>> stop, bool include_stop)
    : decoder_(tok, skip_special_tokens), stop_(std::move(stop)), include_stop_(include_stop) {
  if (!stop_) return;
  for (const auto& s : *stop_)
    if (!s.empty()) hold_ = std::max(hold_, s.size() - 1);
  if (std::all_of(stop_->begin(), stop_->end(), [](const std::string& s) { return s.empty(); }))
    stop_.reset();
}

std::string OutputText::emit_upto(size_t end) {
  if (end <= emitted_) return {};
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string OutputText::add(int32_t token, bool* stopped, bool check_stop) {
  *stopped = false;
  if (stopped_) return {};
  const size_t old_len = text_.size();
  text_ += decoder_.step(token);
  if (stop_ && check_stop && text_.size() > old_len) {
    // Only matches that end in the new text: each search starts where such a match could begin.
    size_t best = std::string::npos;
    const std::string* best_stop = nullptr;
    for (const auto& s : *stop_) {
      if (s.empty()) continue;
      const size_t from = old_len + 1 > s.size() ? old_len + 1 - s.size() : 0;
      size_t p = text_.find(s, from);
      if (p != std::string::npos && p < best) {
        best = p;
        best_stop = &s;
      }
    }
    if (best_stop) {
      stopped_ = true;
      *stopped = true;
      stop_string_ = *best_stop;
      size_t end = include_stop_ ? best + best_stop->size() : best;
      text_.resize(end);
      return emit_upto(end);
    }
  }
  size_t end = text_.size() > hold_ ? text_.size() - hold_ : 0;
  // Never split a UTF-8 character: back up to a character boundary.
  while (end > emitted_ && end < text_.size() && (static_cast<unsigned char>(text_[end]) & 0xC0) == 0x80) --end;
  return emit_upto(std::max(end, emitted_));
}

std::string OutputText::finish() {
  if (stopped_) return {};
  text_ += decoder_.flush();
  return emit_upto(text_.size());
}

}  // namespace lp::sched
