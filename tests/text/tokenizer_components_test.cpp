// The tokenizer's units one by one, on small hand-written configurations whose expected results come from
// the Hugging Face tokenizers (Rust) sources and their tests: split behaviors, Metaspace, BPE options
// (unk / fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix, merge formats), added-token
// matching (lstrip, rstrip, single_word, normalized), the decoders, and refusal of unsupported parts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/check.h"
#include "text/tokenizer.h"
#include "text/tokenizer_added_vocab.h"
#include "text/tokenizer_decoders.h"
#include "text/tokenizer_normalizers.h"
#include "text/tokenizer_pretokenizers.h"

namespace lp::text {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> split_texts(const std::string& text, const std::string& pattern, SplitBehavior b,
                                     bool invert = false) {
  const Regex re(pattern, "test");
  std::vector<std::string> out;
  for (const auto& [s, e] : split_by_behavior(re.spans(text), b, invert))
    out.push_back(text.substr(s, e - s));
  return out;
}

TEST(SplitBehavior, each_behavior_cuts_like_hf) {
  const std::string t = "the-final--countdown";
  EXPECT_THAT(split_texts(t, "-", SplitBehavior::kRemoved), ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(split_texts(t, "-", SplitBehavior::kIsolated),
              ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(split_texts(t, "-", SplitBehavior::kMergedWithPrevious),
              ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(split_texts(t, "-", SplitBehavior::kMergedWithNext),
              ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(split_texts(t, "-", SplitBehavior::kContiguous),
              ElementsAre("the", "-", "final", "--", "countdown"));
  EXPECT_THAT(split_texts("How are you doing?", R"(\s+)", SplitBehavior::kMergedWithPrevious),
              ElementsAre("How ", "are ", "you ", "doing?"));
  EXPECT_THAT(split_texts("Hello Hello Hello", " ", SplitBehavior::kRemoved, /*invert=*/true),
              ElementsAre(" ", " "));
  EXPECT_THAT(split_texts("", "-", SplitBehavior::kIsolated), ElementsAre());
}

std::vector<std::string> pre_tokenize(const json& config, std::vector<PreToken> pieces) {
  make_pre_tokenizer(config)->pre_tokenize(pieces);
  std::vector<std::string> out;
  for (const PreToken& p : pieces) out.push_back(p.text);
  return out;
}

TEST(PreTokenizer, metaspace_replaces_prepends_and_splits) {
  const json ms = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_THAT(pre_tokenize(ms, {{"Hey friend!", true}}), ElementsAre("▁Hey", "▁friend!"));
  EXPECT_THAT(pre_tokenize(ms, {{"Hey   friend!", true}}), ElementsAre("▁Hey", "▁", "▁", "▁friend!"));
  // prepend_scheme "first": only the piece at the start of the input gets the prefix.
  const json first = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  EXPECT_THAT(pre_tokenize(first, {{"Hey my friend ", true}, {"how are you", false}}),
              ElementsAre("▁Hey▁my▁friend▁", "how▁are▁you"));
  EXPECT_THAT(pre_tokenize(first, {{" Hey ", true}, {"how", false}}), ElementsAre("▁Hey▁", "how"));
  const json never = {{"type", "Metaspace"}, {"replacement", "▁"}, {"add_prefix_space", false}};
  EXPECT_THAT(pre_tokenize(never, {{"a b", true}}), ElementsAre("a", "▁b"));
}

TEST(PreTokenizer, byte_level_maps_bytes_and_splits_with_gpt2_regex) {
  const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  EXPECT_THAT(pre_tokenize(bl, {{"Hello my friend, how's it?", true}}),
              ElementsAre("Hello", "Ġmy", "Ġfriend", ",", "Ġhow", "'s", "Ġit", "?"));
  EXPECT_THAT(pre_tokenize(bl, {{"a\nb  c", true}}), ElementsAre("a", "Ċ", "b", "Ġ", "Ġc"));
  const json prefix = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", false}};
  EXPECT_THAT(pre_tokenize(prefix, {{"é", true}}), ElementsAre("ĠÃ©"));
}

TEST(Normalizer, forms_prepend_replace_strip_sequence) {
  auto run = [](const json& j, std::string s) {
    make_normalizer(j)->normalize(s);
    return s;
  };
  EXPECT_EQ(run({{"type", "NFC"}}, "e\u0301"), "\u00e9");
  EXPECT_EQ(run({{"type", "NFD"}}, "\u00e9"), "e\u0301");
  EXPECT_EQ(run({{"type", "NFKC"}}, "\ufb01"), "fi");
  EXPECT_EQ(run({{"type", "Prepend"}, {"prepend", "▁"}}, "hi"), "▁hi");
  EXPECT_EQ(run({{"type", "Prepend"}, {"prepend", "▁"}}, ""), "");
  EXPECT_EQ(run({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}, "a b  c"), "a▁b▁▁c");
  EXPECT_EQ(run({{"type", "Replace"}, {"pattern", {{"Regex", "\\d+"}}}, {"content", "#"}}, "a12b3"), "a#b#");
  EXPECT_EQ(run({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, " \u3000x "), "x ");
  const json seq = {{"type", "Sequence"},
                    {"normalizers",
                     json::array({{{"type", "Prepend"}, {"prepend", "▁"}},
                                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}})}};
  EXPECT_EQ(run(seq, "Hello world"), "▁Hello▁world");
}

std::vector<std::string> decode_chain(const json& j, std::vector<std::string> tokens) {
  make_decoder(j)->decode_chain(tokens);
  return tokens;
}

TEST(Decoder, byte_fallback_decodes_runs_or_one_replacement_per_byte) {
  const json bf = {{"type", "ByteFallback"}};
  EXPECT_THAT(decode_chain(bf, {"Hey", "friend!"}), ElementsAre("Hey", "friend!"));
  EXPECT_THAT(decode_chain(bf, {"<0x61>"}), ElementsAre("a"));
  EXPECT_THAT(decode_chain(bf, {"<0xE5>"}), ElementsAre("\ufffd"));
  EXPECT_THAT(decode_chain(bf, {"<0xE5>", "<0x8f>"}), ElementsAre("\ufffd", "\ufffd"));
  EXPECT_THAT(decode_chain(bf, {"<0xE5>", "<0x8f>", "<0xab>"}), ElementsAre("叫"));
  EXPECT_THAT(decode_chain(bf, {"<0xE5>", "<0x8f>", "<0xab>", "a"}), ElementsAre("叫", "a"));
  EXPECT_THAT(decode_chain(bf, {"<0xE5>", "<0x8f>", "a"}), ElementsAre("\ufffd", "\ufffd", "a"));
  EXPECT_THAT(decode_chain(bf, {"<0xZZ>", "<0x4>"}), ElementsAre("<0xZZ>", "<0x4>"));
}

TEST(Decoder, strip_metaspace_replace_fuse_bytelevel) {
  EXPECT_THAT(decode_chain({{"type", "Strip"}, {"content", "H"}, {"start", 1}, {"stop", 0}},
                           {"Hey", " friend!", "HHH"}),
              ElementsAre("ey", " friend!", "HH"));
  EXPECT_THAT(
      decode_chain({{"type", "Strip"}, {"content", "y"}, {"start", 0}, {"stop", 1}}, {"Hey", " friend!"}),
      ElementsAre("He", " friend!"));
  const json ms = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  EXPECT_THAT(decode_chain(ms, {"▁Hey", "▁friend!"}), ElementsAre("Hey", " friend!"));
  const json ms_never = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "never"}};
  EXPECT_THAT(decode_chain(ms_never, {"▁Hey", "▁friend!"}), ElementsAre(" Hey", " friend!"));
  EXPECT_THAT(decode_chain({{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}}, {"▁a▁b"}),
              ElementsAre(" a b"));
  EXPECT_THAT(decode_chain({{"type", "Fuse"}}, {"a", "b", "c"}), ElementsAre("abc"));
  // Byte-level: Ġ is a space; a token outside the byte alphabet passes through; bad UTF-8 becomes U+FFFD.
  EXPECT_THAT(decode_chain({{"type", "ByteLevel"}}, {"Hello", "Ġworld", "<|x y|>", "Ã"}),
              ElementsAre("Hello world<|x y|>\ufffd"));
}

// A tokenizer.json with a BPE model over `vocab` / `merges` and the given extra fields.
json bpe_tokenizer(const json& vocab, const json& merges, const json& model_extra = json::object(),
                   const json& top_extra = json::object()) {
  json model = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  if (model_extra.is_object()) model.update(model_extra);
  json t = {{"model", model}};
  if (top_extra.is_object()) t.update(top_extra);
  return t;
}

std::vector<int32_t> encode(const json& tj, const std::string& text) {
  return Tokenizer::from_json(tj, json::object()).encode(text, false);
}

TEST(BpeModel, merges_apply_by_rank) {
  const json vocab = {{"u", 0},     {"n", 1},    {"r", 2},        {"e", 3},         {"l", 4},   {"a", 5},
                      {"t", 6},     {"d", 7},    {"re", 8},       {"at", 9},        {"ed", 10}, {"un", 11},
                      {"ated", 12}, {"rel", 13}, {"related", 14}, {"unrelated", 15}};
  const json merges = {"r e", "a t", "e d", "u n", "at ed", "re l", "rel ated", "un related"};
  EXPECT_THAT(encode(bpe_tokenizer(vocab, merges), "unrelated"), ElementsAre(15));
  // The ["a", "b"] form (tokenizers >= 0.20) means the same.
  json pairs = json::array();
  for (const auto& m : merges) {
    const std::string s = m.get<std::string>();
    pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  EXPECT_THAT(encode(bpe_tokenizer(vocab, pairs), "unrelated"), ElementsAre(15));
  EXPECT_THAT(encode(bpe_tokenizer(vocab, merges), "related"), ElementsAre(14));
  EXPECT_THAT(encode(bpe_tokenizer(vocab, merges), "tear"), ElementsAre(6, 3, 5, 2));
}

TEST(BpeModel, unk_is_fused_only_with_fuse_unk) {
  const json vocab = {{"<unk>", 0}, {"a", 1}, {"b", 2}};
  const json plain = bpe_tokenizer(vocab, json::array(), {{"unk_token", "<unk>"}});
  EXPECT_THAT(encode(plain, "c"), ElementsAre(0));
  EXPECT_THAT(encode(plain, "accb"), ElementsAre(1, 0, 0, 2));
  const json fused = bpe_tokenizer(vocab, json::array(), {{"unk_token", "<unk>"}, {"fuse_unk", true}});
  EXPECT_THAT(encode(fused, "cc"), ElementsAre(0));
  EXPECT_THAT(encode(fused, "accb"), ElementsAre(1, 0, 2));
  // Without an unk token unknown characters are dropped.
  EXPECT_THAT(encode(bpe_tokenizer(vocab, json::array()), "acb"), ElementsAre(1, 2));
}

TEST(BpeModel, byte_fallback_uses_byte_tokens_when_all_exist) {
  json vocab = {{"<unk>", 0}, {"a", 1}};
  for (int b : {0xC3, 0xA9}) vocab[fmt::format("<0x{:02X}>", b)] = static_cast<int>(vocab.size());
  const json tj = bpe_tokenizer(vocab, json::array(), {{"unk_token", "<unk>"}, {"byte_fallback", true}});
  EXPECT_THAT(encode(tj, "aé"), ElementsAre(1, 2, 3));  // é = C3 A9
  EXPECT_THAT(encode(tj, "aü"), ElementsAre(1, 0));     // ü = C3 BC: <0xBC> missing → unk
}

TEST(BpeModel, ignore_merges_emits_vocab_words_whole) {
  const json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"he", 4}, {"ll", 5}, {"hello", 6}};
  const json merges = {"h e", "l l"};
  EXPECT_THAT(encode(bpe_tokenizer(vocab, merges), "hello"), ElementsAre(4, 5, 3));
  EXPECT_THAT(encode(bpe_tokenizer(vocab, merges, {{"ignore_merges", true}}), "hello"), ElementsAre(6));
}

TEST(BpeModel, sentencepiece_words_are_cut_at_metaspace_only_when_no_merge_can_cross) {
  // "a▁" is a token, so a merge may span the start of a "▁" run: the word must stay whole.
  EXPECT_THAT(encode(bpe_tokenizer({{"▁", 0}, {"a", 1}, {"b", 2}, {"a▁", 3}}, {"a ▁"}), "a▁b"), ElementsAre(3, 2));
  // Here "▁" only ever leads a token: cutting before each "▁" run gives what the whole word gives.
  const json tj = bpe_tokenizer({{"▁", 0}, {"a", 1}, {"▁a", 2}, {"▁▁", 3}}, {"▁ a", "▁ ▁"});
  EXPECT_THAT(encode(tj, "a▁a▁▁a▁▁▁"), ElementsAre(1, 2, 0, 2, 3, 0));
}

TEST(BpeModel, continuing_subword_prefix) {
  const json vocab = {{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}, {"abc", 4}};
  const json tj = bpe_tokenizer(vocab, {"a ##b", "ab ##c"}, {{"continuing_subword_prefix", "##"}});
  EXPECT_THAT(encode(tj, "ab"), ElementsAre(3));
  EXPECT_THAT(encode(tj, "abc"), ElementsAre(4));
}

std::string load_error(const json& tj) {
  try {
    Tokenizer::from_json(tj, json::object());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(BpeModel, malformed_merges_are_refused) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}};
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, {"a b c"})), HasSubstr("merge #0"));
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, {"a x"})), HasSubstr("not in the vocab"));
  EXPECT_THAT(load_error(bpe_tokenizer({{"a", 0}, {"b", 1}}, {"a b"})), HasSubstr("makes 'ab'"));
  EXPECT_THAT(load_error(bpe_tokenizer({{"a", 0}, {"b", 0}}, json::array())), HasSubstr("share id 0"));
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {{"dropout", 0.1}})), HasSubstr("dropout"));
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {{"unk_token", "<unk>"}})),
              HasSubstr("unk_token"));
}

