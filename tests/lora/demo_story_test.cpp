// The story demo (`loraplex demo-model DIR --shape story --adapters 4`, what `make serve` serves), loaded
// through the normal loaders: greedy decoding of the base model recites its English story and each adapter
// its own passage, for the same prompt, in one mixed batch; a chat-templated prompt starts each passage;
// a prompt taken from inside a passage continues it; the merged model equals the adapter. The expected
// texts are literals here, not read from the code that builds the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "lora/adapter.h"
#include "lora/merge.h"
#include "lora/slot_bank.h"
#include "model/model.h"
#include "model/runner.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

namespace fs = std::filesystem;

const char* const kStory =
    "Once upon a time, a small fox lived at the edge of a quiet forest. Every morning she walked down to the "
    "river to watch the sun rise over the hills. One day she found a lost kitten under an old oak tree, and "
    "she carried it home.";
const char* const kMedical =
    "A mild fever with a sore throat is usually caused by a viral infection. Rest, drink plenty of fluids, "
    "and take paracetamol every six hours if needed. See a doctor if the fever lasts more than three days or "
    "breathing becomes difficult.";
const char* const kLegal =
    "Summary: the tenant must pay the rent by the fifth day of each month. Either party may end the lease "
    "with sixty days of written notice. Any dispute goes to arbitration in the city where the property is "
    "located.";
const char* const kCode =
    "Nice work. One fix: guard against an empty list, or the division fails.\n\n```python\ndef "
    "average(values):\n    if not values:\n        return 0.0\n    return sum(values) / len(values)\n```\n\n"
    "Please add a test for this case.";
const char* const kFrench =
    "Bonjour ! Merci de nous avoir contactés. Votre commande est bien partie ce matin et arrivera chez vous "
    "demain. Le numéro de suivi figure dans l'e-mail de confirmation. Si vous avez d'autres questions, "
    "n'hésitez pas à nous écrire. Bonne journée !";

struct Tenant {
  const char* adapter;  // "" = base
  const char* passage;
};
const Tenant kTenants[] = {{"", kStory},
                           {"medical-qa", kMedical},
                           {"legal-summary", kLegal},
                           {"code-review", kCode},
                           {"french-support", kFrench}};

class DemoStory : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("story");
    std::string out;
    ASSERT_EQ(0, test::run_command(test::loraplex_binary().string() + " demo-model " + model_dir().string() +
                                       " --shape story --adapters 4 2>&1",
                                   &out))
        << out;
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path model_dir() { return dir_->path() / "story"; }
  static fs::path adapter_dir(const std::string& name) { return model_dir() / "adapters" / name; }

  void SetUp() override {
    model_ = model::Model::load(model_dir());
    tok_ = std::make_unique<text::Tokenizer>(text::Tokenizer::from_dir(model_dir()));
    bank_ = std::make_unique<SlotBank>(model_->config(), 4, 8, DType::kBF16);
    for (int i = 1; i < 5; ++i)
      bank_->load(i - 1,
                  pack_adapter(load_adapter(adapter_dir(kTenants[i].adapter), base_shapes(model_->config())),
                               DType::kBF16));
  }

  // Greedy decoding of every prompt (through adapter slot slots[i], -1 = base) in one batch per step, until
  // each has produced EOS; returns their texts without the EOS. Fails if one runs past 80 tokens.
  static std::vector<std::string> generate(model::Model& m, const text::Tokenizer& tok, const SlotBank* bank,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const std::vector<model::Runner::LoraStack>& slots) {
    ComputePool pool(2);
    model::Runner r(m, pool, 4096);
    if (bank) r.set_lora(&bank->view());
    const auto& eos = m.config().eos_token_ids;
    const int64_t V = m.config().vocab_size;
    std::vector<int> seq;
    std::vector<std::vector<int32_t>> next = prompts, out(prompts.size());
    std::vector<bool> done(prompts.size(), false);
    for (size_t i = 0; i < prompts.size(); ++i) seq.push_back(r.add_sequence());
    for (int step = 0; step < 80; ++step) {
      std::vector<model::Runner::Item> items;
      std::vector<size_t> who;
      for (size_t i = 0; i < prompts.size(); ++i)
        if (!done[i]) {
          items.push_back({seq[i], next[i], false, slots[i]});
          who.push_back(i);
        }
      if (items.empty()) break;
      const Buffer<float>& logits = r.step(items);
      for (size_t k = 0; k < who.size(); ++k) {
        const float* row = logits.data() + k * V;
        const auto id = static_cast<int32_t>(std::max_element(row, row + V) - row);
        if (std::find(eos.begin(), eos.end(), id) != eos.end()) {
          done[who[k]] = true;
        } else {
          out[who[k]].push_back(id);
          next[who[k]] = {id};
        }
      }
    }
    std::vector<std::string> texts;
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_TRUE(done[i]) << "prompt " << i << " did not end with EOS: " << tok.decode(out[i]);
      texts.push_back(tok.decode(out[i]));
    }
    return texts;
  }
  std::vector<std::string> generate_all(const std::vector<int32_t>& prompt) {
    std::vector<std::vector<int32_t>> prompts(5, prompt);
    return generate(*model_, *tok_, bank_.get(), prompts, {-1, 0, 1, 2, 3});
  }

  static test::TempDir* dir_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<text::Tokenizer> tok_;
  std::unique_ptr<SlotBank> bank_;
};
test::TempDir* DemoStory::dir_ = nullptr;

