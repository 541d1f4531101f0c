#include "text/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "io/json_file.h"
#include "text/tokenizer_added_vocab.h"
#include "text/tokenizer_bpe.h"
#include "text/tokenizer_decoders.h"
#include "text/tokenizer_json_sax.h"
#include "text/tokenizer_normalizers.h"
#include "text/tokenizer_postprocessors.h"
#include "text/tokenizer_pretokenizers.h"
#include "text/tokenizer_utf8.h"

namespace lp::text {

namespace fs = std::filesystem;

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  AddedVocabulary added;
  std::vector<int32_t> added_index;  // id → index into added.tokens(), -1 for model-only ids
  std::vector<bool> special;         // id → is a special token (by id or by identical text)
  int32_t vocab_size = 0;
  Json config = Json::object();

  std::optional<std::string_view> token_of(int32_t id) const {
    if (id < 0 || id >= vocab_size) return std::nullopt;
    if (added_index[id] >= 0) return added.tokens()[added_index[id]].content;
    return model->id_to_token(id);
  }

  // Normalized text → pre-tokens → model ids, appended to *ids.
  void encode_piece(std::string_view text, bool at_start, std::vector<int32_t>* ids) const {
    std::vector<PreToken> pieces;
    pieces.push_back(PreToken{std::string(text), at_start});
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
    for (const PreToken& p : pieces) model->tokenize(p.text, ids);
  }

  std::optional<int32_t> config_token_id(const char* key) const;
};

namespace {

constexpr std::string_view kWhat = "tokenizer.json";

std::vector<AddedToken> parse_added_tokens(const Json& j) {
  std::vector<AddedToken> out;
  if (j.is_null()) return out;
  if (!j.is_array()) fail("{}: 'added_tokens' must be an array", kWhat);
  for (const Json& t : j) {
    const std::string what = "tokenizer.json added token";
    AddedToken a;
    a.content = json_string(t, "content", what);
    const Json& id = json_field(t, "id", what);
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > int64_t{64} * 1024 * 1024)
      fail("{}: added token '{}' has an invalid id", kWhat, a.content);
    a.id = static_cast<int32_t>(id.get<int64_t>());
    a.special = json_bool_or(t, "special", false, what);
    a.lstrip = json_bool_or(t, "lstrip", false, what);
    a.rstrip = json_bool_or(t, "rstrip", false, what);
    a.single_word = json_bool_or(t, "single_word", false, what);
    a.normalized = json_bool_or(t, "normalized", !a.special, what);
    out.push_back(std::move(a));
  }
  return out;
}

// The model from the DOM, or from the vocab / merges a SAX load streamed out (`parts` may be null).
std::unique_ptr<BpeModel> make_model(const Json& j, TokenizerJsonParts* parts) {
  const std::string type = json_type_of(j);
  if (type != "BPE" && !(type.empty() && j.is_object() && j.contains("merges")))
    fail("unsupported model type '{}' (supported: BPE)", type.empty() ? "(none)" : type);
  if (parts && parts->streamed_vocab && parts->streamed_merges)
    return BpeModel::from_parts(j, std::move(parts->vocab), std::move(parts->merges));
  if (parts && (parts->streamed_vocab || parts->streamed_merges))
    fail("{}: model.vocab and model.merges must both be present", kWhat);
  return BpeModel::from_json(j);
}

}  // namespace

std::optional<int32_t> Tokenizer::Impl::config_token_id(const char* key) const {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  std::string content;
  if (it->is_string()) {
    content = it->get<std::string>();
  } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    content = (*it)["content"].get<std::string>();
  } else {
    fail("tokenizer_config.json: '{}' must be a string or an AddedToken object", key);
  }
  for (const AddedToken& t : added.tokens())
    if (t.content == content) return t.id;
  return model->token_to_id(content);
}

Tokenizer Tokenizer::from_json(const Json& tj, const Json& config) {
  return build(tj, config, nullptr);
}

