// JSON Schema (and "any JSON object", and a list of choices) turned into the code point tree of regex_ast.h,
// so that token-level constrained decoding produces only documents the schema accepts. Whitespace between
// JSON tokens is bounded (JsonOptions::max_whitespace), so a constrained output always ends.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "constrain/regex_ast.h"

namespace lp::constrain {

struct JsonOptions {
  int max_whitespace = 2;  // at most this many of ' ', '\n', '\t' wherever JSON allows whitespace
  int max_depth = 6;       // nesting of the "any JSON value" grammar (json_object, schemas without a type)
};

// Supported keywords: type (one or a list), properties, required, additionalProperties (false, true or a
// schema), enum, const, items, minItems/maxItems, string maxLength/minLength/pattern (a regular pattern),
// integer / number / boolean / null, nested objects and arrays, anyOf / oneOf (as alternatives), $defs /
// definitions with non-recursive $ref, and annotations (title, description, default, examples, $schema, ...)
// which are ignored. Any other keyword: lp::Error(kInvalid) whose message names it. Object properties are
// produced in the schema's order; required ones always, optional ones may be left out.
NodePtr json_schema_node(const nlohmann::json& schema, const JsonOptions& options = {});

// Any JSON object (response_format {"type": "json_object"}), nesting up to options.max_depth.
NodePtr json_object_node(const JsonOptions& options = {});

// Exactly one of `choices` (vLLM's structured_outputs.choice).
NodePtr choice_node(const std::vector<std::string>& choices);

}  // namespace lp::constrain
