// Small readers for tokenizer.json fields shared by the normalizer / pre-tokenizer / decoder / model
// units. Every malformed field throws lp::Error naming the component (`what`) and the key.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "text/tokenizer_regex.h"

namespace lp::text {

using Json = nlohmann::json;

// The component's "type" string ("" when absent).
std::string json_type_of(const Json& j);

const Json& json_field(const Json& j, std::string_view key, std::string_view what);
std::string json_string(const Json& j, std::string_view key, std::string_view what);
bool json_bool_or(const Json& j, std::string_view key, bool fallback, std::string_view what);
int64_t json_int_or(const Json& j, std::string_view key, int64_t fallback, std::string_view what);
// A single Unicode character given as a string (Metaspace's "replacement", Strip's "content").
char32_t json_char(const Json& j, std::string_view key, std::string_view what);

// {"String": "..."} → the literal; {"Regex": "..."} → the pattern (Split, Replace).
Regex json_pattern(const Json& j, std::string_view key, std::string_view what);

}  // namespace lp::text
