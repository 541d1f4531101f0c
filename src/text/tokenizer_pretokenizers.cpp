#include "text/tokenizer_pretokenizers.h"

#include <algorithm>

#include "core/check.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

std::vector<std::pair<size_t, size_t>> split_by_behavior(std::vector<Span> spans, SplitBehavior behavior,
                                                         bool invert) {
  if (invert)
    for (Span& s : spans) s.is_match = !s.is_match;
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans)
        if (!s.is_match) out.emplace_back(s.start, s.end);
      break;
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) out.emplace_back(s.start, s.end);
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->start;
        } else {
          out.emplace_back(it->start, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
  }
  std::erase_if(out, [](const auto& r) { return r.first == r.second; });
  return out;
}

const Regex& gpt2_regex() {
  static const Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                        "ByteLevel pre-tokenizer");
  return re;
}

namespace {

// Cuts every piece at the spans of `re` with `behavior`; the first sub-piece keeps at_start.
void split_pieces(std::vector<PreToken>& pieces, const Regex& re, SplitBehavior behavior, bool invert) {
  std::vector<PreToken> out;
  out.reserve(pieces.size() * 4);
  for (PreToken& p : pieces) {
    const auto ranges = split_by_behavior(re.spans(p.text), behavior, invert);
    for (const auto& [s, e] : ranges) out.push_back(PreToken{p.text.substr(s, e - s), p.at_start && s == 0});
  }
  pieces.swap(out);
}

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}

  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_)
      for (PreToken& p : pieces)
        if (!p.text.starts_with(' ')) p.text.insert(0, 1, ' ');
    if (use_regex_) split_pieces(pieces, gpt2_regex(), SplitBehavior::kIsolated, false);
    const auto& alphabet = byte_level_alphabet();
    std::string mapped;
    for (PreToken& p : pieces) {
      mapped.clear();
      for (unsigned char c : p.text) mapped.append(alphabet[c]);
      p.text.swap(mapped);
    }
    std::erase_if(pieces, [](const PreToken& p) { return p.text.empty(); });
  }

 private:
  bool add_prefix_space_, use_regex_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Regex re, SplitBehavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    split_pieces(pieces, re_, behavior_, invert_);
  }

 private:
  Regex re_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

// SentencePiece-style: spaces become the replacement character (U+2581 "▁"), which is prepended to the
// piece per the scheme, and (with split) every replacement character starts a new word.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : scheme_(scheme), split_(split), splitter_(Regex::literal(rep_utf8(replacement), "Metaspace")) {
    utf8_append(rep_, replacement);
  }

  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    for (PreToken& p : pieces) {
      std::string out;
      out.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') {
          out.append(rep_);
        } else {
          out.push_back(c);
        }
      }
      const bool prepend =
          scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start);
      if (prepend && !out.starts_with(rep_)) out.insert(0, rep_);
      p.text.swap(out);
    }
    if (split_) split_pieces(pieces, splitter_, SplitBehavior::kMergedWithNext, false);
    std::erase_if(pieces, [](const PreToken& p) { return p.text.empty(); });
  }

 private:
  static std::string rep_utf8(char32_t c) {
    std::string s;
    utf8_append(s, c);
    return s;
  }
  std::string rep_;
  PrependScheme scheme_;
  bool split_;
  Regex splitter_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

SplitBehavior parse_behavior(const std::string& s, std::string_view what) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  fail("{}: unsupported split behavior '{}'", what, s);
}

PrependScheme parse_prepend_scheme(const Json& j, std::string_view what) {
  PrependScheme scheme = PrependScheme::kAlways;
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    const std::string s = json_string(j, "prepend_scheme", what);
    if (s == "always") {
      scheme = PrependScheme::kAlways;
    } else if (s == "first") {
      scheme = PrependScheme::kFirst;
    } else if (s == "never") {
      scheme = PrependScheme::kNever;
    } else {
      fail("{}: unsupported prepend_scheme '{}'", what, s);
    }
  }
  // Older files only carry add_prefix_space; false means "never".
  if (!json_bool_or(j, "add_prefix_space", true, what)) scheme = PrependScheme::kNever;
  return scheme;
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type_of(j);
  const std::string what = fmt::format("pre-tokenizer '{}'", type);
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(json_bool_or(j, "add_prefix_space", true, what),
                                                   json_bool_or(j, "use_regex", true, what));
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(json_pattern(j, "pattern", what),
                                               parse_behavior(json_string(j, "behavior", what), what),
                                               json_bool_or(j, "invert", false, what));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(json_char(j, "replacement", what),
                                                   parse_prepend_scheme(j, what),
                                                   json_bool_or(j, "split", true, what));
  if (type == "Sequence") {
    const Json& list = json_field(j, "pretokenizers", what);
    if (!list.is_array()) fail("{}: 'pretokenizers' must be an array", what);
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const Json& item : list) {
      auto p = make_pre_tokenizer(item);
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  fail("unsupported pre-tokenizer type '{}' (supported: ByteLevel, Split, Metaspace, Sequence)", type);
}

}  // namespace lp::text
