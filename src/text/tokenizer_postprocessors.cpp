#include "text/tokenizer_postprocessors.h"

#include "core/check.h"

namespace lp::text {

namespace {

// A template is a list of items: either the sequence itself or a run of special-token ids.
struct TemplateItem {
  bool is_sequence = false;
  std::vector<int32_t> ids;
};

class TemplatePostProcessor final : public PostProcessor {
 public:
  explicit TemplatePostProcessor(std::vector<TemplateItem> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const TemplateItem& item : items_) {
      if (item.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.ids.begin(), item.ids.end());
      }
    }
    ids.swap(out);
  }

 private:
  std::vector<TemplateItem> items_;
};

class NoopPostProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};

class SequencePostProcessor final : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& p : parts_) p->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

std::unique_ptr<PostProcessor> make_template(const Json& j, std::string_view what) {
  const Json& single = json_field(j, "single", what);
  const Json& specials = j.contains("special_tokens") ? j["special_tokens"] : Json::object();
  if (!single.is_array()) fail("{}: 'single' must be an array", what);
  std::vector<TemplateItem> items;
  for (const Json& piece : single) {
    if (piece.is_object() && piece.contains("Sequence")) {
      const std::string id = json_string(piece["Sequence"], "id", what);
      if (id != "A") fail("{}: the single-sequence template refers to sequence '{}'", what, id);
      items.push_back(TemplateItem{true, {}});
    } else if (piece.is_object() && piece.contains("SpecialToken")) {
      const std::string name = json_string(piece["SpecialToken"], "id", what);
      if (!specials.is_object() || !specials.contains(name))
        fail("{}: special token '{}' is used but not listed in 'special_tokens'", what, name);
      const Json& ids = json_field(specials[name], "ids", what);
      if (!ids.is_array()) fail("{}: 'ids' of special token '{}' must be an array", what, name);
      TemplateItem item;
      for (const Json& id : ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
          fail("{}: ids of special token '{}' must be non-negative integers", what, name);
        item.ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
      items.push_back(std::move(item));
    } else {
      fail("{}: template items must be {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}", what);
    }
  }
  return std::make_unique<TemplatePostProcessor>(std::move(items));
}

// Roberta / Bert: "cls": ["<s>", 0], "sep": ["</s>", 2] → cls A sep.
std::unique_ptr<PostProcessor> make_cls_sep(const Json& j, std::string_view what) {
  auto read = [&](std::string_view key) {
    const Json& v = json_field(j, key, what);
    if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer() || v[1].get<int64_t>() < 0)
      fail("{}: '{}' must be [token, id]", what, key);
    return static_cast<int32_t>(v[1].get<int64_t>());
  };
  std::vector<TemplateItem> items;
  items.push_back(TemplateItem{false, {read("cls")}});
  items.push_back(TemplateItem{true, {}});
  items.push_back(TemplateItem{false, {read("sep")}});
  return std::make_unique<TemplatePostProcessor>(std::move(items));
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type_of(j);
  const std::string what = fmt::format("post-processor '{}'", type);
  if (type == "TemplateProcessing") return make_template(j, what);
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "RobertaProcessing" || type == "BertProcessing") return make_cls_sep(j, what);
  if (type == "Sequence") {
    const Json& list = json_field(j, "processors", what);
    if (!list.is_array()) fail("{}: 'processors' must be an array", what);
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const Json& item : list) {
      auto p = make_post_processor(item);
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  fail(
      "unsupported post-processor type '{}' (supported: TemplateProcessing, ByteLevel, RobertaProcessing, "
      "BertProcessing, Sequence)",
      type);
}

}  // namespace lp::text
