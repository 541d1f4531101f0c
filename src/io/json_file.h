// Strict JSON reading for files that come from outside (safetensors headers, config.json, index files,
// adapter_config.json). nlohmann's parser silently keeps the last of two equal keys; these helpers refuse
// duplicates instead, so a file cannot say two different things about one name. Every problem throws
// lp::Error naming the file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace lp::io {

// Parses `text` (UTF-8 JSON). `label` names the source in messages ("invalid JSON {what} in {label}: ...").
// `root_key_kind` names what a key of the root object is ("tensor name", "key"), for the duplicate message.
nlohmann::json parse_json_strict(std::string_view text, const std::string& label, std::string_view what = "",
                                 std::string_view root_key_kind = "key");

// The same, keeping object keys in file order (for configs where order has meaning, such as PEFT's
// rank_pattern, whose first matching key wins).
nlohmann::ordered_json parse_ordered_json_strict(std::string_view text, const std::string& label,
                                                 std::string_view what = "",
                                                 std::string_view root_key_kind = "key");

// Reads and parses a whole JSON file; refuses files over `max_bytes` and anything that is not a regular file.
nlohmann::json read_json_file(const std::filesystem::path& path, size_t max_bytes = size_t{64} << 20);
nlohmann::ordered_json read_ordered_json_file(const std::filesystem::path& path,
                                              size_t max_bytes = size_t{64} << 20);

// Short name of a JSON value's type for messages: "object", "array", "string", "number", "boolean", "null".
std::string_view json_type_name(nlohmann::detail::value_t t);
std::string_view json_type_name(const nlohmann::json& j);
std::string_view json_type_name(const nlohmann::ordered_json& j);

}  // namespace lp::io
