// Decoders of tokenizer.json ("decoder" field): token strings → text. Each unit rewrites the list of
// token strings (decode_chain, as in Hugging Face tokenizers); the tokenizer joins the result. Supported:
// ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence. Any other type is refused with
// lp::Error. Invalid UTF-8 never leaks out: ByteLevel decodes lossily (U+FFFD per maximal invalid
// subpart) and ByteFallback turns an undecodable run of <0xNN> tokens into one U+FFFD per byte.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer_json_util.h"

namespace lp::text {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Builds the decoder described by `j`; JSON null gives nullptr (tokens are joined with spaces).
std::unique_ptr<Decoder> make_decoder(const Json& j);

}  // namespace lp::text
