// Fast loading of tokenizer.json: a SAX pass that streams model.vocab and model.merges (hundreds of
// thousands of entries in real files) straight into flat vectors, and builds a JSON DOM only for the rest
// of the document (normalizer, pre_tokenizer, ...). Against a full DOM parse this halves the load time
// of a 128k-vocab tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/tokenizer_json_util.h"

namespace lp::text {

// One entry of "merges": "a b" (joined, before tokenizers 0.20: `a` holds the whole string) or ["a", "b"].
struct MergeSpec {
  std::string a, b;
  bool joined = false;
};

struct TokenizerJsonParts {
  Json rest;  // the document, with model.vocab / model.merges left empty when streamed
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<MergeSpec> merges;
  bool streamed_vocab = false;
  bool streamed_merges = false;
};

// Parses tokenizer.json text; throws lp::Error naming `label` when it is not valid JSON or when vocab /
// merges entries have the wrong shape.
TokenizerJsonParts parse_tokenizer_json(std::string_view text, std::string_view label);

}  // namespace lp::text
