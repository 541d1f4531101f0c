// A linear pre-pass over a request body that refuses, before any DOM is built, JSON nested deeper than
// limits::kMaxJsonDepth, holding more keys than limits::kMaxJsonObjectKeys in one object or
// limits::kMaxJsonTotalKeys in all, or whose objects would cost the DOM more than
// limits::kMaxJsonKeyComparisons. The DOM (nlohmann::ordered_json, whose key insertion is a linear search to
// keep the order chat templates see) is quadratic in an object's key count; this pass bounds that work by a
// constant, so the whole of parse_body is linear in the body.
#pragma once

#include <string_view>

namespace lp::server {

// Throws ApiError(kInvalid) when `body` is not valid JSON or breaks a shape limit (the message says which).
// Runs nlohmann's SAX parser: one pass, no allocation beyond one string at a time and a depth-sized stack.
void check_json_shape(std::string_view body);

}  // namespace lp::server
