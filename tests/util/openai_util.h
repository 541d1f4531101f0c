// Helpers for tests of the OpenAI request parsing (server/openai_request.h).
#pragma once

#include <string>

namespace lp::test {

// The param a completion (or, with `chat`, chat) request body is refused for: "" when it is accepted,
// "<none>" when the error names no param. Any refusal must be a client error (kInvalid, checked here).
std::string refused_param(const std::string& body, bool chat = false);

}  // namespace lp::test
