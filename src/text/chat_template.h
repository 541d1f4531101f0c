// ChatTemplate: turns an OpenAI-style message list into the prompt string a model was trained on, by
// rendering the model's Jinja chat template exactly as transformers.js' apply_chat_template does (our
// interpreter in text/jinja matches @huggingface/jinja byte for byte).
//
// The template comes from tokenizer_config.json's `chat_template`: a string, or a list of
// {name, template} where "default" is used, or "tool_use" when tools are given (as transformers picks).
// A folder whose config has none may carry it in chat_template.jinja or chat_template.json instead.
// Templates are parsed once at construction; render() is const and thread-safe.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "text/jinja/template.h"

namespace lp::text {

class ChatTemplate {
 public:
  // `config` is the parsed tokenizer_config.json. `name` forces a named template ("" = pick as
  // transformers does). Throws lp::Error when there is no template or one fails to parse.
  static ChatTemplate from_tokenizer_config(const nlohmann::ordered_json& config,
                                            const std::string& name = "",
                                            jinja::TemplateOptions options = {});
  // Reads DIR/tokenizer_config.json (and DIR/chat_template.jinja or .json when the config has no template).
  static ChatTemplate from_dir(const std::filesystem::path& dir, const std::string& name = "",
                               jinja::TemplateOptions options = {});
  // A single template with explicit special tokens (e.g. {"bos_token": "<s>", "eos_token": "</s>"}).
  ChatTemplate(const std::string& source, const nlohmann::ordered_json& special_tokens,
               jinja::TemplateOptions options = {});

  // Renders `messages` (a JSON array of {role, content, ...}). `tools` is null or a JSON array of tool
  // schemas; `extra_vars` (an object) adds template variables such as `enable_thinking` or `date_string`.
  // Throws lp::Error when the template raises (raise_exception) or fails.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& tools = nullptr,
                     const nlohmann::ordered_json& extra_vars = nlohmann::ordered_json::object()) const;

  // The template source that render() uses with or without tools.
  const std::string& source(bool with_tools = false) const;
  // bos_token, eos_token, ... as strings (only the non-empty ones, as transformers.js passes them).
  const nlohmann::ordered_json& special_tokens() const { return special_tokens_; }

 private:
  struct Named {
    std::string source;
    std::shared_ptr<const jinja::Template> compiled;
  };
  ChatTemplate() = default;
  const Named& pick(bool with_tools) const;

  std::map<std::string, Named> templates_;  // name -> template ("" when the config has a single string)
  std::string forced_name_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
};

}  // namespace lp::text
