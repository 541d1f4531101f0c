// lp::text::Tokenizer: a Hugging Face tokenizer.json (+ tokenizer_config.json) loaded into memory, with
// encode / decode that give the same ids and text as the Rust `tokenizers` library (what transformers'
// fast tokenizers and vLLM run). Model type BPE, both families: byte-level (GPT-2, Llama 3, Qwen 2/3,
// SmolLM) and SentencePiece-style with byte fallback (Llama 2, Mistral, TinyLlama). Any component the
// file names that is not implemented is refused at load time with lp::Error naming it.
//
// A Tokenizer is immutable after loading; copies share it and any thread may call it concurrently.
// Cost: loading a 128k-vocab / 280k-merge file takes ~0.2 s (JSON parse dominates); encode is linear in
// the text (regex split + BPE with a per-word cache).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lp::text {

struct TokenizerJsonParts;  // tokenizer_json_sax.h

// Bytes [begin, end) of a text.
struct ByteRange {
  size_t begin = 0;
  size_t end = 0;
};

struct DecodeOptions {
  // Drop added tokens marked special (<s>, <|eot_id|>...). Non-special added tokens (<think>) stay.
  bool skip_special_tokens = false;
  // transformers' clean_up_tokenization (" ." → ".", " n't" → "n't", ...). Off by default, as in the
  // tokenizers library; see Tokenizer::config_clean_up_tokenization_spaces() for the model's setting.
  bool clean_up_tokenization_spaces = false;
};

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static Tokenizer from_dir(const std::filesystem::path& dir);
  // From parsed JSON; `config` is the tokenizer_config.json object (null or {} when there is none).
  static Tokenizer from_json(const nlohmann::json& tokenizer_json, const nlohmann::json& config);
  // From JSON text; `label` names the source in error messages.
  static Tokenizer from_json_text(std::string_view tokenizer_json, std::string_view config_json = "",
                                  std::string_view label = "tokenizer.json");

  // Ids of `text`. Invalid UTF-8 is first replaced by U+FFFD per maximal invalid subpart (HF's Rust API
  // only accepts valid UTF-8; this is what from_utf8_lossy would hand it). add_special_tokens applies the
  // post-processor (e.g. a leading BOS); special-token text inside `text` is always matched.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // The same, except that no added token is matched overlapping a `plain` range (sorted, disjoint): that
  // text is encoded as if the tokenizer had no added tokens, while the rest matches them as usual. This is
  // how text that came from a chat message is kept from being read as special tokens (text/chat_prompt.h).
  // `text` must be valid UTF-8 when `plain` is not empty (lp::Error otherwise: the ranges would not survive
  // the U+FFFD replacement).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens,
                              std::span<const ByteRange> plain) const;
  // Where the content of a special added token occurs in `text` (leftmost-longest, as raw bytes).
  std::vector<ByteRange> find_special_tokens(std::string_view text) const;

  // Text of `ids`; ids the vocabulary does not have are skipped (as HF does).
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& options) const;

  std::optional<std::string> id_to_token(int32_t id) const;
  // The raw bytes token `id` stands for inside a text (byte-level BPE undone, SentencePiece's U+2581 as a
  // space, <0xNN> as that byte; may be part of a UTF-8 character). "" for special tokens and unknown ids.
  std::string token_bytes(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // One past the largest id (model vocab and added tokens): the embedding rows the ids need.
  int32_t vocab_size() const;
  // True for added tokens marked special (and vocab entries with the same text).
  bool is_special(int32_t id) const;

  // From tokenizer_config.json (bos_token / eos_token may be strings or AddedToken objects).
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<bool> add_bos_token() const;
  bool config_clean_up_tokenization_spaces() const;
  // The chat template string ("default" entry when the config holds a named list), if any.
  std::optional<std::string> chat_template() const;
  // The parsed tokenizer_config.json (an empty object when there was none).
  const nlohmann::json& config() const;

  struct Impl;

 private:
  // Shared by the constructors; `parts` (may be null) carries the vocab / merges a SAX load streamed out.
  static Tokenizer build(const nlohmann::json& tokenizer_json, const nlohmann::json& config,
                         TokenizerJsonParts* parts);
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// transformers' clean_up_tokenization on `text`.
std::string clean_up_tokenization(std::string text);

}  // namespace lp::text