TEST(Tokenizer, unsupported_components_are_named) {
  const json vocab = {{"a", 0}};
  EXPECT_THAT(load_error({{"model", {{"type", "WordPiece"}, {"vocab", vocab}}}}),
              HasSubstr("model type 'WordPiece'"));
  EXPECT_THAT(load_error({{"model", {{"type", "Unigram"}, {"vocab", json::array()}}}}),
              HasSubstr("model type 'Unigram'"));
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {}, {{"normalizer", {{"type", "Lowercase"}}}})),
              HasSubstr("normalizer type 'Lowercase'"));
  EXPECT_THAT(
      load_error(bpe_tokenizer(vocab, json::array(), {}, {{"pre_tokenizer", {{"type", "Whitespace"}}}})),
      HasSubstr("pre-tokenizer type 'Whitespace'"));
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {}, {{"decoder", {{"type", "WordPiece"}}}})),
              HasSubstr("decoder type 'WordPiece'"));
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {}, {{"post_processor", {{"type", "Fancy"}}}})),
              HasSubstr("post-processor type 'Fancy'"));
  const json bad_split = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {}, {{"pre_tokenizer", bad_split}})),
              HasSubstr("does not compile"));
  const json bad_behavior = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
  EXPECT_THAT(load_error(bpe_tokenizer(vocab, json::array(), {}, {{"pre_tokenizer", bad_behavior}})),
              HasSubstr("split behavior 'Sideways'"));
  EXPECT_THAT(load_error({{"normalizer", nullptr}}), HasSubstr("missing field 'model'"));
}

