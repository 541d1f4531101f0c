#include "text/chat_prompt.h"

#include <algorithm>
#include <string_view>

#include "core/check.h"

#include "text/tokenizer_utf8.h"

namespace lp::text {

namespace {

using ojson = nlohmann::ordered_json;

// UTF-8 of U+FDD0 (sentinel start), U+FDD1 (end) and U+FDE0 + d (hex digit d): EF B7 xx.
constexpr unsigned char kNonchar0 = 0xEF, kNonchar1 = 0xB7;
constexpr unsigned char kOpen = 0x90, kClose = 0x91, kDigit0 = 0xA0;

// A character of U+FDD0..U+FDEF at s[pos] (the noncharacters the sentinels are made of).
bool sentinel_char_at(std::string_view s, size_t pos) {
  return pos + 2 < s.size() && static_cast<unsigned char>(s[pos]) == kNonchar0 &&
         static_cast<unsigned char>(s[pos + 1]) == kNonchar1 &&
         static_cast<unsigned char>(s[pos + 2]) >= 0x90 && static_cast<unsigned char>(s[pos + 2]) <= 0xAF;
}

void append_char(std::string& out, unsigned char last) {
  out.push_back(static_cast<char>(kNonchar0));
  out.push_back(static_cast<char>(kNonchar1));
  out.push_back(static_cast<char>(last));
}

class Protector {
 public:
  explicit Protector(const Tokenizer& tok) : tok_(tok) {}

  // Replaces, in every string and key of `v`, special-token text and sentinel characters by sentinels.
  void protect(ojson& v) {
    if (v.is_string()) {
      protect_string(v.get_ref<std::string&>());
    } else if (v.is_array()) {
      for (auto& x : v) protect(x);
    } else if (v.is_object()) {
      bool keys_change = false;
      std::vector<std::string> keys;
      for (auto it = v.begin(); it != v.end(); ++it) {
        protect(it.value());
        keys.push_back(it.key());
        keys_change |= protect_string(keys.back());
      }
      if (keys_change) {  // keys cannot be renamed in place; same order, same values
        ojson rebuilt = ojson::object();
        size_t i = 0;
        for (auto it = v.begin(); it != v.end(); ++it) rebuilt[keys[i++]] = std::move(it.value());
        v = std::move(rebuilt);
      }
    }
  }

  // Puts the original text back in the rendered prompt and records where it went.
  ChatPrompt restore(std::string rendered) const {
    ChatPrompt out;
    if (!utf8_is_valid(rendered)) rendered = utf8_lossy(rendered);  // before the ranges are measured
    if (originals_.empty()) {
      out.text = std::move(rendered);
      return out;
    }
    std::string& t = out.text;
    t.reserve(rendered.size());
    std::string_view r = rendered;
    for (size_t pos = 0; pos < r.size();) {
      size_t len = 0, index = 0;
      if (parse_raw(r, pos, &len, &index)) {
        out.plain.push_back(ByteRange{t.size(), t.size() + originals_[index].size()});
        t += originals_[index];
        pos += len;
      } else if (parse_escaped(r, pos, &len, &index)) {
        // tojson(ensure_ascii=true) wrote the sentinel as \u escapes: write the original the same way.
        const std::string quoted = ojson(originals_[index]).dump(-1, ' ', /*ensure_ascii=*/true);
        out.plain.push_back(ByteRange{t.size(), t.size() + quoted.size() - 2});
        t.append(quoted, 1, quoted.size() - 2);
        pos += len;
      } else {
        t.push_back(r[pos++]);
      }
    }
    return out;
  }

 private:
  // true when something was replaced.
  bool protect_string(std::string& s) {
    bool any_sentinel_char = false;
    for (size_t i = 0; i + 2 < s.size() && !any_sentinel_char; ++i)
      any_sentinel_char = sentinel_char_at(s, i);
    std::vector<ByteRange> special = tok_.find_special_tokens(s);
    if (special.empty() && !any_sentinel_char) return false;
    std::string out;
    out.reserve(s.size() + 16);
    size_t next = 0;
    for (size_t pos = 0; pos < s.size();) {
      size_t end = pos;
      if (next < special.size() && special[next].begin == pos) {
        end = special[next++].end;
      } else if (sentinel_char_at(s, pos)) {
        end = pos + 3;
      }
      if (end == pos) {
        out.push_back(s[pos++]);
        continue;
      }
      append_sentinel(out, originals_.size());
      originals_.emplace_back(s, pos, end - pos);
      pos = end;
    }
    s = std::move(out);
    return true;
  }

  static void append_sentinel(std::string& out, size_t index) {
    append_char(out, kOpen);
    char digits[32];
    int n = 0;
    do {
      digits[n++] = static_cast<char>(index % 16);
      index /= 16;
    } while (index > 0);
    while (n > 0) append_char(out, kDigit0 + static_cast<unsigned char>(digits[--n]));
    append_char(out, kClose);
  }

