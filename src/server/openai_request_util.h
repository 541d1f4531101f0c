// The typed getters the request parsers share (openai_request.cpp, openai_request_fields.cpp): each throws
// ApiError(kInvalid) naming the field when the JSON value has the wrong type or range. Internal to server/.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "server/api_error.h"
#include "server/openai_request.h"

namespace lp::server::request_util {

using ojson = nlohmann::ordered_json;

inline const char* json_type(const ojson& v) { return v.type_name(); }

// A field that is present and not null.
inline const ojson* field(const ojson& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

inline double get_number(const ojson& v, const char* name) {
  if (!v.is_number()) fail_param(name, "'{}' must be a number, got {}", name, json_type(v));
  double d = v.get<double>();
  if (!std::isfinite(d)) fail_param(name, "'{}' must be finite", name);
  return d;
}

// An integer; 3.0 is accepted as 3 (as pydantic does), 3.5 is not.
inline int64_t get_int(const ojson& v, const char* name) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  fail_param(name, "'{}' must be an integer, got {}", name, v.is_number() ? "a fraction" : json_type(v));
}

inline int get_int32(const ojson& v, const char* name) {
  int64_t x = get_int(v, name);
  if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
    fail_param(name, "'{}' is out of range", name);
  return static_cast<int>(x);
}

// Any 64-bit integer, signed or not (OpenAI and vLLM take an int64), as the sampler's unsigned seed: a
// negative seed is its two's-complement value, so distinct client seeds stay distinct seeds.
inline uint64_t get_seed(const ojson& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  return static_cast<uint64_t>(get_int(v, "seed"));
}

inline bool get_bool(const ojson& v, const char* name) {
  if (!v.is_boolean()) fail_param(name, "'{}' must be a boolean, got {}", name, json_type(v));
  return v.get<bool>();
}

inline std::string get_string(const ojson& v, const char* name) {
  if (!v.is_string()) fail_param(name, "'{}' must be a string, got {}", name, json_type(v));
  return v.get<std::string>();
}

inline std::vector<int32_t> get_token_ids(const ojson& v, const char* name) {
  if (!v.is_array()) fail_param(name, "'{}' must be a list of token ids", name);
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const auto& x : v) {
    int64_t id = get_int(x, name);
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) fail_param(name, "'{}' holds an invalid token id {}", name, id);
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// openai_request_fields.cpp: vLLM's extra fields (min_tokens, allowed_token_ids, bad_words, prompt_logprobs,
// truncate_prompt_tokens, echo, structured outputs) and the refusals of the known fields not implemented.
void parse_vllm_fields(const ojson& b, GenerateParams& p, bool chat);
// tool_choice against the request's `tools` (null or a non-empty array), as vLLM checks it.
ToolChoice parse_tool_choice(const ojson& b, const ojson& tools);

}  // namespace lp::server::request_util
