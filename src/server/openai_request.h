// Parsing and validation of OpenAI request bodies (/v1/completions, /v1/chat/completions) into plain structs,
// with the checks vLLM and OpenAI make: wrong JSON types, empty prompts or messages and out-of-range sampling
// parameters are ApiError(kInvalid) naming the field. Every bound is in request_limits.h. Nothing here
// touches the tokenizer or the engine, so every rule is unit-tested on JSON alone; the checks that need the
// vocabulary size are in check_token_ids(). Unknown fields are ignored (as vLLM does); every field vLLM's
// CompletionRequest / ChatCompletionRequest knows is either implemented or refused with a 400 naming it when
// set to a value we do not implement (docs/api.md has the table, field by field).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
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
  nlohmann::ordered_json schema;    // kJsonSchema, in the order the client wrote it
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

// One entry of loraplex's "adapters" body field: an adapter stacked on the request, at a multiplier of its
// alpha/r scale.
struct AdapterSpec {
  std::string name;
  float scale = 1.f;
};
inline constexpr size_t kMaxAdaptersField = 16;  // entries parsed at most; --max-stacked-loras bounds the stack
inline constexpr double kMaxAdapterScale = 16;   // |scale| above it: 400

// What both endpoints share.
struct GenerateParams {
  std::string model;                 // "" when absent (= the base model)
  std::vector<AdapterSpec> adapters;  // loraplex's "adapters": [{"name", "scale"}], in stack order
  sched::SamplingParams sampling;    // temperature defaults to 1, as in OpenAI; logit_bias sorted by id
  int n = 1;
  std::optional<int> max_tokens;     // unset: completions 16, chat the context left
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage (true when stream_options is given, as vLLM)
  bool continuous_usage = false;     // stream_options.continuous_usage_stats (with include_usage): usage per chunk
  int logprobs = -1;                 // -1: none; k: sampled token + top k alternatives
  // vLLM's sampling extras.
  int min_tokens = 0;                // <= max_tokens (checked in make_engine_requests)
  std::optional<std::vector<int32_t>> allowed_token_ids;  // sorted, unique, non-empty; inside the vocabulary
  std::vector<std::string> bad_words;  // turned into token sequences by bad_words_token_ids()
  uint64_t cache_salt = 0;             // a hash of vLLM's cache_salt; 0: none
  int prompt_logprobs = -1;          // -1: none; k: each prompt token's logprob + top k (echo+logprobs sets it)
  bool echo = false;                 // completions: the prompt before the text; chat: see ChatRequest
  bool return_tokens_as_token_ids = false;  // logprobs name tokens "token_id:<id>" (vLLM)
  std::optional<int> truncate_prompt_tokens;  // keep the last k prompt tokens; -1: max_model_len
  StructuredOutput structured;       // response_format / structured_outputs / guided_*: parsed, not compiled
};

// One prompt of a completion request: a string or token ids.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> ids;  // used when text is unset
};

struct CompletionRequest : GenerateParams {
  // "prompt": a string, a list of ids, or a list of either (a batch: choice index = prompt * n + j).
  std::vector<PromptInput> prompts;
  bool add_special_tokens = true;  // BOS and friends on text prompts, as vLLM's default
};

struct ChatRequest : GenerateParams {
  nlohmann::ordered_json messages;  // array; text content parts joined into one string
  nlohmann::ordered_json tools;     // null or array, passed to the template
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  bool add_generation_prompt = true;
  bool add_special_tokens = false;  // as HF and vLLM: the template already writes BOS and friends
  // The last (assistant) message is left open for the model to continue (HF / vLLM); add_generation_prompt
  // is then false (explicitly true with it is a 400).
  bool continue_final_message = false;
  std::optional<std::string> chat_template;  // per request; the server refuses it unless trusted
  ToolChoice tool_choice;            // default: none without tools, auto with them (as vLLM)
  bool parallel_tool_calls = true;
  // echo (GenerateParams): the reply starts with the last message's content when it is an assistant's.
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

// The token ids a request names (stop_token_ids, logit_bias keys, allowed_token_ids) are inside a vocabulary of `vocab_size`
// ids; ApiError(kInvalid) naming the field otherwise. Called once the tokenizer is known.
void check_token_ids(const GenerateParams& p, int32_t vocab_size);

// vLLM's bad_words as token sequences: each word (left-stripped) encoded without special tokens, and once
// more with a leading space when that gives a different first token and the same length (vLLM's
// NoBadWordsLogitsProcessor). `encode` is the tokenizer's encode without special tokens. Null when none.
std::shared_ptr<const std::vector<std::vector<int32_t>>> bad_words_token_ids(
    const std::vector<std::string>& words, const std::function<std::vector<int32_t>(const std::string&)>& encode);

// truncate_prompt_tokens: keeps the last k tokens (-1: max_model_len); k > max_model_len is a 400 naming it.
void truncate_prompt(const GenerateParams& p, std::vector<int32_t>& prompt, int64_t max_model_len);

// The body of a POST parsed as JSON (an object), or ApiError(kInvalid) saying why not. The shape limits of
// request_limits.h (depth, keys) are checked by a linear pass before the DOM is built.
nlohmann::ordered_json parse_body(const std::string& body);

// The engine requests of one API call: n copies with seeds seed, seed+1, ... (when seeded; computed modulo
// 2^64, so a seed near the top of the range wraps instead of overflowing), sharing one stop list; max_tokens
// defaulted and checked against the context (400 context_length_exceeded when the prompt does not fit or the
// prompt plus an explicit max_tokens exceeds max_model_len). `default_max_tokens` < 0 means "the rest of the
// context". Also maps min_tokens (400 when above max_tokens), allowed_token_ids, prompt_logprobs and
// `bad_words` (already tokenized, bad_words_token_ids()). Completions echo with max_tokens 0 generates one
// token (the handler drops it), as vLLM does.
std::vector<sched::Request> make_engine_requests(const GenerateParams& p, std::vector<int32_t> prompt,
                                                 const std::string& adapter, int64_t max_model_len,
                                                 int default_max_tokens,
                                                 std::shared_ptr<const std::vector<std::vector<int32_t>>> bad_words = nullptr);

}  // namespace lp::server
