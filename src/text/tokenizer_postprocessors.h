// Post-processors of tokenizer.json ("post_processor" field): what encode(text, add_special_tokens=true)
// adds around the ids of one sequence. Supported: TemplateProcessing (its "single" template: BOS / EOS
// as the model wants), ByteLevel (offsets only, so no change to ids), RobertaProcessing and
// BertProcessing (cls ... sep), Sequence. Any other type is refused with lp::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "text/tokenizer_json_util.h"

namespace lp::text {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Rewrites the ids of a single sequence; with add_special_tokens false only the sequence is kept.
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

// Builds the post-processor described by `j`; JSON null gives nullptr (ids are left as they are).
std::unique_ptr<PostProcessor> make_post_processor(const Json& j);

}  // namespace lp::text
