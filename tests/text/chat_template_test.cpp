// ChatTemplate: reading tokenizer_config.json (string or named templates, special tokens as strings or
// AddedToken objects, chat_template.jinja fallback), picking "tool_use" when tools are given, the variables
// passed to the template, and the `loraplex chat-template` command.
#include "text/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/check.h"
#include "util/test_util.h"

namespace lp::text {
namespace {

using json = nlohmann::ordered_json;

const json kMessages = json::array({{{"role", "user"}, {"content", "hi"}}});

TEST(ChatTemplate, renders_a_string_template_with_special_tokens) {
  const json config = {
      {"bos_token", "<s>"},
      {"eos_token", {{"__type", "AddedToken"}, {"content", "</s>"}}},
      {"pad_token", nullptr},
      {"unk_token", ""},
      {"chat_template",
       "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}"
       "{% if add_generation_prompt %}[assistant]{% endif %}|{{ pad_token is defined }}"
       "{{ unk_token is defined }}{{ tools is none }}{{ documents is none }}"}};
  const ChatTemplate t = ChatTemplate::from_tokenizer_config(config);
  EXPECT_EQ(t.render(kMessages, false), "<s>[user]hi</s>|falsefalsetruetrue");
  EXPECT_EQ(t.render(kMessages, true), "<s>[user]hi</s>[assistant]|falsefalsetruetrue");
  EXPECT_EQ(t.special_tokens(), json({{"bos_token", "<s>"}, {"eos_token", "</s>"}}));
}

TEST(ChatTemplate, named_templates_pick_default_or_tool_use_like_transformers) {
  const json config = {
      {"chat_template", json::array({{{"name", "default"}, {"template", "D{{ tools|length }}"}},
                                     {{"name", "tool_use"}, {"template", "T{{ tools|length }}"}},
                                     {{"name", "rag"}, {"template", "R"}}})}};
  const ChatTemplate t = ChatTemplate::from_tokenizer_config(config);
  const json tools = json::array({{{"type", "function"}}});
  EXPECT_THROW(t.render(kMessages, false), Error);  // `null|length` fails, as in the reference
  EXPECT_EQ(t.render(kMessages, false, tools), "T1");
  EXPECT_EQ(t.source(false), "D{{ tools|length }}");
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(config, "rag").render(kMessages, false, tools), "R");
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(config, "nope"), Error);
  const json no_default = {{"chat_template", json::array({{{"name", "rag"}, {"template", "R"}}})}};
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(no_default), Error);
}

TEST(ChatTemplate, extra_vars_reach_the_template_and_can_override) {
  const ChatTemplate t("{{ enable_thinking }}|{{ add_generation_prompt }}|{{ messages|length }}",
                       json::object());
  EXPECT_EQ(t.render(kMessages, true, nullptr, {{"enable_thinking", false}}), "false|true|1");
  EXPECT_EQ(t.render(kMessages, true, nullptr, {{"add_generation_prompt", "x"}}), "|x|1");
  EXPECT_THROW(t.render(kMessages, true, nullptr, {{"true", 1}}), Error);  // a builtin name
}

TEST(ChatTemplate, configs_without_a_usable_template_are_rejected) {
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(json{{"bos_token", "<s>"}}), Error);
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(json{{"chat_template", 5}}), Error);
  EXPECT_THROW(ChatTemplate::from_tokenizer_config(json{{"chat_template", "{% if %}"}}), Error);
  const auto llama2 = lp::test::npm_dir() / "node_modules" / "@lenml" / "tokenizer-llama2" / "models";
  if (std::filesystem::exists(llama2)) {
    try {
      ChatTemplate::from_dir(llama2);
      ADD_FAILURE() << "llama2's tokenizer_config.json has no chat_template";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no chat template"), std::string::npos) << e.what();
    }
  }
}

TEST(ChatTemplate, from_dir_reads_installed_tokenizer_configs_and_jinja_files) {
  const auto llama3 = lp::test::npm_dir() / "node_modules" / "@lenml" / "tokenizer-llama3_1" / "models";
  if (!std::filesystem::exists(llama3)) LP_FIXTURE_MISSING() << "tests/fixtures/npm/node_modules is missing";
  const ChatTemplate t = ChatTemplate::from_dir(llama3);
  EXPECT_EQ(t.render(kMessages, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");

  lp::test::TempDir dir("chat-dir");
  lp::test::write_file(dir / "tokenizer_config.json", R"({"eos_token": "<e>"})");
  lp::test::write_file(dir / "chat_template.jinja",
                       "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}\n");
  EXPECT_EQ(ChatTemplate::from_dir(dir.path()).render(kMessages, false), "hi<e>");
}

TEST(ChatTemplateCli, prints_the_rendered_prompt_without_a_trailing_newline) {
  const auto bin = lp::test::loraplex_binary();
  const auto qwen3 = lp::test::npm_dir() / "node_modules" / "@lenml" / "tokenizer-qwen3" / "models";
  if (!std::filesystem::exists(bin)) LP_FIXTURE_MISSING() << "build the loraplex binary first";
  if (!std::filesystem::exists(qwen3)) LP_FIXTURE_MISSING() << "tests/fixtures/npm/node_modules is missing";
  lp::test::TempDir dir("chat-cli");
  const json messages =
      json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "2+2?"}}});
  const json tools =
      json::array({{{"type", "function"}, {"function", {{"name", "add"}, {"parameters", json::object()}}}}});
  lp::test::write_file(dir / "m.json", messages.dump());
  lp::test::write_file(dir / "t.json", tools.dump());
  const std::string base = bin.string() + " chat-template --tokenizer '" + qwen3.string() + "' --messages '" +
                           (dir / "m.json").string() + "'";
  std::string out;
  ASSERT_EQ(lp::test::run_command(
                base + " --add-generation-prompt --tools '" + (dir / "t.json").string() + "'", &out),
            0);
  EXPECT_EQ(out, ChatTemplate::from_dir(qwen3).render(messages, true, tools));
  EXPECT_NE(out.find("<tools>\n{\"type\": \"function\""), std::string::npos) << out;
  EXPECT_EQ(out.substr(out.size() - 22), "<|im_start|>assistant\n");
  ASSERT_EQ(lp::test::run_command(base, &out), 0);
  EXPECT_EQ(out, ChatTemplate::from_dir(qwen3).render(messages, false));
  EXPECT_NE(lp::test::run_command(base + " --tools /nonexistent.json 2>/dev/null", &out), 0);
}

}  // namespace
}  // namespace lp::text
