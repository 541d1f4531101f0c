// JSON Schema (and "any JSON object", and a list of choices) turned into the code point tree of regex_ast.h,
// so that token-level constrained decoding produces only documents the schema accepts. Whitespace between
// JSON tokens is bounded (JsonOptions::max_whitespace), so a constrained output always ends.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "constrain/regex_ast.h"

namespace lp::constrain {

struct JsonOptions {
  int max_whitespace = 2;  // at most this many of ' ', '\n', '\t' wherever JSON allows whitespace
  int max_depth = 6;       // nesting of the "any JSON value" grammar (json_object, schemas without a type)
  // Bounds on what a hostile schema can make us build (each refused with lp::Error over the limit):
  int max_items = 1000;               // minItems / maxItems
  int max_string_length = 4096;       // minLength / maxLength
  int max_schema_depth = 32;          // schemas nested in schemas (properties, items, anyOf, $ref, ...)
  uint64_t max_tree_nodes = 1 << 20;  // the tree's size, every shared subtree counted at each use
};

// Supported keywords: type (one or a list), properties, required, additionalProperties (false, true or a
// schema), enum, const, items, minItems/maxItems, string maxLength/minLength/pattern (a regular pattern),
// integer / number / boolean / null, nested objects and arrays, anyOf / oneOf (as alternatives), $defs /
// definitions with non-recursive $ref, and annotations (title, description, default, examples, $schema,
// discriminator, ...) which are ignored. Any other keyword: lp::Error(kInvalid) whose message names it ("unsupported JSON Schema
// keyword 'minimum'"). Object properties are produced in the schema's order (hence ordered_json: a plain
// nlohmann::json converts, but has already sorted the keys); required ones always, optional ones may be left
// out.
//
// What the produced documents look like (a subset of what the schema accepts, chosen so decoding ends):
// - Whitespace: 0..max_whitespace of ' ' '\n' '\t' between tokens; none before the first or after the last.
// - Strings: JSON strings (escapes \" \\ \/ \b \f \n \r \t \uXXXX, surrogate escapes only as pairs, no raw
//   control characters); minLength/maxLength count code points, an escape counting as one. "pattern" must
//   match the whole decoded string (as vLLM / xgrammar do); characters the pattern allows that JSON must
//   escape are produced escaped. With a pattern, minLength/maxLength are accepted only when every string
//   the pattern matches already satisfies them (the tree has no intersection).
// - integer: -?(0|[1-9][0-9]{0,18}); number: the same with an optional fraction (<= 16 digits) and exponent
//   (<= 2 digits, so the value stays inside a double's range: parsers refuse 1e999).
// - Objects: listed properties in schema order; additionalProperties absent or false: no other key (as
//   xgrammar's strict default); true or a schema: any further keys after the listed ones, whose names may
//   repeat a listed name (still valid JSON). {"type":"object"} with neither properties nor
//   additionalProperties: any object. A required name missing from properties is refused.
// - enum / const: the compact JSON text of each value (as nlohmann dumps it), filtered by "type" if given.
// - anyOf / oneOf: alternatives (oneOf's "exactly one" is not enforced); allOf with one schema = that schema.
// - No type: inferred from the keywords present (properties -> object, items -> array, ...), else any JSON
//   value nested up to max_depth. Boolean schemas: true = any value, false = nothing (refused at the top).
// - $ref: local JSON pointers ("#/$defs/X", "#/definitions/X", ...), inlined; a recursive $ref is refused.
// Also not enforced because never needed for a valid document: uniqueItems false. Everything else
// (minimum, maximum, multipleOf, format, patternProperties, uniqueItems true, if/then/else, not, ...)
// is refused.
NodePtr json_schema_node(const nlohmann::ordered_json& schema, const JsonOptions& options = {});

// Any JSON object (response_format {"type": "json_object"}), nesting up to options.max_depth.
NodePtr json_object_node(const JsonOptions& options = {});

// Exactly one of `choices` (vLLM's structured_outputs.choice); an empty list is refused.
NodePtr choice_node(const std::vector<std::string>& choices);

}  // namespace lp::constrain
