// lp::text::jinja::Template: a parsed Jinja template that renders like @huggingface/jinja 0.5.11
// (`new Template(src).render(vars)`, with trim_blocks and lstrip_blocks on, as transformers uses them).
// Parse once, render many times; render() is const and safe to call from several threads at once.
//
//   jinja::Template t("{{ bos_token }}{% for m in messages %}...{% endfor %}");
//   std::string s = t.render({{"messages", msgs}, {"bos_token", "<s>"}});
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "text/jinja/ast.h"
#include "text/jinja/interpreter.h"

namespace lp::text::jinja {

struct TemplateOptions {
  Limits limits;
  NowFn now;  // clock for strftime_now(); local time when empty
};

class Template {
 public:
  // Parses `source` (invalid UTF-8 is replaced by U+FFFD first). Throws lp::Error on a syntax error.
  explicit Template(std::string_view source, TemplateOptions options = {});

  // Renders with the given top-level variables (a JSON object; key order is kept, as JS objects keep
  // it). Throws lp::Error for runtime errors, raise_exception() (with its message) and exceeded limits.
  std::string render(const nlohmann::ordered_json& vars) const;

 private:
  Program program_;
  TemplateOptions options_;
};

// Converts JSON data to runtime values the way `convertToRuntimeValues(JSON.parse(...))` does:
// integral numbers become integers, object keys keep JS property order (array-index keys first).
Value value_from_json(const nlohmann::ordered_json& j);

}  // namespace lp::text::jinja
