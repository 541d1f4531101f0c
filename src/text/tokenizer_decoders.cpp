#include "text/tokenizer_decoders.h"

#include "core/check.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

namespace {

// Byte-level BPE: every character of a token maps back to one byte; a token with a character outside
// the byte alphabet (an added token such as "<|im_start|>" with a space...) is taken as raw UTF-8.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string mapped;
    for (const std::string& t : tokens) {
      mapped.clear();
      bool ok = true;
      size_t pos = 0;
      while (pos < t.size()) {
        if (utf8_valid_len(t, pos) == 0) {
          ok = false;
          break;
        }
        const int b = byte_level_char_to_byte(utf8_next(t, pos));
        if (b < 0) {
          ok = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes.append(ok ? mapped : t);
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
  void token_bytes(std::string& t) const override {
    std::string mapped;
    size_t pos = 0;
    while (pos < t.size()) {
      if (utf8_valid_len(t, pos) == 0) return;
      const int b = byte_level_char_to_byte(utf8_next(t, pos));
      if (b < 0) return;  // not in the byte alphabet: raw UTF-8, as decode_chain takes it
      mapped.push_back(static_cast<char>(b));
    }
    t.swap(mapped);
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = pattern_.replace_all(t, content_);
  }
  void token_bytes(std::string& t) const override { t = pattern_.replace_all(t, content_); }

 private:
  Regex pattern_;
  std::string content_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "<0xNN>" → the byte, else -1. Like Rust's u8::from_str_radix, the two characters may also be "+N".
int byte_token_value(const std::string& t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t.back() != '>') return -1;
  const int lo = hex_digit(t[4]);
  if (lo < 0) return -1;
  if (t[3] == '+') return lo;
  const int hi = hex_digit(t[3]);
  return hi < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (utf8_is_valid(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_tokens; ++i) out.emplace_back(kReplacementUtf8);
      }
      run.clear();
      run_tokens = 0;
    };
    for (std::string& t : tokens) {
      const int b = byte_token_value(t);
      if (b >= 0) {
        run.push_back(static_cast<char>(b));
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
  void token_bytes(std::string& t) const override {
    if (const int b = byte_token_value(t); b >= 0) t.assign(1, static_cast<char>(b));
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all.append(t);
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing occurrences of one character from every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<size_t> bounds;  // byte offset of each character, plus the end
    for (std::string& t : tokens) {
      bounds.clear();
      std::vector<char32_t> chars;
      size_t pos = 0;
      while (pos < t.size()) {
        bounds.push_back(pos);
        chars.push_back(utf8_next(t, pos));
      }
      bounds.push_back(t.size());
      size_t start_cut = 0;
      for (size_t i = 0; i < std::min(start_, chars.size()) && chars[i] == content_; ++i) start_cut = i + 1;
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < std::min(stop_, chars.size() - start_cut); ++i) {
        const size_t index = chars.size() - i - 1;
        if (chars[index] != content_) break;
        stop_cut = index;
      }
      t = t.substr(bounds[start_cut], bounds[stop_cut] - bounds[start_cut]);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

// SentencePiece-style: the replacement character becomes a space, except in the first token where it is
// dropped (unless prepend_scheme is "never").
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool strip_first)
      : replacement_(replacement), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      std::string out;
      out.reserve(t.size());
      size_t pos = 0;
      while (pos < t.size()) {
        const size_t start = pos;
        const char32_t c = utf8_next(t, pos);
        if (c == replacement_) {
          if (!(i == 0 && strip_first_)) out.push_back(' ');
        } else {
          out.append(t, start, pos - start);
        }
      }
      tokens[i] = std::move(out);
    }
  }
  void token_bytes(std::string& t) const override {
    std::string out;
    size_t pos = 0;
    while (pos < t.size()) {
      const size_t start = pos;
      if (utf8_valid_len(t, pos) == 0) return;
      if (utf8_next(t, pos) == replacement_) {
        out.push_back(' ');
      } else {
        out.append(t, start, pos - start);
      }
    }
    t.swap(out);
  }

 private:
  char32_t replacement_;
  bool strip_first_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : parts_) d->decode_chain(tokens);
  }
  void token_bytes(std::string& t) const override {
    for (const auto& d : parts_) d->token_bytes(t);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

size_t non_negative(const Json& j, std::string_view key, std::string_view what) {
  const int64_t v = json_int_or(j, key, 0, what);
  if (v < 0) fail("{}: '{}' must not be negative", what, key);
  return static_cast<size_t>(v);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type_of(j);
  const std::string what = fmt::format("decoder '{}'", type);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(json_pattern(j, "pattern", what),
                                            json_string(j, "content", what));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(json_char(j, "content", what), non_negative(j, "start", what),
                                          non_negative(j, "stop", what));
  if (type == "Metaspace") {
    // Same reading as the pre-tokenizer: prepend_scheme (default "always"); add_prefix_space false = never.
    bool strip_first = true;
    if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null())
      strip_first = json_string(j, "prepend_scheme", what) != "never";
    if (!json_bool_or(j, "add_prefix_space", true, what)) strip_first = false;
    return std::make_unique<MetaspaceDecoder>(json_char(j, "replacement", what), strip_first);
  }
  if (type == "Sequence") {
    const Json& list = json_field(j, "decoders", what);
    if (!list.is_array()) fail("{}: 'decoders' must be an array", what);
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const Json& item : list) {
      auto d = make_decoder(item);
      if (d) parts.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  fail(
      "unsupported decoder type '{}' (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, "
      "Sequence)",
      type);
}

}  // namespace lp::text
