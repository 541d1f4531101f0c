// A synthetic but valid byte-level BPE tokenizer for demo models and tests: tokenizer.json in the Llama 3
// style (its pre-tokenization regex, ByteLevel decoder, BOS added by a TemplateProcessing post-processor)
// plus tokenizer_config.json with a ChatML chat template. The vocab is exactly `vocab_size` ids:
// 256 byte tokens, then merges (the first ones learned by BPE training on a small built-in English + code
// text, the rest deterministic filler from `seed`), then the caller's added tokens (if any), then 7 special
// tokens at the end.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace lp::text {

// The special tokens, in id order at the end of the vocab.
inline constexpr std::string_view kDemoSpecialTokens[] = {
    "<|begin_of_text|>", "<|end_of_text|>",     "<|im_start|>",      "<|im_end|>",
    "<|eot_id|>",        "<|start_header_id|>", "<|end_header_id|>",
};

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json (DIR is created). vocab_size must be at least
// 264 + added_tokens.size() (the byte alphabet, one merge, the added and the special tokens). Throws
// lp::Error otherwise or on I/O errors. Takes ~0.3 s for a 128k vocab.
// `added_tokens` (the story demo's words and phrases, model/demo_story.h) become non-special added tokens
// with ids in the given order: matched in raw text before pre-tokenization (leftmost-longest), and decoded
// as written when they hold a character outside the byte-level alphabet (a space), else byte by byte. They
// must be distinct, not a single byte's text nor a special token; no merge produces their text.
void write_demo_tokenizer(const std::filesystem::path& dir, int vocab_size, uint64_t seed,
                          std::span<const std::string> added_tokens = {});

}  // namespace lp::text
