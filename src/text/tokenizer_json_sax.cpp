#include "text/tokenizer_json_sax.h"

#include "core/check.h"

namespace lp::text {

namespace {

using DomParser = nlohmann::detail::json_sax_dom_parser<Json>;

// Forwards every event to a DOM parser except the contents of model.vocab and model.merges, which it
// collects itself. Any shape error stops the parse with a message.
class Sax {
 public:
  explicit Sax(TokenizerJsonParts* parts) : parts_(parts), dom_(parts->rest, true) {}

  std::string error;

  bool null() { return in_mode() ? bad("null") : dom_.null(); }
  bool boolean(bool v) { return in_mode() ? bad("a boolean") : dom_.boolean(v); }
  bool number_integer(int64_t v) {
    return mode_ == Mode::kVocab ? vocab_id(v) : in_mode() ? bad("a number") : dom_.number_integer(v);
  }
  bool number_unsigned(uint64_t v) {
    if (mode_ == Mode::kVocab)
      return v > uint64_t{INT64_MAX} ? bad("a huge id") : vocab_id(static_cast<int64_t>(v));
    return in_mode() ? bad("a number") : dom_.number_unsigned(v);
  }
  bool number_float(double v, const std::string& s) {
    return in_mode() ? bad("a float") : dom_.number_float(v, s);
  }
  bool binary(Json::binary_t& v) { return in_mode() ? bad("binary") : dom_.binary(v); }

  bool string(std::string& v) {
    if (mode_ == Mode::kMerges) {
      if (merge_depth_ == 0) {
        parts_->merges.push_back(MergeSpec{std::move(v), {}, true});
      } else {
        if (pair_.size() >= 2) return bad_merge();
        pair_.push_back(std::move(v));
      }
      return true;
    }
    return mode_ == Mode::kVocab ? bad("a string") : dom_.string(v);
  }

  bool key(std::string& k) {
    if (mode_ == Mode::kVocab) {
      pending_key_ = std::move(k);
      return true;
    }
    last_key_ = k;
    return dom_.key(k);
  }

  bool start_object(size_t n) {
    if (in_mode()) return mode_ == Mode::kVocab ? bad("an object") : bad_merge();
    const bool vocab = depth_ == 2 && path_model_ && last_key_ == "vocab";
    ++depth_;
    track_model(true);
    if (vocab) {
      mode_ = Mode::kVocab;
      mode_depth_ = depth_;
      parts_->streamed_vocab = true;
    }
    return dom_.start_object(vocab ? 0 : n);
  }

  bool end_object() {
    if (mode_ == Mode::kVocab && depth_ == mode_depth_) mode_ = Mode::kNone;
    --depth_;
    track_model(false);
    return dom_.end_object();
  }

  bool start_array(size_t n) {
    if (mode_ == Mode::kMerges) {
      if (merge_depth_ > 0) return bad_merge();
      merge_depth_ = 1;
      pair_.clear();
      return true;
    }
    if (mode_ == Mode::kVocab) return bad("an array");
    const bool merges = depth_ == 2 && path_model_ && last_key_ == "merges";
    ++depth_;
    if (merges) {
      mode_ = Mode::kMerges;
      mode_depth_ = depth_;
      parts_->streamed_merges = true;
    }
    return dom_.start_array(merges ? 0 : n);
  }

  bool end_array() {
    if (mode_ == Mode::kMerges && merge_depth_ > 0) {
      if (pair_.size() != 2) return bad_merge();
      parts_->merges.push_back(MergeSpec{std::move(pair_[0]), std::move(pair_[1]), false});
      merge_depth_ = 0;
      return true;
    }
    if (mode_ == Mode::kMerges && depth_ == mode_depth_) mode_ = Mode::kNone;
    --depth_;
    return dom_.end_array();
  }

  bool parse_error(size_t pos, const std::string& last_token, const nlohmann::detail::exception& e) {
    error = fmt::format("invalid JSON at byte {}: {}", pos, e.what());
    return false;
  }

 private:
  enum class Mode { kNone, kVocab, kMerges };
  bool in_mode() const { return mode_ != Mode::kNone; }

  // Tracks whether the current object is root["model"] (depth 2).
  void track_model(bool opening) {
    if (opening) {
      if (depth_ == 2) path_model_ = last_key_ == "model" && root_is_object_;
      if (depth_ == 1) root_is_object_ = true;
    } else if (depth_ == 1) {
      path_model_ = false;
    }
  }

  bool vocab_id(int64_t v) {
    parts_->vocab.emplace_back(std::move(pending_key_), v);
    return true;
  }
  bool bad(const char* what) {
    if (mode_ == Mode::kMerges) return bad_merge();
    error = fmt::format("model.vocab values must be integer ids, found {}", what);
    return false;
  }
  bool bad_merge() {
    error = fmt::format("model.merges entry #{} must be \"a b\" or [\"a\", \"b\"]", parts_->merges.size());
    return false;
  }

  TokenizerJsonParts* parts_;
  DomParser dom_;
  Mode mode_ = Mode::kNone;
  int depth_ = 0;
  int mode_depth_ = 0;
  int merge_depth_ = 0;
  bool root_is_object_ = false;
  bool path_model_ = false;
  std::string last_key_;
  std::string pending_key_;
  std::vector<std::string> pair_;
};

}  // namespace

TokenizerJsonParts parse_tokenizer_json(std::string_view text, std::string_view label) {
  TokenizerJsonParts parts;
  Sax sax(&parts);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const Json::exception& e) {
    fail("invalid JSON in {}: {}", label, e.what());
  }
  if (!ok) fail("{}: {}", label, sax.error.empty() ? "invalid JSON" : sax.error);
  return parts;
}

}  // namespace lp::text