// Pieces of `text` as (text, id) pairs, from AddedVocabulary::split.
std::vector<std::pair<std::string, int32_t>> added_split(const AddedVocabulary& v, const std::string& text,
                                                         bool normalized_set = false) {
  std::vector<std::pair<std::string, int32_t>> out;
  for (const TextPiece& p : v.split(text, normalized_set))
    out.emplace_back(text.substr(p.start, p.end - p.start), p.id);
  return out;
}

using Piece = std::pair<std::string, int32_t>;

TEST(AddedVocabulary, longest_match_wins_and_strip_flags_swallow_whitespace) {
  AddedVocabulary v({{"my", 0, false, true, true},
                     {"name", 1},
                     {"[CLS]", 3, true},
                     {"[SEP]", 4, true},
                     {"[SEP]X", 5, true}},
                    nullptr);
  EXPECT_THAT(added_split(v, "[CLS] my name is anthony [SEP]"),
              ElementsAre(Piece{"[CLS]", 3}, Piece{" my ", 0}, Piece{"name", 1}, Piece{" is anthony ", -1},
                          Piece{"[SEP]", 4}));
  EXPECT_THAT(added_split(v, "a[SEP]Xb[SEP]"),
              ElementsAre(Piece{"a", -1}, Piece{"[SEP]X", 5}, Piece{"b", -1}, Piece{"[SEP]", 4}));
  EXPECT_THAT(added_split(v, ""), ElementsAre());
}

