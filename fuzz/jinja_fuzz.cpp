// libFuzzer target: random bytes as a Jinja chat template, parsed and rendered against a fixed
// conversation (with tools). Every input must end in output or lp::Error: no crash, no sanitizer report,
// no hang. Limits are lowered so each input stays fast.
//   build-fuzz-jinja/fuzz/jinja_fuzz -max_total_time=60 -dict=... (no dictionary needed)
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/check.h"
#include "text/jinja/template.h"

namespace {

const nlohmann::ordered_json& vars() {
  static const nlohmann::ordered_json v = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi {{ 1 }} 😀"},
      {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello", "tool_calls": [
        {"id": "call12345", "type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": [1.5, null]}}}]},
      {"role": "tool", "content": "{\"x\": 2}"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "documents": null
  })");
  return v;
}

lp::text::jinja::TemplateOptions options() {
  lp::text::jinja::TemplateOptions o;
  o.limits.max_string_bytes = 1 << 16;
  o.limits.max_loop_iterations = 20'000;
  o.limits.max_items = 20'000;
  o.limits.max_work = 2'000'000;
  o.now = [] { return std::tm{}; };
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const lp::text::jinja::TemplateOptions opt = options();
  const std::string_view src(reinterpret_cast<const char*>(data), size);
  try {
    lp::text::jinja::Template t(src, opt);
    (void)t.render(vars());
  } catch (const lp::Error&) {
  }
  return 0;
}
