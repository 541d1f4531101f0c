// Parsing and validation of OpenAI request bodies (/v1/completions, /v1/chat/completions) into plain structs,
// with the checks vLLM and OpenAI make: wrong JSON types, empty prompts or messages and out-of-range sampling
// parameters are ApiError(kInvalid) naming the field. Every bound is in request_limits.h. Nothing here
// touches the tokenizer or the engine, so every rule is unit-tested on JSON alone; the checks that need the
// vocabulary size are in check_token_ids(). Unknown fields are ignored (as vLLM does).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sched/request.h"
#include "server/request_limits.h"

namespace lp::server {

// Structured outputs as the request asked for them (response_format, structured_outputs, guided_*); the
// handler compiles them (src/constrain/) into the engine request's constraint.
struct StructuredOutput {
  enum class Kind { kNone, kJsonSchema, kJsonObject, kRegex, kChoice };
  Kind kind = Kind::kNone;
  nlohmann::json schema;            // kJsonSchema
  std::string regex;                // kRegex
  std::vector<std::string> choice;  // kChoice
  std::string param;                // the field it came from, named in errors: "response_format", ...
};

// OpenAI's tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}.
struct ToolChoice {
  enum class Kind { kNone, kAuto, kRequired, kNamed };
  Kind kind = Kind::kAuto;
  std::string name;  // kNamed
};

// What both endpoints share.
struct GenerateParams {
  std::string model;                 // "" when absent (= the base model)
  sched::SamplingParams sampling;    // temperature defaults to 1, as in OpenAI; logit_bias sorted by id
  int n = 1;
  std::optional<int> max_tokens;     // unset: completions 16, chat the context left
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage
  int logprobs = -1;                 // -1: none; k: sampled token + top k alternatives
};

struct CompletionRequest : GenerateParams {
  std::optional<std::string> prompt_text;  // a string (or a list of one string)
  std::vector<int32_t> prompt_ids;         // or token ids (used when prompt_text is unset)
};

struct ChatRequest : GenerateParams {
  nlohmann::ordered_json messages;  // array; text content parts joined into one string
  nlohmann::ordered_json tools;     // null or array, passed to the template
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  bool add_generation_prompt = true;
  bool add_special_tokens = false;  // as HF and vLLM: the template already writes BOS and friends
  ToolChoice tool_choice;            // default: none without tools, auto with them (as vLLM)
  bool parallel_tool_calls = true;
};

// Both throw ApiError(kInvalid) naming the field at fault. Chat messages are checked before any template
// sees them: role one of system|user|assistant|tool|developer, content a string or a list of text parts
// (joined by "\n"), or null/absent only for an assistant message with tool_calls; the param named is the
// message's field, e.g. "messages[2].role".
CompletionRequest parse_completion_request(const nlohmann::ordered_json& body);
ChatRequest parse_chat_request(const nlohmann::ordered_json& body);

// A string / boolean field of a body: "" / false when absent or null, ApiError(kInvalid) naming it when of
// another type.
std::string string_field(const nlohmann::ordered_json& body, const char* name);
bool bool_field(const nlohmann::ordered_json& body, const char* name);

// The token ids a request names (stop_token_ids, logit_bias keys) are inside a vocabulary of `vocab_size`
// ids; ApiError(kInvalid) naming the field otherwise. Called once the tokenizer is known.
void check_token_ids(const GenerateParams& p, int32_t vocab_size);

// The body of a POST parsed as JSON (an object), or ApiError(kInvalid) saying why not. The shape limits of
// request_limits.h (depth, keys) are checked by a linear pass before the DOM is built.
nlohmann::ordered_json parse_body(const std::string& body);

// The engine requests of one API call: n copies with seeds seed, seed+1, ... (when seeded; computed modulo
// 2^64, so a seed near the top of the range wraps instead of overflowing), sharing one stop list; max_tokens
// defaulted and checked against the context (400 context_length_exceeded when the prompt does not fit or the
// prompt plus an explicit max_tokens exceeds max_model_len). `default_max_tokens` < 0 means "the rest of the
// context".
std::vector<sched::Request> make_engine_requests(const GenerateParams& p, std::vector<int32_t> prompt,
                                                 const std::string& adapter, int64_t max_model_len,
                                                 int default_max_tokens);

}  // namespace lp::server
