// OutputText: turns a request's generated ids into the text deltas it streams, applying stop strings.
// Text comes from the incremental detokenizer (never a partial UTF-8 character). While stop strings are set,
// the last (longest stop - 1) bytes are held back, because they may be the start of a stop string that the
// next token completes; when a stop string appears, the text is cut before it (or after it, with
// include_stop_str_in_output) and the request finishes. Same semantics as vLLM's stop-string handling: a
// stop string is found when it ends in the text of the token just added (it may begin in earlier text), so
// text added while stop strings were not checked (min_tokens) is never searched on its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer_stream.h"

namespace lp::sched {

class OutputText {
 public:
  // `stop` (may be null) is shared, not copied: the n requests of one call hold one list. Empty strings in
  // it are ignored.
  OutputText(const text::Tokenizer& tok, bool skip_special_tokens,
             std::shared_ptr<const std::vector<std::string>> stop, bool include_stop);
  // Adds a generated token; returns the text now safe to emit. Sets *stopped when a stop string matched
  // (then no later call emits anything). With check_stop false (vLLM: before min_tokens tokens) the text is
  // added but not searched.
  std::string add(int32_t token, bool* stopped, bool check_stop = true);
  // The stop string that matched, exactly as given (empty until one did). The earliest match in the text
  // wins; at the same position, the one listed first.
  const std::string& stop_string() const { return stop_string_; }
  // End of generation (length, EOS, stop token): everything still held back.
  std::string finish();

 private:
  std::string emit_upto(size_t end);

  text::StreamDecoder decoder_;
  std::shared_ptr<const std::vector<std::string>> stop_;  // null when there is no non-empty stop string
  bool include_stop_;
  size_t hold_ = 0;      // bytes held back: longest stop string - 1
  std::string text_;     // all text decoded so far
  size_t emitted_ = 0;   // text_[0, emitted_) has been returned
  bool stopped_ = false;
  std::string stop_string_;
};

}  // namespace lp::sched
