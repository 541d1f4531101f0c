// Pre-tokenizers of tokenizer.json ("pre_tokenizer" field): cut each normalized piece of the input into
// the words the model encodes independently, possibly rewriting them. Supported: ByteLevel (GPT-2 regex
// and byte → printable-character mapping), Split (regex or literal; behaviors Removed, Isolated,
// MergedWithPrevious, MergedWithNext, Contiguous; invert), Metaspace (prepend_scheme always / first /
// never, split), Sequence. Any other type is refused with lp::Error. Semantics follow Hugging Face
// tokenizers (Rust), which is what transformers and vLLM run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer_json_util.h"

namespace lp::text {

struct PreToken {
  std::string text;
  // True when the piece begins at offset 0 of the caller's input (Metaspace prepend_scheme "first").
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their pre-tokenized pieces, in order. Empty pieces are dropped.
  virtual void pre_tokenize(std::vector<PreToken>& pieces) const = 0;
};

// Builds the pre-tokenizer described by `j`; JSON null gives nullptr (the whole piece is one word).
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Rust tokenizers' NormalizedString::split: given gap/match spans covering a text, returns the
// [start, end) ranges to keep as pieces (never empty).
std::vector<std::pair<size_t, size_t>> split_by_behavior(std::vector<Span> spans, SplitBehavior behavior,
                                                         bool invert);

// The GPT-2 pre-tokenization regex used by ByteLevel with use_regex.
const Regex& gpt2_regex();

}  // namespace lp::text