TEST(AddedVocabulary, single_word_refuses_matches_inside_words) {
  AddedToken mask{"<mask>", 0};
  mask.single_word = true;
  AddedVocabulary v({mask}, nullptr);
  EXPECT_THAT(added_split(v, "<mask> My name <mask> A<mask> <mask>ony <mask>"),
              ElementsAre(Piece{"<mask>", 0}, Piece{" My name ", -1}, Piece{"<mask>", 0},
                          Piece{" A<mask> <mask>ony ", -1}, Piece{"<mask>", 0}));
  // Punctuation is not a word character; a combining mark is.
  EXPECT_THAT(added_split(v, "<mask>, <mask>- \u25cc\u0330<mask>"),
              ElementsAre(Piece{"<mask>", 0}, Piece{", ", -1}, Piece{"<mask>", 0},
                          Piece{"- \u25cc\u0330<mask>", -1}));
  AddedToken all = mask;
  all.lstrip = all.rstrip = true;
  AddedVocabulary w({all}, nullptr);
  EXPECT_THAT(added_split(w, "Hi <mask> there\t<mask>\t<mask>\u2000"),
              ElementsAre(Piece{"Hi", -1}, Piece{" <mask> ", 0}, Piece{"there", -1}, Piece{"\t<mask>\t", 0},
                          Piece{"<mask>\u2000", 0}));
}

