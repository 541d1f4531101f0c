#include "util/openai_util.h"

#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/openai_request.h"

namespace lp::test {

std::string refused_param(const std::string& body, bool chat) {
  try {
    nlohmann::ordered_json j = server::parse_body(body);
    if (chat) server::parse_chat_request(j);
    else server::parse_completion_request(j);
  } catch (const server::ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    return e.param().empty() ? "<none>" : e.param();
  }
  return "";
}

}  // namespace lp::test
