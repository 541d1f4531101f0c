// `loraplex tokenize` / `loraplex detokenize`: ids as JSON arrays (one per line with --jsonl), special
// tokens on or off, text back from ids, and lp::Error messages (exit 1) for bad input.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "text/demo_tokenizer.h"
#include "text/tokenizer.h"
#include "util/test_util.h"

namespace lp::text {
namespace {

using ::testing::HasSubstr;

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(test::loraplex_binary())) << "build the loraplex target first";
    write_demo_tokenizer(dir_.path(), 1024, 9);
  }
  // Runs `loraplex ARGS` and returns stdout; *rc gets the exit status.
  std::string run(const std::string& args, int* rc, bool with_stderr = false) {
    std::string out;
    *rc = test::run_command(fmt::format("'{}' {}{}", test::loraplex_binary().string(), args,
                                        with_stderr ? " 2>&1" : " 2>/dev/null"),
                            &out);
    return out;
  }
  std::string ids_json(const std::vector<int32_t>& ids) { return fmt::format("[{}]\n", fmt::join(ids, ",")); }
  test::TempDir dir_{"tok-cli"};
};

TEST_F(TokenizeCli, tokenize_prints_the_ids_of_encode) {
  const Tokenizer tok = Tokenizer::from_dir(dir_.path());
  int rc = -1;
  EXPECT_EQ(run(fmt::format("tokenize --tokenizer '{}' --text 'Hello, world!'", dir_.path().string()), &rc),
            ids_json(tok.encode("Hello, world!", true)));
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(
      run(fmt::format("tokenize --tokenizer '{}' --text 'Hi <|im_end|>' --no-special", dir_.path().string()),
          &rc),
      ids_json(tok.encode("Hi <|im_end|>", false)));
  EXPECT_EQ(run(fmt::format("tokenize --tokenizer '{}' --text ''", dir_.path().string()), &rc),
            ids_json(tok.encode("", true)));
  EXPECT_EQ(rc, 0);
}

TEST_F(TokenizeCli, jsonl_gives_one_line_per_string_and_file_reads_bytes) {
  const Tokenizer tok = Tokenizer::from_dir(dir_.path());
  test::write_file(dir_ / "in.jsonl", "\"a\\nb\"\n\"\\u00e9t\\u00e9\"\n\"\"\n");
  int rc = -1;
  EXPECT_EQ(run(fmt::format("tokenize --tokenizer '{}' --file '{}' --jsonl --no-special",
                            dir_.path().string(), (dir_ / "in.jsonl").string()),
                &rc),
            ids_json(tok.encode("a\nb", false)) + ids_json(tok.encode("été", false)) + ids_json({}));
  EXPECT_EQ(rc, 0);
  test::write_file(dir_ / "in.txt", "line one\nline two\n");
  EXPECT_EQ(run(fmt::format("tokenize --tokenizer '{}' --file '{}'", dir_.path().string(),
                            (dir_ / "in.txt").string()),
                &rc),
            ids_json(tok.encode("line one\nline two\n", true)));
}

TEST_F(TokenizeCli, detokenize_prints_the_text) {
  const Tokenizer tok = Tokenizer::from_dir(dir_.path());
  const auto ids = tok.encode("Grüße <|im_start|>", true);
  int rc = -1;
  EXPECT_EQ(
      run(fmt::format("detokenize --tokenizer '{}' --ids {}", dir_.path().string(), fmt::join(ids, ",")),
          &rc),
      "<|begin_of_text|>Grüße <|im_start|>\n");
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(run(fmt::format("detokenize --tokenizer '{}' --ids {} --skip-special", dir_.path().string(),
                            fmt::join(ids, ",")),
                &rc),
            "Grüße \n");
  EXPECT_EQ(run(fmt::format("detokenize --tokenizer '{}' --ids {} --json", dir_.path().string(),
                            *tok.token_to_id("Ċ")),
                &rc),
            "\"\\n\"\n");
}

TEST_F(TokenizeCli, bad_input_is_an_error_message) {
  int rc = -1;
  EXPECT_THAT(run(fmt::format("detokenize --tokenizer '{}' --ids 1,x", dir_.path().string()), &rc, true),
              HasSubstr("invalid token id 'x'"));
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(run(fmt::format("detokenize --tokenizer '{}' --ids 5000", dir_.path().string()), &rc, true),
              HasSubstr("out of range"));
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(run(fmt::format("tokenize --tokenizer '{}'", dir_.path().string()), &rc, true),
              HasSubstr("exactly one of --text or --file"));
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(run("tokenize --tokenizer /nonexistent --text hi", &rc, true), HasSubstr("no tokenizer.json"));
  EXPECT_EQ(rc, 1);
  test::write_file(dir_ / "bad.jsonl", "\"ok\"\n{\"not\": \"a string\"}\n");
  EXPECT_THAT(run(fmt::format("tokenize --tokenizer '{}' --file '{}' --jsonl", dir_.path().string(),
                              (dir_ / "bad.jsonl").string()),
                  &rc, true),
              HasSubstr("bad.jsonl:2: expected a JSON string"));
  EXPECT_EQ(rc, 1);
}

}  // namespace
}  // namespace lp::text
