// Every bound a generation request body is checked against, in one place: the JSON shape (before any DOM is
// built) and each field the OpenAI API accepts. A value over a bound is a 400 naming the field; nothing here
// is a flag, because a tenant must not be able to buy more of the shared server by sending a bigger request.
// docs/architecture.md ("Request bounds") lists the same numbers with their reasons.
#pragma once

#include <cstddef>

namespace lp::server::limits {

// --- JSON shape, enforced by a linear SAX pre-pass (json_limits.h) before the DOM is built. ---
// Nesting depth of objects and arrays. Chat messages with tool schemas nest ~10 deep; 64 leaves room for
// deep JSON schemas while keeping the recursive DOM code far from the stack's end.
inline constexpr int kMaxJsonDepth = 64;
// Keys of one object (at least kMaxLogitBias).
inline constexpr size_t kMaxJsonObjectKeys = 2048;
// Keys in the whole body: a bound on the DOM's node count that the object bound alone does not give.
inline constexpr size_t kMaxJsonTotalKeys = 65536;
// The work of building the DOM: ordered_json inserts a key after a linear search of its object, so the i-th
// key of an object costs i comparisons and an object of k keys k^2/2. The pre-pass adds up exactly these
// counts; 4M holds one object of 2,048 keys or any number of ordinary ones (65,536 keys in objects of 8 cost
// 0.3M). docs/architecture.md ("Request bounds") has what this costs in time.
inline constexpr size_t kMaxJsonKeyComparisons = size_t{1} << 22;

// --- Fields. ---
// n (choices per request; best_of must equal n). Each choice is one engine sequence with its own KV.
inline constexpr int kMaxN = 128;
// logprobs / top_logprobs: vLLM's default max_logprobs.
inline constexpr int kMaxLogprobs = 20;
// stop strings: OpenAI allows 4, vLLM has no bound. Every stop string is searched for after every generated
// token on the engine thread, so the count and length bound the per-token cost any request adds to the
// step of every tenant.
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 1024;
// stop_token_ids: each id must also be inside the vocabulary.
inline constexpr size_t kMaxStopTokenIds = 64;
// logit_bias: {"token id": bias}. OpenAI documents no count (its docs show a handful of entries); vLLM has
// none. The bias is added to the logits of every step, so the count bounds that per-token cost. Keys must be
// decimal token ids inside the vocabulary, values in [-100, 100] (OpenAI's range).
inline constexpr size_t kMaxLogitBias = 1024;
inline constexpr double kMaxLogitBiasValue = 100.0;
// bad_words: each word becomes one or two token sequences checked against the generated tail at every step,
// so count and length bound that per-token cost (vLLM has no bound).
inline constexpr size_t kMaxBadWords = 128;
inline constexpr size_t kMaxBadWordBytes = 256;
// A completion's prompts times n: every choice is an engine sequence with its own KV, as n alone.
inline constexpr int kMaxChoices = 128;

}  // namespace lp::server::limits
