// UTF-8 and character-class helpers shared by the tokenizer units: decoding one code point, replacing
// invalid bytes with U+FFFD the way Rust's String::from_utf8_lossy does (one U+FFFD per maximal invalid
// subpart), the GPT-2 byte <-> printable-character table of byte-level BPE, and the whitespace / word
// character tests that added-token matching and the Strip units use (Unicode White_Space, Rust's \w).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lp::text {

inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Length of the well-formed UTF-8 sequence starting at s[pos], or 0 when the bytes there are not one
// (bad lead byte, bad continuation, overlong form, surrogate, > U+10FFFF, or truncated).
size_t utf8_valid_len(std::string_view s, size_t pos);

// Decodes the code point at s[pos] (which must start a well-formed sequence) and advances pos.
char32_t utf8_next(std::string_view s, size_t& pos);

// Number of bytes of the longest prefix of s[pos..] that is a truncated-but-so-far-valid sequence
// ("maximal subpart" in Unicode terms; at least 1). Used for lossy conversion.
size_t utf8_invalid_len(std::string_view s, size_t pos);

void utf8_append(std::string& out, char32_t cp);
bool utf8_is_valid(std::string_view s);

// Copies `s`, replacing each maximal invalid subpart by U+FFFD (as from_utf8_lossy / WHATWG decoders do).
std::string utf8_lossy(std::string_view s);

// Byte-level BPE alphabet: every byte maps to one printable character (its UTF-8 form is returned here);
// the inverse maps a code point back to the byte, or -1 for characters outside the alphabet.
const std::array<std::string, 256>& byte_level_alphabet();
int byte_level_char_to_byte(char32_t cp);

// Unicode White_Space (Rust char::is_whitespace, Oniguruma \s).
bool is_unicode_whitespace(char32_t cp);
// Rust regex \w: alphabetic, marks, decimal digits, connector punctuation, join controls.
bool is_word_char(char32_t cp);

}  // namespace lp::text
