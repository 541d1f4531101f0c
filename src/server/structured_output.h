// Structured outputs as token constraints: a request's StructuredOutput (response_format, structured_outputs,
// guided_*) or the schema a forced tool call implies becomes a constrain:: tree, compiled once per distinct
// spec into a Grammar (the ConstraintFactory the engine requests carry). Compiling runs on the handler thread,
// bounded by the constrain limits, so a costly schema delays only its own request.
#pragma once

#include <memory>
#include <mutex>

#include "server/openai_request.h"

namespace lp::text { class Tokenizer; }
namespace lp::constrain { class Vocabulary; class GrammarCache; }

namespace lp::server {

class StructuredOutputs {
 public:
  explicit StructuredOutputs(const text::Tokenizer& tok);
  ~StructuredOutputs();
  // Null for Kind::kNone. Throws ApiError(kInvalid) naming spec.param when the spec can't be compiled (an
  // unsupported keyword, a non-regular pattern, over the size limits).
  std::shared_ptr<const sched::ConstraintFactory> constraint(const StructuredOutput& spec);

 private:
  void init();  // the vocabulary trie, built on first use (a real vocabulary takes a moment)

  const text::Tokenizer& tok_;
  std::once_flag once_;
  std::shared_ptr<const constrain::Vocabulary> vocab_;
  std::unique_ptr<constrain::GrammarCache> cache_;
};

}  // namespace lp::server