Tokenizer Tokenizer::build(const Json& tj, const Json& config, TokenizerJsonParts* parts) {
  if (!tj.is_object()) fail("{}: expected a JSON object", kWhat);
  auto impl = std::make_shared<Impl>();
  if (config.is_object()) impl->config = config;
  impl->normalizer = make_normalizer(tj.value("normalizer", Json()));
  impl->pre_tokenizer = make_pre_tokenizer(tj.value("pre_tokenizer", Json()));
  impl->model = make_model(json_field(tj, "model", kWhat), parts);
  impl->post_processor = make_post_processor(tj.value("post_processor", Json()));
  impl->decoder = make_decoder(tj.value("decoder", Json()));

  std::vector<AddedToken> added = parse_added_tokens(tj.value("added_tokens", Json()));
  int32_t limit = impl->model->id_limit();
  for (const AddedToken& t : added) limit = std::max(limit, t.id + 1);
  impl->vocab_size = limit;
  impl->added_index.assign(static_cast<size_t>(limit), -1);
  impl->special.assign(static_cast<size_t>(limit), false);
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedToken& t = added[i];
    if (impl->added_index[t.id] < 0) impl->added_index[t.id] = static_cast<int32_t>(i);
    if (t.special) {
      impl->special[t.id] = true;
      if (auto same = impl->model->token_to_id(t.content)) impl->special[*same] = true;
    }
  }
  impl->added = AddedVocabulary(std::move(added), impl->normalizer.get());
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_json_text(std::string_view tokenizer_json, std::string_view config_json,
                                    std::string_view label) {
  TokenizerJsonParts parts = parse_tokenizer_json(tokenizer_json, label);
  Json config = Json::object();
  if (!config_json.empty()) config = io::parse_json_strict(config_json, std::string(label) + " (config)");
  return build(parts.rest, config, &parts);
}

Tokenizer Tokenizer::from_dir(const fs::path& dir) {
  const fs::path tj_path = dir / "tokenizer.json";
  if (!fs::is_regular_file(tj_path)) fail("no tokenizer.json in {}", dir.string());
  std::string text;
  {
    std::ifstream f(tj_path, std::ios::binary);
    if (!f) fail("cannot read {}", tj_path.string());
    const auto size = fs::file_size(tj_path);
    if (size > (size_t{512} << 20)) fail("{} is larger than 512 MiB", tj_path.string());
    text.resize(size);
    f.read(text.data(), static_cast<std::streamsize>(size));
    if (static_cast<size_t>(f.gcount()) != size) fail("short read on {}", tj_path.string());
  }
  TokenizerJsonParts parts = parse_tokenizer_json(text, tj_path.string());
  text.clear();
  text.shrink_to_fit();
  Json config = Json::object();
  const fs::path cfg_path = dir / "tokenizer_config.json";
  if (fs::exists(cfg_path)) config = io::read_json_file(cfg_path);
  try {
    return build(parts.rest, config, &parts);
  } catch (const Error& e) {
    fail("{}: {}", tj_path.string(), e.what());
  }
}

