// `loraplex chat-template`: renders a model's chat template for a conversation, exactly as the server
// (and transformers.js' apply_chat_template) does, and prints the prompt with no newline added.
//   loraplex chat-template --tokenizer DIR --messages FILE.json [--add-generation-prompt]
//                          [--tools FILE.json] [--vars FILE.json] [--template-name NAME]
// --vars adds template variables (e.g. {"enable_thinking": false}).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/check.h"
#include "text/chat_template.h"

namespace lp::cli {

namespace {

struct ChatTemplateArgs {
  std::string tokenizer;
  std::string messages;
  std::string tools;
  std::string vars;
  std::string name;
  bool add_generation_prompt = false;
};

nlohmann::ordered_json read_json_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read {} file {}", what, path);
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("{} file {}: invalid JSON: {}", what, path, e.what());
  }
}

void run_chat_template(const ChatTemplateArgs& a) {
  const auto tpl = text::ChatTemplate::from_dir(a.tokenizer, a.name);
  nlohmann::ordered_json messages = read_json_file(a.messages, "--messages");
  // Accept a bare message list or an OpenAI request body ({"messages": [...], "tools": [...]}).
  nlohmann::ordered_json tools = nullptr;
  if (messages.is_object()) {
    if (messages.contains("tools")) tools = messages["tools"];
    messages = messages.value("messages", nlohmann::ordered_json());
  }
  if (!messages.is_array()) fail("--messages must hold a JSON array of messages");
  if (!a.tools.empty()) tools = read_json_file(a.tools, "--tools");
  if (!tools.is_null() && !tools.is_array()) fail("--tools must hold a JSON array of tool schemas");
  const nlohmann::ordered_json vars =
      a.vars.empty() ? nlohmann::ordered_json::object() : read_json_file(a.vars, "--vars");
  if (!vars.is_object()) fail("--vars must hold a JSON object");
  const std::string prompt = tpl.render(messages, a.add_generation_prompt, tools, vars);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

void add_chat_template_command(CLI::App& app) {
  auto args = std::make_shared<ChatTemplateArgs>();
  CLI::App* cmd = app.add_subcommand("chat-template", "render a model's chat template for a conversation");
  cmd->add_option("--tokenizer", args->tokenizer, "model or tokenizer folder (tokenizer_config.json)")
      ->required();
  cmd->add_option("--messages", args->messages, "JSON file: array of {role, content, ...} messages")
      ->required();
  cmd->add_flag("--add-generation-prompt", args->add_generation_prompt, "open an assistant turn at the end");
  cmd->add_option("--tools", args->tools, "JSON file: array of tool (function) schemas");
  cmd->add_option("--vars", args->vars, "JSON file: object of extra template variables");
  cmd->add_option("--template-name", args->name, "use this named template (default: as transformers picks)");
  cmd->callback([args] { run_chat_template(*args); });
}

}  // namespace lp::cli
