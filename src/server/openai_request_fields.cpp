// vLLM's extra request fields (sampling extras, structured outputs, tool_choice) and the fields vLLM knows
// that loraplex does not implement, each refused with a 400 naming it when set to a value that would change
// the output. docs/api.md lists every field of CompletionRequest / ChatCompletionRequest and its fate; this
// file and openai_request.cpp are that table in code.
#include <algorithm>
#include <functional>

#include "server/openai_request.h"
#include "server/json_limits.h"
#include "server/openai_request_util.h"

namespace lp::server {

namespace request_util {

namespace {

// A field whose presence with a non-default value is a 400: `is_default` says whether the value is one we
// honour (the default, or one that changes nothing).
template <class F>
void refuse_unless(const ojson& b, const char* name, F is_default, const char* why) {
  const ojson* v = field(b, name);
  if (v && !is_default(*v)) fail_param(name, "'{}' is not supported by this server: {}", name, why);
}

bool is_false(const ojson& v) { return v.is_boolean() && !v.get<bool>(); }
bool is_empty(const ojson& v) { return (v.is_object() || v.is_array() || v.is_string()) && v.empty(); }

void add_structured(GenerateParams& p, StructuredOutput::Kind kind, const std::string& param) {
  if (p.structured.kind != StructuredOutput::Kind::kNone)
    fail_param(param,
               "only one kind of structured output may be given; '{}' and '{}' are both set (response_format, "
               "structured_outputs.json / regex / choice / json_object, guided_json / guided_regex / "
               "guided_choice)",
               p.structured.param, param);
  p.structured.kind = kind;
  p.structured.param = param;
}

// A JSON schema given as an object, or (guided_json, structured_outputs.json) as a string holding one. Kept
// ordered: properties are generated in the schema's order. A string is held to the body's shape bounds.
ojson schema_value(const ojson& v, const std::string& name) {
  if (v.is_string()) {
    const std::string& text = v.get_ref<const std::string&>();
    try {
      check_json_shape(text);
    } catch (const Error& e) {
      fail_param(name, "'{}': {}", name, e.what());
    }
    ojson j = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !(j.is_object() || j.is_boolean()))
      fail_param(name, "'{}' must be a JSON schema (an object, or a string holding one)", name);
    return j;
  }
  if (!v.is_object() && !v.is_boolean())
    fail_param(name, "'{}' must be a JSON schema object, got {}", name, json_type(v));
  return v;
}

void set_regex(GenerateParams& p, const ojson& v, const std::string& name) {
  add_structured(p, StructuredOutput::Kind::kRegex, name);
  p.structured.regex = get_string(v, name.c_str());
  if (p.structured.regex.empty()) fail_param(name, "'{}' must not be empty", name);
}

void set_choice(GenerateParams& p, const ojson& v, const std::string& name) {
  add_structured(p, StructuredOutput::Kind::kChoice, name);
  if (!v.is_array() || v.empty()) fail_param(name, "'{}' must be a non-empty list of strings", name);
  for (const auto& c : v) p.structured.choice.push_back(get_string(c, name.c_str()));
}

void set_schema(GenerateParams& p, const ojson& v, const std::string& name) {
  add_structured(p, StructuredOutput::Kind::kJsonSchema, name);
  p.structured.schema = schema_value(v, name);
}

void parse_response_format(const ojson& v, GenerateParams& p) {
  constexpr const char* kName = "response_format";
  if (!v.is_object()) fail_param(kName, "'response_format' must be an object, got {}", json_type(v));
  const ojson* t = field(v, "type");
  if (!t || !t->is_string()) fail_param(kName, "'response_format.type' must be a string");
  const std::string type = t->get<std::string>();
  if (type == "text") return;
  if (type == "json_object") {
    add_structured(p, StructuredOutput::Kind::kJsonObject, kName);
    return;
  }
  if (type == "json_schema") {
    const ojson* js = field(v, "json_schema");
    if (!js || !js->is_object())
      fail_param(kName, "'response_format.json_schema' must be an object with a 'schema' when type is json_schema");
    const ojson* schema = field(*js, "schema");
    if (!schema) fail_param(kName, "'response_format.json_schema.schema' is required");
    if (const ojson* n = field(*js, "name")) get_string(*n, "response_format.json_schema.name");
    set_schema(p, *schema, kName);
    return;
  }
  if (type == "structural_tag")
    fail_param(kName, "response_format type 'structural_tag' is not supported by this server");
  fail_param(kName, "response_format type must be one of text, json_object, json_schema, got '{}'", type);
}

void parse_structured_outputs_object(const ojson& v, GenerateParams& p) {
  constexpr const char* kName = "structured_outputs";
  if (!v.is_object()) fail_param(kName, "'structured_outputs' must be an object, got {}", json_type(v));
  if (const ojson* x = field(v, "json")) set_schema(p, *x, "structured_outputs.json");
  if (const ojson* x = field(v, "regex")) set_regex(p, *x, "structured_outputs.regex");
  if (const ojson* x = field(v, "choice")) set_choice(p, *x, "structured_outputs.choice");
  if (const ojson* x = field(v, "json_object"))
    if (get_bool(*x, "structured_outputs.json_object"))
      add_structured(p, StructuredOutput::Kind::kJsonObject, "structured_outputs.json_object");
  for (const char* name : {"grammar", "structural_tag", "whitespace_pattern"})
    if (field(v, name))
      fail_param(fmt::format("structured_outputs.{}", name), "'structured_outputs.{}' is not supported by this server",
                 name);
  for (const char* name : {"disable_any_whitespace", "disable_additional_properties"})
    if (const ojson* x = field(v, name))
      if (!is_false(*x))
        fail_param(fmt::format("structured_outputs.{}", name),
                   "'structured_outputs.{}' is not supported by this server (whitespace is bounded as xgrammar's "
                   "default; additionalProperties follows the schema)",
                   name);
  // disable_fallback / backend choose between vLLM's backends; there is one here, so they change nothing.
  if (const ojson* x = field(v, "disable_fallback")) get_bool(*x, "structured_outputs.disable_fallback");
}

}  // namespace

void parse_vllm_fields(const ojson& b, GenerateParams& p, bool chat) {
  // --- Implemented sampling extras. ---
  if (const ojson* v = field(b, "min_tokens")) {
    const int64_t m = get_int(*v, "min_tokens");
    if (m < 0) fail_param("min_tokens", "min_tokens must be greater than or equal to 0, got {}", m);
    p.min_tokens = static_cast<int>(std::min<int64_t>(m, std::numeric_limits<int32_t>::max()));
  }
  if (const ojson* v = field(b, "allowed_token_ids")) {
    std::vector<int32_t> ids = get_token_ids(*v, "allowed_token_ids");
    if (ids.empty()) fail_param("allowed_token_ids", "allowed_token_ids is not allowed to be empty");
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    p.allowed_token_ids = std::move(ids);
  }
  if (const ojson* v = field(b, "bad_words")) {
    if (!v->is_array()) fail_param("bad_words", "'bad_words' must be a list of strings, got {}", json_type(*v));
    if (v->size() > limits::kMaxBadWords)
      fail_param("bad_words", "at most {} bad_words are allowed, got {}", limits::kMaxBadWords, v->size());
    for (const auto& w : *v) {
      std::string s = get_string(w, "bad_words");
      if (s.find_first_not_of(" \t\n\r\f\v") == std::string::npos)
        fail_param("bad_words", "bad_words entries must not be empty or blank");
      if (s.size() > limits::kMaxBadWordBytes)
        fail_param("bad_words", "a bad word may be at most {} bytes long, got {}", limits::kMaxBadWordBytes, s.size());
      p.bad_words.push_back(std::move(s));
    }
  }
  if (const ojson* v = field(b, "prompt_logprobs")) {
    const int64_t k = get_int(*v, "prompt_logprobs");
    if (k < 0 || k > limits::kMaxLogprobs)
      fail_param("prompt_logprobs", "prompt_logprobs must be between 0 and {}, got {}", limits::kMaxLogprobs, k);
    if (p.stream && k > 0)
      fail_param("prompt_logprobs", "`prompt_logprobs` are not available when `stream=True`.");
    p.prompt_logprobs = static_cast<int>(k);
  }
  if (const ojson* v = field(b, "truncate_prompt_tokens")) {
    const int64_t k = get_int(*v, "truncate_prompt_tokens");
    if (k != -1 && k < 1)
      fail_param("truncate_prompt_tokens", "truncate_prompt_tokens must be -1 (max_model_len) or at least 1, got {}",
                 k);
    p.truncate_prompt_tokens = static_cast<int>(std::min<int64_t>(k, std::numeric_limits<int32_t>::max()));
  }
  if (const ojson* v = field(b, "echo")) p.echo = get_bool(*v, "echo");
  if (const ojson* v = field(b, "return_tokens_as_token_ids"))
    p.return_tokens_as_token_ids = get_bool(*v, "return_tokens_as_token_ids");

  // --- Structured outputs: parsed here, compiled by the handler. ---
  if (const ojson* v = field(b, "response_format")) parse_response_format(*v, p);
  if (const ojson* v = field(b, "structured_outputs")) parse_structured_outputs_object(*v, p);
  if (const ojson* v = field(b, "guided_json")) set_schema(p, *v, "guided_json");
  if (const ojson* v = field(b, "guided_regex")) set_regex(p, *v, "guided_regex");
  if (const ojson* v = field(b, "guided_choice")) set_choice(p, *v, "guided_choice");
  if (const ojson* v = field(b, "guided_decoding_backend")) get_string(*v, "guided_decoding_backend");  // one backend
  refuse_unless(b, "guided_grammar", [](const ojson&) { return false; }, "context-free grammars are not implemented");
  refuse_unless(b, "structural_tag", [](const ojson&) { return false; }, "structural tags are not implemented");
  refuse_unless(b, "guided_whitespace_pattern", [](const ojson&) { return false; },
                "JSON whitespace is bounded as xgrammar's default and cannot be overridden");

  // --- Known, not implemented: refused when set to anything but the default. ---
  refuse_unless(b, "use_beam_search", is_false, "beam search is not implemented");
  refuse_unless(b, "length_penalty", [](const ojson& v) { return v.is_number() && v.get<double>() == 1.0; },
                "length_penalty applies to beam search, which is not implemented");
  refuse_unless(b, "logits_processors", is_empty, "custom logits processors cannot be loaded");
  refuse_unless(b, "return_token_ids", is_false, "token ids are not returned");
  refuse_unless(b, "priority", [](const ojson& v) { return v.is_number() && v.get<double>() == 0; },
                "priority scheduling is not implemented (adapters are scheduled by weight, see --lora-modules)");
  refuse_unless(b, "mm_processor_kwargs", is_empty, "the server serves text-only models");
  refuse_unless(b, "media_io_kwargs", is_empty, "the server serves text-only models");
  refuse_unless(b, "kv_transfer_params", [](const ojson&) { return false; }, "disaggregated serving is not implemented");
  refuse_unless(b, "vllm_xargs", is_empty, "there are no custom extensions to pass them to");
  if (!chat) refuse_unless(b, "prompt_embeds", [](const ojson&) { return false; }, "prompt embeddings are not accepted");

  // --- loraplex's own: per-request adapter scale and stacking. ---
  if (const ojson* v = field(b, "adapters")) {
    constexpr const char* kName = "adapters";
    if (!v->is_array()) fail_param(kName, "'adapters' must be a list of {{\"name\": ..., \"scale\": ...}} objects");
    if (v->size() > kMaxAdaptersField) fail_param(kName, "'adapters' lists {} adapters; at most {}", v->size(), kMaxAdaptersField);
    for (const ojson& e : *v) {
      if (!e.is_object()) fail_param(kName, "each entry of 'adapters' must be an object, got {}", json_type(e));
      AdapterSpec a;
      for (const auto& [k, x] : e.items()) {
        if (k == "name") {
          a.name = get_string(x, "adapters[].name");
        } else if (k == "scale") {
          const double m = get_number(x, "adapters[].scale");
          if (std::fabs(m) > kMaxAdapterScale)
            fail_param(kName, "an adapter scale must be within [-{0:g}, {0:g}], got {1:g}", kMaxAdapterScale, m);
          a.scale = static_cast<float>(m);
        } else {
          fail_param(kName, "unknown key '{}' in an 'adapters' entry (name, scale)", k);
        }
      }
      if (a.name.empty()) fail_param(kName, "an 'adapters' entry needs a non-empty \"name\"");
      p.adapters.push_back(std::move(a));
    }
  }

  // --- Known, accepted: they do not change the output. Types are still checked. ---
  if (const ojson* v = field(b, "user")) get_string(*v, "user");
  // Only slow (Python) tokenizers put spaces between special tokens; vLLM ignores the flag for fast ones,
  // which is what text/tokenizer.h decodes like.
  if (const ojson* v = field(b, "spaces_between_special_tokens")) get_bool(*v, "spaces_between_special_tokens");
  if (const ojson* v = field(b, "request_id")) get_string(*v, "request_id");
  if (const ojson* v = field(b, "cache_salt")) {
    // Prefix-cache blocks are shared only within one adapter and one salt (sched::Request::cache_salt).
    if (!v->is_string() || v->get_ref<const std::string&>().empty())
      fail_param("cache_salt", "Parameter 'cache_salt' must be a non-empty string if provided.");
    p.cache_salt = std::hash<std::string>{}(v->get<std::string>()) | 1;  // never 0 (= no salt)
  }
}

ToolChoice parse_tool_choice(const ojson& b, const ojson& tools) {
  constexpr const char* kName = "tool_choice";
  const bool have_tools = tools.is_array() && !tools.empty();
  ToolChoice tc;
  const ojson* v = field(b, kName);
  if (!v) {
    tc.kind = have_tools ? ToolChoice::Kind::kAuto : ToolChoice::Kind::kNone;
    return tc;
  }
  if (v->is_string()) {
    const std::string s = v->get<std::string>();
    if (s == "none") {
      tc.kind = ToolChoice::Kind::kNone;
      return tc;
    }
    if (s != "auto" && s != "required")
      fail_param(kName, "Invalid value for `tool_choice`: {}! Only named tools, \"none\", \"auto\" or \"required\" are "
                 "supported.", s);
    const ojson* t = field(b, "tools");
    if (!t) fail_param(kName, "When using `tool_choice`, `tools` must be set.");
    if (s == "required" && !have_tools) {  // OpenAI: behaves as "none"
      tc.kind = ToolChoice::Kind::kNone;
      return tc;
    }
    tc.kind = s == "auto" ? ToolChoice::Kind::kAuto : ToolChoice::Kind::kRequired;
    return tc;
  }
  constexpr const char* kUsage = "Correct usage: `{\"type\": \"function\", \"function\": {\"name\": \"my_function\"}}`";
  if (!v->is_object()) fail_param(kName, "'tool_choice' must be a string or an object. {}", kUsage);
  if (const ojson* t = field(*v, "type"); t && (!t->is_string() || *t != "function"))
    fail_param(kName, "'tool_choice.type' must be \"function\". {}", kUsage);
  const ojson* fn = field(*v, "function");
  if (!fn || !fn->is_object()) fail_param(kName, "Invalid value for `function` in `tool_choice`! {}", kUsage);
  const ojson* name = field(*fn, "name");
  if (!name || !name->is_string() || name->get_ref<const std::string&>().empty())
    fail_param(kName, "Invalid `name` in `function` in `tool_choice`! {}", kUsage);
  if (!field(b, "tools")) fail_param(kName, "When using `tool_choice`, `tools` must be set.");
  tc.kind = ToolChoice::Kind::kNamed;
  tc.name = name->get<std::string>();
  bool found = false;
  if (have_tools)
    for (const auto& t : tools) {
      auto f = t.is_object() ? t.find("function") : t.end();
      if (f != t.end() && f->is_object()) {
        auto n = f->find("name");
        if (n != f->end() && n->is_string() && *n == tc.name) found = true;
      }
    }
  if (!found) fail_param(kName, "The tool specified in `tool_choice` does not match any of the specified `tools`");
  return tc;
}

}  // namespace request_util