namespace {

// The plain ranges that intersect the piece [start, end) of the raw text, in the coordinates of the piece
// once normalized. A normalizer may change lengths, so each boundary b maps to the length of the normalized
// piece prefix [start, b) (exact for the normalizers tokenizer.json uses: per-character maps, Prepend, NFC
// away from combining marks). Past kMaxMapped ranges in one piece the whole piece is plain (no normalized
// added token matched): the mapping costs a normalization per boundary, and only forged text gets there.
std::vector<ByteRange> plain_in_normalized(std::string_view text, size_t start, size_t end,
                                           std::span<const ByteRange> plain, const Normalizer* normalizer,
                                           size_t normalized_size) {
  constexpr size_t kMaxMapped = 64;
  std::vector<ByteRange> out;
  auto first = std::lower_bound(plain.begin(), plain.end(), start,
                                [](const ByteRange& r, size_t pos) { return r.end <= pos; });
  auto norm_len = [&](size_t b) {
    std::string prefix(text.substr(start, b - start));
    if (normalizer) normalizer->normalize(prefix);
    return prefix.size();
  };
  for (auto it = first; it != plain.end() && it->begin < end; ++it) {
    if (out.size() == kMaxMapped) return {ByteRange{0, normalized_size}};
    const size_t b = std::max(it->begin, start), e = std::min(it->end, end);
    out.push_back(ByteRange{norm_len(b), e == end ? normalized_size : norm_len(e)});
  }
  return out;
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return encode(text, add_special_tokens, {});
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens,
                                       std::span<const ByteRange> plain) const {
  const Impl& im = *impl_;
  std::string owned;
  if (!utf8_is_valid(text)) {
    if (!plain.empty()) fail("encode: text with plain ranges must be valid UTF-8");
    owned = utf8_lossy(text);
    text = owned;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::string normalized;
  for (const TextPiece& p : im.added.split(text, /*normalized_set=*/false, plain)) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    normalized.assign(text.substr(p.start, p.end - p.start));
    if (im.normalizer) im.normalizer->normalize(normalized);
    const bool at_start = p.start == 0;
    if (!im.added.has_normalized_tokens()) {
      im.encode_piece(normalized, at_start, &ids);
      continue;
    }
    std::vector<ByteRange> plain_here;
    if (!plain.empty())
      plain_here = plain_in_normalized(text, p.start, p.end, plain, im.normalizer.get(), normalized.size());
    for (const TextPiece& q : im.added.split(normalized, /*normalized_set=*/true, plain_here)) {
      if (q.id >= 0) {
        ids.push_back(q.id);
      } else {
        im.encode_piece(std::string_view(normalized).substr(q.start, q.end - q.start),
                        at_start && q.start == 0, &ids);
      }
    }
  }
  if (im.post_processor) im.post_processor->process(ids, add_special_tokens);
  return ids;
}

std::vector<ByteRange> Tokenizer::find_special_tokens(std::string_view text) const {
  return impl_->added.find_special(text);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return decode(ids, DecodeOptions{skip_special_tokens, false});
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const auto t = im.token_of(id);
    if (!t) continue;
    if (options.skip_special_tokens && im.special[id]) continue;
    tokens.emplace_back(*t);
  }
  std::string text;
  if (im.decoder) {
    im.decoder->decode_chain(tokens);
    for (const std::string& t : tokens) text.append(t);
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text.push_back(' ');
      text.append(tokens[i]);
    }
  }
  if (options.clean_up_tokenization_spaces) text = clean_up_tokenization(std::move(text));
  return text;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  const auto t = impl_->token_of(id);
  if (!t) return std::nullopt;
  return std::string(*t);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& im = *impl_;
  const auto t = im.token_of(id);
  if (!t || im.special[id]) return "";
  std::string bytes(*t);
  if (im.decoder) im.decoder->token_bytes(bytes);
  return bytes;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& t : impl_->added.tokens())
    if (t.content == token) return t.id;
  return impl_->model->token_to_id(token);
}

int32_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && impl_->special[id];
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->config_token_id("bos_token");
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->config_token_id("eos_token");
}

std::optional<bool> Tokenizer::add_bos_token() const {
  auto it = impl_->config.find("add_bos_token");
  if (it == impl_->config.end() || !it->is_boolean()) return std::nullopt;
  return it->get<bool>();
}

bool Tokenizer::config_clean_up_tokenization_spaces() const {
  auto it = impl_->config.find("clean_up_tokenization_spaces");
  // transformers' default when the key is absent is true.
  return it == impl_->config.end() || !it->is_boolean() || it->get<bool>();
}

std::optional<std::string> Tokenizer::chat_template() const {
  auto it = impl_->config.find("chat_template");
  if (it == impl_->config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const Json& entry : *it)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return entry["template"].get<std::string>();
  }
  return std::nullopt;
}

const nlohmann::json& Tokenizer::config() const {
  return impl_->config;
}

std::string clean_up_tokenization(std::string text) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
  };
  for (const auto& [from, to] : kRules) {
    std::string out;
    out.reserve(text.size());
    size_t prev = 0, pos;
    while ((pos = text.find(from, prev)) != std::string::npos) {
      out.append(text, prev, pos - prev);
      out.append(to);
      prev = pos + from.size();
    }
    out.append(text, prev, std::string::npos);
    text.swap(out);
  }
  return text;
}

}  // namespace lp::text
