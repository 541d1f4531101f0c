#include "server/structured_output.h"

#include "constrain/grammar.h"
#include "constrain/json_schema.h"
#include "constrain/regex.h"
#include "server/api_error.h"
#include "text/tokenizer.h"

namespace lp::server {

StructuredOutputs::StructuredOutputs(const text::Tokenizer& tok) : tok_(tok) {}
StructuredOutputs::~StructuredOutputs() = default;

void StructuredOutputs::init() {
  std::call_once(once_, [this] {
    vocab_ = std::make_shared<const constrain::Vocabulary>(tok_);
    cache_ = std::make_unique<constrain::GrammarCache>(vocab_);
  });
}

std::shared_ptr<const sched::ConstraintFactory> StructuredOutputs::constraint(const StructuredOutput& spec) {
  using K = StructuredOutput::Kind;
  if (spec.kind == K::kNone) return nullptr;
  init();
  // The cache key is the kind and the canonical text of what was asked (the schema as parsed, so key order
  // counts: properties are generated in the schema's order).
  std::string key;
  std::function<constrain::NodePtr()> build;
  switch (spec.kind) {
    case K::kJsonSchema:
      key = "schema\n" + spec.schema.dump();
      build = [&] { return constrain::json_schema_node(spec.schema); };
      break;
    case K::kJsonObject:
      key = "object";
      build = [] { return constrain::json_object_node(); };
      break;
    case K::kRegex:
      key = "regex\n" + spec.regex;
      build = [&] { return constrain::parse_regex(spec.regex); };
      break;
    case K::kChoice:
      key = "choice\n" + nlohmann::json(spec.choice).dump();
      build = [&] { return constrain::choice_node(spec.choice); };
      break;
    case K::kNone: break;
  }
  try {
    return cache_->get(key, build);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kInvalid) throw;
    fail_param(spec.param, "{}: {}", spec.param, e.what());
  }
}

}  // namespace lp::server