std::shared_ptr<const std::vector<std::vector<int32_t>>> bad_words_token_ids(
    const std::vector<std::string>& words, const std::function<std::vector<int32_t>(const std::string&)>& encode) {
  if (words.empty()) return nullptr;
  auto out = std::make_shared<std::vector<std::vector<int32_t>>>();
  for (const std::string& word : words) {
    const std::string stripped = word.substr(std::min(word.size(), word.find_first_not_of(" \t\n\r\f\v")));
    std::vector<int32_t> plain = encode(stripped);
    if (plain.empty()) continue;
    // With a leading space: kept only when it makes a different first token of the same length (a word in
    // the middle of text), as vLLM's NoBadWordsLogitsProcessor does.
    std::vector<int32_t> spaced = encode(" " + stripped);
    out->push_back(plain);
    if (!spaced.empty() && spaced.size() == plain.size() && spaced[0] != plain[0]) out->push_back(std::move(spaced));
  }
  if (out->empty()) return nullptr;
  return out;
}

void truncate_prompt(const GenerateParams& p, std::vector<int32_t>& prompt, int64_t max_model_len) {
  if (!p.truncate_prompt_tokens) return;
  int64_t k = *p.truncate_prompt_tokens;
  if (k == -1) k = max_model_len;
  if (k > max_model_len)
    fail_param("truncate_prompt_tokens",
               "truncate_prompt_tokens value ({}) is greater than max_model_len ({}). Please, select a smaller "
               "truncation size.",
               k, max_model_len);
  if (static_cast<int64_t>(prompt.size()) > k) prompt.erase(prompt.begin(), prompt.end() - k);
}

}  // namespace lp::server
