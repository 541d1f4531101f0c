// Strict JSON reading for files that come from outside (safetensors headers, config.json, index files,
// adapter_config.json). nlohmann's parser silently keeps the last of two equal keys; these helpers refuse
// duplicates instead, so a file cannot say two different things about one name. Every problem throws
// lp::Error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "io/file_open.h"

namespace lp::io {

// Parses `text` (UTF-8 JSON). `label` names the source in messages ("invalid JSON {what} in {label}: ...").
// A syntax error is reported by line, column and byte offset, never by the bytes found there (nlohmann's
// "last read: '...'" is cut), so a file read by mistake is not echoed to whoever asked for it.
// `root_key_kind` names what a key of the root object is ("tensor name", "key"), for the duplicate message.
nlohmann::json parse_json_strict(std::string_view text, const std::string& label, std::string_view what = "",
                                 std::string_view root_key_kind = "key");

// The same, keeping object keys in file order (for configs where order has meaning, such as PEFT's
// rank_pattern, whose first matching key wins).
nlohmann::ordered_json parse_ordered_json_strict(std::string_view text, const std::string& label,
                                                 std::string_view what = "",
                                                 std::string_view root_key_kind = "key");

// Reads and parses a whole JSON file; refuses files over `max_bytes` and anything that is not a regular file.
// The file is opened with open_regular_file(path, confine_root) (see file_open.h for the errors).
inline constexpr size_t kMaxJsonFileBytes = size_t{64} << 20;
nlohmann::json read_json_file(const std::filesystem::path& path, size_t max_bytes = kMaxJsonFileBytes,
                              const std::optional<std::filesystem::path>& confine_root = std::nullopt);
nlohmann::ordered_json read_ordered_json_file(
    const std::filesystem::path& path, size_t max_bytes = kMaxJsonFileBytes,
    const std::optional<std::filesystem::path>& confine_root = std::nullopt);

// Short name of a JSON value's type for messages: "object", "array", "string", "number", "boolean", "null".
std::string_view json_type_name(nlohmann::detail::value_t t);
std::string_view json_type_name(const nlohmann::json& j);
std::string_view json_type_name(const nlohmann::ordered_json& j);

// Bounded reads of one value of a config file: json_int takes an integer in [lo, hi] (never narrowed: an
// integer outside the range is refused, and so is 2.0), json_number a finite number, json_bool true or false.
// Anything else throws lp::Error "{what} in {label} must be ... (found {value})", where `what` names the
// field ("r", "hidden_size", "rank_pattern key \"q_proj\"") and `label` the file.
int64_t json_int(const nlohmann::json& v, std::string_view what, std::string_view label, int64_t lo,
                 int64_t hi);
int64_t json_int(const nlohmann::ordered_json& v, std::string_view what, std::string_view label, int64_t lo,
                 int64_t hi);
double json_number(const nlohmann::json& v, std::string_view what, std::string_view label);
double json_number(const nlohmann::ordered_json& v, std::string_view what, std::string_view label);
bool json_bool(const nlohmann::json& v, std::string_view what, std::string_view label);
bool json_bool(const nlohmann::ordered_json& v, std::string_view what, std::string_view label);

}  // namespace lp::io
