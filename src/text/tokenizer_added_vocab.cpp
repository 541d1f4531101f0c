#include "text/tokenizer_added_vocab.h"

#include <algorithm>

#include "text/tokenizer_normalizers.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

namespace {

// The character ending just before byte `end` (which must be > 0), decoded.
char32_t char_before(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return utf8_next(s, start);
}

// Start of the run of whitespace that ends at `end` (Rust: \s*$ on s[..end]).
size_t whitespace_run_start(std::string_view s, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t p = start;
    if (!is_unicode_whitespace(utf8_next(s, p))) break;
    end = start;
  }
  return end;
}

// End of the run of whitespace that starts at `pos` (Rust: ^\s* on s[pos..]).
size_t whitespace_run_end(std::string_view s, size_t pos) {
  while (pos < s.size()) {
    size_t p = pos;
    if (!is_unicode_whitespace(utf8_next(s, p))) break;
    pos = p;
  }
  return pos;
}

}  // namespace

void AddedVocabulary::Trie::add(std::string_view content, int32_t token) {
  if (content.empty()) return;
  if (nodes.empty()) nodes.emplace_back();
  first_byte[static_cast<uint8_t>(content[0])] = true;
  int32_t node = 0;
  for (char ch : content) {
    const auto c = static_cast<uint8_t>(ch);
    auto& kids = nodes[node].children;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(c, int32_t{-1}));
    if (it != kids.end() && it->first == c) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes.size());
      kids.insert(it, {c, child});
      nodes.emplace_back();  // invalidates `kids`; not used again
      node = child;
    }
  }
  // The first token with a given content wins (HF keeps one id per content).
  if (nodes[node].token < 0) nodes[node].token = token;
}

std::pair<size_t, int32_t> AddedVocabulary::Trie::longest_at(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<uint8_t>(text[i]);
    const auto& kids = nodes[node].children;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(c, int32_t{-1}));
    if (it == kids.end() || it->first != c) break;
    node = it->second;
    if (nodes[node].token >= 0) best = {i + 1 - pos, nodes[node].token};
  }
  return best;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer)
    : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.special) special_.add(t.content, static_cast<int32_t>(i));
    if (!t.normalized) {
      raw_.add(t.content, static_cast<int32_t>(i));
    } else {
      std::string content = t.content;
      if (normalizer) normalizer->normalize(content);
      normalized_.add(content, static_cast<int32_t>(i));
    }
  }
}

std::vector<ByteRange> AddedVocabulary::find_special(std::string_view text) const {
  std::vector<ByteRange> out;
  if (special_.nodes.empty()) return out;
  for (size_t pos = 0; pos < text.size();) {
    if (special_.first_byte[static_cast<uint8_t>(text[pos])]) {
      const size_t len = special_.longest_at(text, pos).first;
      if (len > 0) {
        out.push_back(ByteRange{pos, pos + len});
        pos += len;
        continue;
      }
    }
    ++pos;
  }
  return out;
}

std::vector<TextPiece> AddedVocabulary::split(std::string_view text, bool normalized_set,
                                              std::span<const ByteRange> plain) const {
  const Trie& trie = normalized_set ? normalized_ : raw_;
  std::vector<TextPiece> out;
  if (trie.nodes.empty()) {
    if (!text.empty()) out.push_back(TextPiece{0, text.size(), -1});
    return out;
  }
  size_t done = 0;  // end of the last emitted piece
  size_t pos = 0;
  size_t next_plain = 0;  // the first plain range that ends after `pos`
  while (pos < text.size()) {
    if (!trie.first_byte[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [len, index] = trie.longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    // A match overlapping plain text is no match: scanning goes on at the next byte, so no added token is
    // found inside plain text, not even one starting within the rejected match.
    while (next_plain < plain.size() && plain[next_plain].end <= pos) ++next_plain;
    if (next_plain < plain.size() && plain[next_plain].begin < pos + len) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[index];
    size_t start = pos, stop = pos + len;
    pos = stop;  // matches never overlap, even when one is discarded below
    if (tok.single_word) {
      const bool word_before = start > 0 && is_word_char(char_before(text, start));
      size_t p = stop;
      const bool word_after = stop < text.size() && is_word_char(utf8_next(text, p));
      if (word_before || word_after) continue;
    }
    if (tok.lstrip) start = std::max(whitespace_run_start(text, start), done);
    if (tok.rstrip) stop = whitespace_run_end(text, stop);
    if (start > done) out.push_back(TextPiece{done, start, -1});
    out.push_back(TextPiece{start, stop, tok.id});
    done = stop;
    pos = stop;
  }
  if (done < text.size()) out.push_back(TextPiece{done, text.size(), -1});
  return out;
}

}  // namespace lp::text
