// API-key authentication for /v1/*, /tokenize and /detokenize: `Authorization: Bearer KEY`, compared in time
// that depends only on the configured key's length (never on where the first differing byte is), so the key
// cannot be guessed byte by byte from response times. /health, /version and /metrics stay open (probes and
// scrapers carry no key). vLLM checks the key on /v1 paths only; /tokenize and /detokenize need it here
// because they cost tokenizer time on a 16 MiB body and their `model` can register an adapter (the
// resolver), which no caller without the key may do.
#pragma once

#include <string>
#include <string_view>

namespace lp::server {

// a == b, in time independent of the contents (loops over b, the secret, whatever a's length).
bool constant_time_equal(std::string_view a, std::string_view b);

// True when `authorization` (the header value, "" when absent) is "Bearer <key>" (scheme case-insensitive,
// as RFC 7235 says) and the token equals `key`.
bool bearer_authorized(std::string_view authorization, std::string_view key);

// True for paths that need the key when one is set (everything under /v1/, /tokenize, /detokenize).
bool path_needs_auth(std::string_view path);

}  // namespace lp::server
