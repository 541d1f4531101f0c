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
  // Rewrites one token string into the bytes it stands for in the middle of a text (constrained decoding
  // needs each token's bytes alone): what decode_chain does per token, without its lossy UTF-8 repair and
  // without what only applies at the edges of a text (Strip, Metaspace's first-token rule).
  virtual void token_bytes(std::string& token) const {}
};

// Builds the decoder described by `j`; JSON null gives nullptr (tokens are joined with spaces).
std::unique_ptr<Decoder> make_decoder(const Json& j);

}  // namespace lp::text
