// ChatTemplate: template selection, special tokens and the variables passed to the template, following
// transformers.js PreTrainedTokenizer.get_chat_template / apply_chat_template (see chat_template.h).
#include "text/chat_template.h"

#include <fstream>
#include <sstream>

#include "core/check.h"

namespace lp::text {

namespace {

// The special tokens transformers.js hands to templates (SPECIAL_TOKEN_ATTRIBUTES).
constexpr const char* kSpecialTokenKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                             "pad_token", "cls_token", "mask_token"};

nlohmann::ordered_json special_tokens_from_config(const nlohmann::ordered_json& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const char* key : kSpecialTokenKeys) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    std::string value;
    if (it->is_string()) {
      value = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      value = (*it)["content"].get<std::string>();  // {"__type": "AddedToken", "content": ...}
    } else {
      fail("tokenizer_config.json: {} must be a string or an object with \"content\"", key);
    }
    if (!value.empty()) out[key] = value;
  }
  return out;
}

nlohmann::ordered_json read_json(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail("cannot open {}", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", p.string(), e.what());
  }
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail("cannot open {}", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

ChatTemplate ChatTemplate::from_tokenizer_config(const nlohmann::ordered_json& config,
                                                 const std::string& name, jinja::TemplateOptions options) {
  if (!config.is_object()) fail("tokenizer_config.json must be a JSON object");
  ChatTemplate ct;
  ct.forced_name_ = name;
  ct.special_tokens_ = special_tokens_from_config(config);
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) fail("tokenizer_config.json has no chat_template");
  auto compile = [&](const std::string& tname, const std::string& src) {
    try {
      ct.templates_[tname] = Named{src, std::make_shared<jinja::Template>(src, options)};
    } catch (const Error& e) {
      fail("chat template{}: {}", tname.empty() ? "" : " '" + tname + "'", e.what());
    }
  };
  if (it->is_string()) {
    compile("", it->get<std::string>());
  } else if (it->is_array()) {
    for (const auto& t : *it) {
      if (!t.is_object() || !t.contains("name") || !t.contains("template") || !t["name"].is_string() ||
          !t["template"].is_string()) {
        fail("tokenizer_config.json: chat_template list entries must be {{\"name\", \"template\"}} strings");
      }
      compile(t["name"].get<std::string>(), t["template"].get<std::string>());
    }
  } else {
    fail("tokenizer_config.json: chat_template must be a string or a list of named templates");
  }
  if (!name.empty() && !ct.templates_.count(name)) fail("no chat template named '{}'", name);
  if (name.empty() && !ct.templates_.count("") && !ct.templates_.count("default")) {
    std::string names;
    for (const auto& [n, t] : ct.templates_) names += (names.empty() ? "" : ", ") + n;
    fail("the model has several chat templates and none is named 'default' (available: {})", names);
  }
  return ct;
}

ChatTemplate ChatTemplate::from_dir(const std::filesystem::path& dir, const std::string& name,
                                    jinja::TemplateOptions options) {
  nlohmann::ordered_json config = read_json(dir / "tokenizer_config.json");
  if (!config.is_object()) fail("{}: must be a JSON object", (dir / "tokenizer_config.json").string());
  if (!config.contains("chat_template") || config["chat_template"].is_null()) {
    if (std::filesystem::exists(dir / "chat_template.jinja")) {
      config["chat_template"] = read_text(dir / "chat_template.jinja");
    } else if (std::filesystem::exists(dir / "chat_template.json")) {
      const auto j = read_json(dir / "chat_template.json");
      if (j.is_object() && j.contains("chat_template")) config["chat_template"] = j["chat_template"];
    }
  }
  if (!config.contains("chat_template") || config["chat_template"].is_null()) {
    fail("{} has no chat template (tokenizer_config.json chat_template, chat_template.jinja)", dir.string());
  }
  return from_tokenizer_config(config, name, std::move(options));
}

ChatTemplate::ChatTemplate(const std::string& source, const nlohmann::ordered_json& special_tokens,
                           jinja::TemplateOptions options) {
  special_tokens_ = special_tokens_from_config(special_tokens);
  templates_[""] = Named{source, std::make_shared<jinja::Template>(source, std::move(options))};
}

const ChatTemplate::Named& ChatTemplate::pick(bool with_tools) const {
  if (!forced_name_.empty()) return templates_.at(forced_name_);
  if (auto it = templates_.find(""); it != templates_.end()) return it->second;
  if (with_tools) {
    if (auto it = templates_.find("tool_use"); it != templates_.end()) return it->second;
  }
  return templates_.at("default");
}

const std::string& ChatTemplate::source(bool with_tools) const {
  return pick(with_tools).source;
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& tools,
                                 const nlohmann::ordered_json& extra_vars) const {
  if (!extra_vars.is_object() && !extra_vars.is_null()) fail("chat template variables must be a JSON object");
  // The object apply_chat_template passes: {messages, add_generation_prompt, tools, documents,
  // ...special tokens, ...kwargs}.
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["messages"] = messages;
  vars["add_generation_prompt"] = add_generation_prompt;
  vars["tools"] = tools;
  vars["documents"] = nullptr;
  for (const auto& [k, v] : special_tokens_.items()) vars[k] = v;
  if (extra_vars.is_object()) {
    for (const auto& [k, v] : extra_vars.items()) vars[k] = v;
  }
  return pick(!tools.is_null()).compiled->render(vars);
}

}  // namespace lp::text