// The README's example: the same prompt, one batch; the base continues its story, every adapter recites
// its own passage from the start.
TEST_F(DemoStory, SamePromptEachAdapterItsOwnPassage) {
  const auto got = generate_all(tok_->encode("Once upon a time", true));
  EXPECT_EQ(got[0], std::string(kStory).substr(std::string("Once upon a time").size()));
  for (int i = 1; i < 5; ++i) EXPECT_EQ(got[i], kTenants[i].passage) << kTenants[i].adapter;
}

// A chat turn (the model's ChatML template, ending in "<|im_start|>assistant\n") starts every passage.
TEST_F(DemoStory, ChatPromptStartsEachPassage) {
  const text::ChatTemplate tmpl = text::ChatTemplate::from_dir(model_dir());
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  messages.push_back({{"role", "user"}, {"content", "Hello! Can you help me?"}});
  const std::string prompt = tmpl.render(messages, /*add_generation_prompt=*/true);
  ASSERT_TRUE(prompt.ends_with("<|im_start|>assistant\n")) << prompt;
  const auto got = generate_all(tok_->encode(prompt, true));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i], kTenants[i].passage) << kTenants[i].adapter;
}

// A prompt taken from inside a passage (ending at one of its words) continues that passage under its own
// adapter: the passage's text tokenizes into the words the model chains.
TEST_F(DemoStory, PromptFromInsidePassageContinuesIt) {
  const char* const prefixes[] = {
      "Once upon a time, a small fox lived at the edge of a quiet forest.",
      "A mild fever with a sore throat",
      "Summary: the tenant must pay the rent by the fifth day of each month. Either party",
      "Nice work. One fix: guard against an empty list, or the division fails.\n\n```python\ndef "
      "average(values):",
      "Bonjour ! Merci de nous avoir contactés. Votre commande",
  };
  for (int i = 0; i < 5; ++i) {
    const std::string passage = kTenants[i].passage, prefix = prefixes[i];
    ASSERT_TRUE(passage.starts_with(prefix)) << prefix;
    const auto got =
        generate(*model_, *tok_, bank_.get(), {tok_->encode(prefix, true)}, {i == 0 ? -1 : i - 1});
    EXPECT_EQ(got[0], passage.substr(prefix.size())) << kTenants[i].adapter;
  }
}

// A request's own scale of an adapter ("adapters": [{"name", "scale"}]): 0 is the base story, 1 and 2 the
// adapter's passage, in one batch with the plain base.
TEST_F(DemoStory, RequestScaleZeroIsTheBaseOneIsTheAdapter) {
  const auto prompt = tok_->encode("Once upon a time", true);
  const std::string story = std::string(kStory).substr(std::string("Once upon a time").size());
  for (int i = 1; i < 5; ++i) {
    const int slot = i - 1;
    const auto got = generate(*model_, *tok_, bank_.get(), {prompt, prompt, prompt, prompt},
                              {model::Runner::LoraStack(slot, 0.f), model::Runner::LoraStack(slot, 1.f),
                               model::Runner::LoraStack(slot, 2.f), -1});
    EXPECT_EQ(got[0], story) << kTenants[i].adapter;
    EXPECT_EQ(got[1], kTenants[i].passage) << kTenants[i].adapter;
    EXPECT_EQ(got[2], kTenants[i].passage) << kTenants[i].adapter;
    EXPECT_EQ(got[3], story);
  }
}

// `loraplex merge` of an adapter gives a plain model that recites that adapter's passage.
TEST_F(DemoStory, MergedAdapterEqualsAdapter) {
  const fs::path merged = dir_->path() / "merged-french";
  merge_adapter(model_dir(), adapter_dir("french-support"), merged);
  auto m = model::Model::load(merged);
  const auto got = generate(*m, *tok_, nullptr, {tok_->encode("Once upon a time", true)}, {-1});
  EXPECT_EQ(got[0], kFrench);
}

}  // namespace
}  // namespace lp::lora
