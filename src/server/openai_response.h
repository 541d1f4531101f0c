// The JSON the OpenAI API answers with, for both endpoints: whole responses, streaming chunks and the SSE
// framing around them (`data: {json}\n\n`, closed by `data: [DONE]\n\n`), usage objects, and logprobs in each
// endpoint's shape:
//   completions: {"tokens": [..], "token_logprobs": [..], "top_logprobs": [{token: logprob}, ..], "text_offset": [..]}
//   chat:        {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}
// Pure functions of their inputs (token text comes through a callback), so they are unit-tested without a model.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "sched/request.h"

namespace lp::server {

enum class Api { kCompletion, kChat };

struct ResponseMeta {
  Api api = Api::kCompletion;
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;    // the name the client asked for
};

// The text of one token as logprobs show it.
using TokenText = std::function<std::string(int32_t)>;

// A fresh id with the endpoint's prefix and 32 hex digits.
std::string make_response_id(Api api);
int64_t unix_now();

// vLLM's stop_reason: null (EOS, length, ...), the stop string, or the stop token id.
nlohmann::ordered_json stop_reason_json(const std::variant<std::monostate, std::string, int32_t>& r);

// vLLM's prompt_logprobs: one entry per prompt token, null for the first, else
// {"<token id>": {"logprob", "rank", "decoded_token"}} holding the prompt token and its top-k alternatives
// (rank: 1-based among the vocabulary; null when the engine did not compute it for a token outside the top k).
nlohmann::ordered_json prompt_logprobs_json(const std::vector<int32_t>& prompt,
                                            const std::vector<std::optional<sched::TokenLogprob>>& lps,
                                            const TokenText& text);

// Running state of one choice's completion logprobs while streaming (text_offset continues across chunks).
struct CompletionLogprobState {
  size_t text_offset = 0;
};
// The first `null_first` entries (echo: the first prompt token, which nothing precedes) get a null logprob
// and null top_logprobs, as vLLM writes them.
nlohmann::ordered_json completion_logprobs(const std::vector<sched::TokenLogprob>& lps, const TokenText& text,
                                           CompletionLogprobState& state, size_t null_first = 0);
// The "content" array of chat logprobs; `top_k` alternatives per token.
nlohmann::ordered_json chat_logprobs_content(const std::vector<sched::TokenLogprob>& lps, const TokenText& text,
                                             int top_k);

nlohmann::ordered_json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

// One finished choice of a non-streaming response.
struct ChoiceResult {
  std::string text;  // echo: the prompt (or the echoed message) first
  sched::FinishReason finish = sched::FinishReason::kNone;
  std::vector<sched::TokenLogprob> logprobs;
  int64_t completion_tokens = 0;
  size_t logprobs_null_first = 0;  // see completion_logprobs()
  std::variant<std::monostate, std::string, int32_t> stop_reason;
  nlohmann::ordered_json prompt_logprobs;  // prompt_logprobs_json() or null
};
// The whole response; `logprobs` < 0 leaves "logprobs": null. Every choice has "stop_reason"; completions
// choices have "prompt_logprobs", chat responses one top-level "prompt_logprobs" (the first choice's), as vLLM.
nlohmann::ordered_json full_response(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices,
                                     int64_t prompt_tokens, int logprobs, const TokenText& text);

// One streaming chunk for one choice. For chat, `role_delta` adds "role": "assistant" to the delta (first
// chunk). `logprobs` is null or the endpoint's logprobs object; `finish` kNone → "finish_reason": null;
// "stop_reason" (vLLM) is on every chunk, null but on the finishing one.
// `with_usage_null`: "usage": null, as OpenAI sends on every chunk when include_usage is set.
nlohmann::ordered_json stream_chunk(const ResponseMeta& meta, int index, const std::string& text, bool role_delta,
                                    nlohmann::ordered_json logprobs, sched::FinishReason finish,
                                    bool with_usage_null, nlohmann::ordered_json stop_reason = nullptr);
// The final usage chunk: "choices": [] and the usage object.
nlohmann::ordered_json usage_chunk(const ResponseMeta& meta, int64_t prompt_tokens, int64_t completion_tokens);

// "stop", "length", "abort"; kError is reported as an error, never as a finish reason.
const char* finish_reason_json(sched::FinishReason r);

// SSE framing.
std::string sse_event(const nlohmann::ordered_json& j);
std::string sse_event(const nlohmann::json& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";
// An SSE comment line (ignored by clients); the server writes one while a request waits, to notice a client
// that went away before its first token.
inline constexpr const char* kSseKeepAlive = ": keep-alive\n\n";

}  // namespace lp::server
