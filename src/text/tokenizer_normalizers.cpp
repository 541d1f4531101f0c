#include "text/tokenizer_normalizers.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "core/check.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

namespace {

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Unicode normalization forms through utf8proc. ASCII text is invariant under all four forms.
class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  void normalize(std::string& text) const override {
    if (text.empty() || is_ascii(text)) return;
    utf8proc_uint8_t* out = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                static_cast<utf8proc_ssize_t>(text.size()), &out,
                                static_cast<utf8proc_option_t>(options_));
    if (n < 0) fail("unicode normalization failed: {}", utf8proc_errmsg(n));
    text.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
  }

 private:
  int options_;
};

// Prepends a fixed string to every non-empty piece (SentencePiece's "▁" in Llama 2 style tokenizers).
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override { text = pattern_.replace_all(text, content_); }

 private:
  Regex pattern_;
  std::string content_;
};

// Strips Unicode whitespace from the left and/or right end.
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t p = begin;
        if (!is_unicode_whitespace(utf8_next(text, p))) break;
        begin = p;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t s = end - 1;
        while (s > begin && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        size_t p = s;
        if (!is_unicode_whitespace(utf8_next(text, p))) break;
        end = s;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& n : parts_) n->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type_of(j);
  const std::string what = fmt::format("normalizer '{}'", type);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(json_string(j, "prepend", what));
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(json_pattern(j, "pattern", what),
                                               json_string(j, "content", what));
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(json_bool_or(j, "strip_left", true, what),
                                             json_bool_or(j, "strip_right", true, what));
  if (type == "Sequence") {
    const Json& list = json_field(j, "normalizers", what);
    if (!list.is_array()) fail("{}: 'normalizers' must be an array", what);
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const Json& item : list) {
      auto n = make_normalizer(item);
      if (n) parts.push_back(std::move(n));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  fail(
      "unsupported normalizer type '{}' (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, Sequence)",
      type);
}

}  // namespace lp::text
