// Normalizers of tokenizer.json ("normalizer" field): text → text rewrites applied to each piece of the
// input that is not an added token, before pre-tokenization. Supported: NFC, NFD, NFKC, NFKD (utf8proc),
// Prepend, Replace (literal or regex), Strip, Sequence. Any other type is refused with lp::Error.
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer_json_util.h"

namespace lp::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void normalize(std::string& text) const = 0;
};

// Builds the normalizer described by `j`; JSON null gives nullptr (no normalization).
std::unique_ptr<Normalizer> make_normalizer(const Json& j);

}  // namespace lp::text