  // A raw sentinel at r[pos]: its byte length and index (known to originals_).
  bool parse_raw(std::string_view r, size_t pos, size_t* len, size_t* index) const {
    auto char_at = [&](size_t p) -> int {  // last byte of a U+FDxx character at p, or -1
      if (p + 3 > r.size()) return -1;
      if (static_cast<unsigned char>(r[p]) != kNonchar0 || static_cast<unsigned char>(r[p + 1]) != kNonchar1)
        return -1;
      return static_cast<unsigned char>(r[p + 2]);
    };
    if (char_at(pos) != kOpen) return false;
    size_t p = pos + 3, value = 0;
    int digits = 0;
    for (int c; (c = char_at(p)) >= kDigit0 && c <= kDigit0 + 15 && digits < 15; p += 3, ++digits)
      value = value * 16 + static_cast<size_t>(c - kDigit0);
    if (digits == 0 || char_at(p) != kClose || value >= originals_.size()) return false;
    *len = p + 3 - pos;
    *index = value;
    return true;
  }

  // The same sentinel written as JSON \u escapes (either case).
  bool parse_escaped(std::string_view r, size_t pos, size_t* len, size_t* index) const {
    auto esc_at = [&](size_t p) -> int {  // the low byte of a \ufdXX escape at p, or -1
      if (p + 6 > r.size() || r[p] != '\\' || r[p + 1] != 'u') return -1;
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      if (hex(r[p + 2]) != 15 || hex(r[p + 3]) != 13) return -1;
      const int hi = hex(r[p + 4]), lo = hex(r[p + 5]);
      return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
    };
    if (esc_at(pos) != 0xD0) return false;
    size_t p = pos + 6, value = 0;
    int digits = 0;
    for (int c; (c = esc_at(p)) >= 0xE0 && c <= 0xEF && digits < 15; p += 6, ++digits)
      value = value * 16 + static_cast<size_t>(c - 0xE0);
    if (digits == 0 || esc_at(p) != 0xD1 || value >= originals_.size()) return false;
    *len = p + 6 - pos;
    *index = value;
    return true;
  }

  const Tokenizer& tok_;
  std::vector<std::string> originals_;  // sentinel index -> the client text it stands for
};

}  // namespace

namespace {

// The last message's content as transformers reads it for continue_final_message.
std::string final_content(const ojson& messages) {
  if (!messages.is_array() || messages.empty()) fail("continue_final_message needs at least one message");
  const ojson& last = messages.back();
  auto c = last.is_object() ? last.find("content") : last.end();
  if (c == last.end() || !c->is_string()) fail("continue_final_message needs the last message to have text content");
  return c->get<std::string>();
}

}  // namespace

size_t continue_final_message_end(const std::string& rendered, const std::string& final_content) {
  if (!final_content.empty()) {
    if (size_t at = rendered.rfind(final_content); at != std::string::npos) return at + final_content.size();
  }
  const size_t b = final_content.find_first_not_of(" \t\n\r\f\v");
  if (b != std::string::npos) {
    const size_t e = final_content.find_last_not_of(" \t\n\r\f\v");
    const std::string stripped = final_content.substr(b, e - b + 1);
    if (size_t at = rendered.rfind(stripped); at != std::string::npos) return at + stripped.size();
  }
  fail("continue_final_message is set but the final message does not appear in the chat after applying the chat "
       "template");
}

ChatPrompt render_chat_prompt(const ChatTemplate& tmpl, const Tokenizer& tok, const ojson& messages,
                              bool add_generation_prompt, const ojson& tools, const ojson& extra_vars,
                              bool continue_final_message) {
  Protector prot(tok);
  ojson m = messages, t = tools, x = extra_vars;
  prot.protect(m);
  prot.protect(t);
  prot.protect(x);
  ChatPrompt p = prot.restore(tmpl.render(m, add_generation_prompt, t, x));
  if (continue_final_message) {
    const size_t end = continue_final_message_end(p.text, final_content(messages));
    p.text.resize(end);
    // Plain ranges past the cut go; one straddling it is clipped (the kept bytes stay plain text).
    std::vector<ByteRange> kept;
    for (ByteRange r : p.plain) {
      if (r.begin >= end) continue;
      r.end = std::min(r.end, end);
      kept.push_back(r);
    }
    p.plain = std::move(kept);
  }
  return p;
}

std::vector<int32_t> encode_chat_prompt(const ChatTemplate& tmpl, const Tokenizer& tok, const ojson& messages,
                                        bool add_generation_prompt, const ojson& tools,
                                        const ojson& extra_vars, bool add_special_tokens,
                                        bool allow_special_tokens_in_content, bool continue_final_message) {
  if (allow_special_tokens_in_content) {
    std::string text = tmpl.render(messages, add_generation_prompt, tools, extra_vars);
    if (continue_final_message) text.resize(continue_final_message_end(text, final_content(messages)));
    return tok.encode(text, add_special_tokens);
  }
  const ChatPrompt p =
      render_chat_prompt(tmpl, tok, messages, add_generation_prompt, tools, extra_vars, continue_final_message);
  return tok.encode(p.text, add_special_tokens, p.plain);
}

}  // namespace lp::text