TEST(AddedVocabulary, normalized_tokens_match_the_normalized_text) {
  // "é" (precomposed) with normalized=true matches "e" + U+0301 once NFC has run; a normalized=false
  // token only ever matches the raw input.
  const json tj = bpe_tokenizer(
      {{"x", 0}, {"e", 1}}, json::array(), {},
      {{"normalizer", {{"type", "NFC"}}},
       {"added_tokens",
        json::array({{{"id", 5}, {"content", "\u00e9"}, {"normalized", true}, {"special", false}},
                     {{"id", 6}, {"content", "x\u0301"}, {"normalized", false}, {"special", true}}})}});
  const Tokenizer tok = Tokenizer::from_json(tj, json::object());
  EXPECT_THAT(tok.encode("xe\u0301x", false), ElementsAre(0, 5, 0));
  EXPECT_THAT(tok.encode("x\u0301e", false), ElementsAre(6, 1));
  EXPECT_EQ(tok.vocab_size(), 7);
  EXPECT_TRUE(tok.is_special(6));
  EXPECT_FALSE(tok.is_special(5));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 5, 6}, true), "x \u00e9");  // no decoder: joined with spaces
}

TEST(TokenizerJson, streamed_load_equals_dom_load_and_reports_bad_shapes) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}, {"c", 3}};
  // A "vocab" key outside the model must stay in the DOM (the decoder ignores it).
  const json tj =
      bpe_tokenizer(vocab, {"a b"}, {}, {{"decoder", {{"type", "Fuse"}, {"vocab", {{"x", "y"}}}}}});
  const Tokenizer dom = Tokenizer::from_json(tj, json::object());
  const Tokenizer sax = Tokenizer::from_json_text(tj.dump());
  EXPECT_EQ(sax.encode("abcab", false), dom.encode("abcab", false));
  EXPECT_THAT(sax.encode("abcab", false), ElementsAre(2, 3, 2));
  EXPECT_EQ(sax.decode(std::vector<int32_t>{2, 3}), "abc");
  const json pairs = bpe_tokenizer(vocab, json::array({json::array({"a", "b"})}));
  EXPECT_THAT(Tokenizer::from_json_text(pairs.dump()).encode("ab", false), ElementsAre(2));
  auto text_error = [](const std::string& text) {
    try {
      Tokenizer::from_json_text(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(text_error(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})"),
              HasSubstr("integer ids"));
  EXPECT_THAT(text_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [1]}})"),
              HasSubstr("merges entry #0"));
  EXPECT_THAT(text_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}})"),
              HasSubstr("merges entry #0"));
  EXPECT_THAT(text_error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "a": 1}, "merges": []}})"),
              HasSubstr("appears twice"));
  EXPECT_THAT(text_error(R"({"model": {"type": "BPE", "vocab": {"a": 0})"), HasSubstr("invalid JSON"));
}

TEST(PostProcessor, template_adds_bos_eos_only_with_special_tokens) {
  const json tp = {{"type", "TemplateProcessing"},
                   {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                           {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
                   {"special_tokens",
                    {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
                     {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}};
  const json tj =
      bpe_tokenizer({{"a", 0}, {"<s>", 1}, {"</s>", 2}}, json::array(), {}, {{"post_processor", tp}});
  const Tokenizer tok = Tokenizer::from_json(tj, json::object());
  EXPECT_THAT(tok.encode("aa", true), ElementsAre(1, 0, 0, 2));
  EXPECT_THAT(tok.encode("aa", false), ElementsAre(0, 0));
  EXPECT_THAT(tok.encode("", true), ElementsAre(1, 2));
}

TEST(CleanUp, transformers_rules) {
  EXPECT_EQ(clean_up_tokenization("Hello , world . Is it ? Yes ! I 'm sure it 's ok , they 're , we 've , "
                                  "do n't"),
            "Hello, world. Is it? Yes! I'm sure it's ok, they're, we've, don't");
  EXPECT_EQ(clean_up_tokenization("a ' b"), "a'b");
}

}  // namespace
}  // namespace lp::text
