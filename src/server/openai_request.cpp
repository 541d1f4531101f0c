#include "server/openai_request.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <memory>

#include "server/api_error.h"
#include "server/json_limits.h"
#include "server/openai_request_util.h"

namespace lp::server {

using ojson = nlohmann::ordered_json;

namespace {

using namespace request_util;

// {"token id": bias, ...} as sorted (id, bias) pairs; ids are checked against the vocabulary later
// (check_token_ids), when the tokenizer is known.
std::shared_ptr<const std::vector<std::pair<int32_t, float>>> get_logit_bias(const ojson& v) {
  constexpr const char* kName = "logit_bias";
  if (!v.is_object())
    fail_param(kName, "'logit_bias' must be an object of token ids to biases, got {}", json_type(v));
  if (v.size() > limits::kMaxLogitBias)
    fail_param(kName, "'logit_bias' may hold at most {} entries, got {}", limits::kMaxLogitBias, v.size());
  auto out = std::make_shared<std::vector<std::pair<int32_t, float>>>();
  out->reserve(v.size());
  for (const auto& [key, value] : v.items()) {
    int32_t id = -1;
    const char* end = key.data() + key.size();
    auto [ptr, ec] = std::from_chars(key.data(), end, id);
    if (key.empty() || ec != std::errc() || ptr != end || id < 0)
      fail_param(kName, "'logit_bias' keys must be token ids (non-negative integers), got '{}'", key);
    if (!value.is_number())
      fail_param(kName, "'logit_bias' values must be numbers, got {}", json_type(value));
    const double bias = value.get<double>();
    if (!(bias >= -limits::kMaxLogitBiasValue && bias <= limits::kMaxLogitBiasValue))
      fail_param(kName, "'logit_bias' values must be in [-{0}, {0}], got {1} for token {2}",
                 limits::kMaxLogitBiasValue, bias, id);
    out->emplace_back(id, static_cast<float>(bias));
  }
  std::sort(out->begin(), out->end());
  for (size_t i = 1; i < out->size(); ++i)
    if ((*out)[i].first == (*out)[i - 1].first)  // "5" and "05"
      fail_param(kName, "'logit_bias' names token {} twice", (*out)[i].first);
  if (out->empty()) return nullptr;
  return out;
}

void parse_common(const ojson& b, GenerateParams& p, bool chat) {
  if (const ojson* v = field(b, "model")) p.model = get_string(*v, "model");
  auto& s = p.sampling;
  if (const ojson* v = field(b, "temperature")) {
    s.temperature = static_cast<float>(get_number(*v, "temperature"));
    if (s.temperature < 0) fail_param("temperature", "temperature must be non-negative, got {}", s.temperature);
  }
  if (const ojson* v = field(b, "top_p")) {
    s.top_p = static_cast<float>(get_number(*v, "top_p"));
    if (!(s.top_p > 0 && s.top_p <= 1)) fail_param("top_p", "top_p must be in (0, 1], got {}", s.top_p);
  }
  if (const ojson* v = field(b, "top_k")) {
    s.top_k = get_int32(*v, "top_k");
    if (s.top_k < -1) fail_param("top_k", "top_k must be -1 (disable), or at least 1, got {}", s.top_k);
  }
  if (const ojson* v = field(b, "min_p")) {
    s.min_p = static_cast<float>(get_number(*v, "min_p"));
    if (!(s.min_p >= 0 && s.min_p <= 1)) fail_param("min_p", "min_p must be in [0, 1], got {}", s.min_p);
  }
  if (const ojson* v = field(b, "presence_penalty")) {
    s.presence_penalty = static_cast<float>(get_number(*v, "presence_penalty"));
    if (!(s.presence_penalty >= -2 && s.presence_penalty <= 2))
      fail_param("presence_penalty", "presence_penalty must be in [-2, 2], got {}", s.presence_penalty);
  }
  if (const ojson* v = field(b, "frequency_penalty")) {
    s.frequency_penalty = static_cast<float>(get_number(*v, "frequency_penalty"));
    if (!(s.frequency_penalty >= -2 && s.frequency_penalty <= 2))
      fail_param("frequency_penalty", "frequency_penalty must be in [-2, 2], got {}", s.frequency_penalty);
  }
  if (const ojson* v = field(b, "repetition_penalty")) {
    s.repetition_penalty = static_cast<float>(get_number(*v, "repetition_penalty"));
    if (!(s.repetition_penalty > 0))
      fail_param("repetition_penalty", "repetition_penalty must be greater than zero, got {}", s.repetition_penalty);
  }
  if (const ojson* v = field(b, "seed")) s.seed = get_seed(*v);
  if (const ojson* v = field(b, "n")) {
    int64_t n = get_int(*v, "n");
    if (n < 1 || n > limits::kMaxN) fail_param("n", "n must be between 1 and {}, got {}", limits::kMaxN, n);
    p.n = static_cast<int>(n);
  }
  // max_completion_tokens (the newer OpenAI name) wins over max_tokens, as in vLLM.
  // 0 only for a completion with echo (the prompt alone, as vLLM); checked once echo is known.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const ojson* v = field(b, name)) {
      int64_t m = get_int(*v, name);
      if (m < 0) fail_param(name, "{} must be at least 1, got {}", name, m);
      p.max_tokens = static_cast<int>(std::min<int64_t>(m, std::numeric_limits<int32_t>::max()));
    }
  }
  if (const ojson* v = field(b, "ignore_eos")) p.ignore_eos = get_bool(*v, "ignore_eos");
  if (const ojson* v = field(b, "stop_token_ids")) {
    if (v->is_array() && v->size() > limits::kMaxStopTokenIds)
      fail_param("stop_token_ids", "at most {} stop_token_ids are allowed, got {}", limits::kMaxStopTokenIds,
                 v->size());
    p.stop_token_ids = get_token_ids(*v, "stop_token_ids");
  }
  if (const ojson* v = field(b, "stop")) {
    if (v->is_string()) {
      p.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > limits::kMaxStopStrings)
        fail_param("stop", "at most {} stop strings are allowed, got {}", limits::kMaxStopStrings, v->size());
      for (const auto& x : *v) p.stop.push_back(get_string(x, "stop"));
    } else {
      fail_param("stop", "'stop' must be a string or a list of strings, got {}", json_type(*v));
    }
    for (const auto& st : p.stop) {
      if (st.empty()) fail_param("stop", "stop strings must not be empty");
      if (st.size() > limits::kMaxStopStringBytes)
        fail_param("stop", "a stop string may be at most {} bytes long, got {}", limits::kMaxStopStringBytes,
                   st.size());
    }
  }
  if (const ojson* v = field(b, "logit_bias")) s.logit_bias = get_logit_bias(*v);
  if (const ojson* v = field(b, "include_stop_str_in_output"))
    p.include_stop_str_in_output = get_bool(*v, "include_stop_str_in_output");
  if (const ojson* v = field(b, "skip_special_tokens")) p.skip_special_tokens = get_bool(*v, "skip_special_tokens");
  if (const ojson* v = field(b, "stream")) p.stream = get_bool(*v, "stream");
  if (const ojson* v = field(b, "stream_options")) {
    if (!v->is_object()) fail_param("stream_options", "'stream_options' must be an object");
    if (!p.stream) fail_param("stream_options", "Stream options can only be defined when `stream=True`.");
    // vLLM's StreamOptions: include_usage defaults to true once stream_options is sent.
    p.include_usage = true;
    if (const ojson* u = field(*v, "include_usage")) p.include_usage = get_bool(*u, "stream_options.include_usage");
    if (const ojson* u = field(*v, "continuous_usage_stats"))
      p.continuous_usage = get_bool(*u, "stream_options.continuous_usage_stats") && p.include_usage;
  }
  if (const ojson* v = field(b, "best_of")) {
    const int64_t best_of = get_int(*v, "best_of");
    if (best_of != p.n) fail_param("best_of", "'best_of' must equal n ({}), got {}", p.n, best_of);
  }
  if (const ojson* v = field(b, "suffix"))
    if (!get_string(*v, "suffix").empty()) fail_param("suffix", "'suffix' is not supported");
  parse_vllm_fields(b, p, chat);
  if (p.max_tokens && *p.max_tokens == 0 && !(p.echo && !chat))
    fail_param(field(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
               "max_tokens must be at least 1, got 0 (0 is allowed only with echo, for completions)");
}

// Chat roles the API accepts (OpenAI's, "developer" being the newer name of "system").
bool known_role(const std::string& r) {
  return r == "system" || r == "user" || r == "assistant" || r == "tool" || r == "developer";
}

// Checks one message before any template sees it, and turns list content into one string (text parts joined
// by "\n", as vLLM's "string" content format does). The param named is the message field at fault, so a
// client never gets a template error for a malformed message.
void check_message(ojson& msg, size_t i) {
  const std::string at = fmt::format("messages[{}]", i);
  if (!msg.is_object()) fail_param(at, "{} must be an object, got {}", at, json_type(msg));
  const std::string role_at = at + ".role";
  auto role = msg.find("role");
  if (role == msg.end() || !role->is_string())
    fail_param(role_at, "{} must be a string, one of system, user, assistant, tool, developer", role_at);
  const std::string r = role->get<std::string>();
  if (!known_role(r))
    fail_param(role_at, "{} must be one of system, user, assistant, tool, developer, got '{}'", role_at, r);
  if (auto name = msg.find("name"); name != msg.end() && !name->is_null() && !name->is_string())
    fail_param(at + ".name", "{}.name must be a string, got {}", at, json_type(*name));
  bool has_tool_calls = false;
  if (auto tc = msg.find("tool_calls"); tc != msg.end() && !tc->is_null()) {
    if (r != "assistant") fail_param(at + ".tool_calls", "only assistant messages carry tool_calls");
    if (!tc->is_array())
      fail_param(at + ".tool_calls", "{}.tool_calls must be a list, got {}", at, json_type(*tc));
    for (size_t k = 0; k < tc->size(); ++k) {
      const ojson& call = (*tc)[k];
      const std::string call_at = fmt::format("{}.tool_calls[{}]", at, k);
      auto fn = call.is_object() ? call.find("function") : call.end();
      if (!call.is_object() || fn == call.end() || !fn->is_object())
        fail_param(call_at, "{} must be an object with a 'function' object", call_at);
      auto fname = fn->find("name");
      if (fname == fn->end() || !fname->is_string())
        fail_param(call_at + ".function.name", "{}.function.name must be a string", call_at);
      auto args = fn->find("arguments");
      if (args != fn->end() && !args->is_string() && !args->is_object())
        fail_param(call_at + ".function.arguments", "{}.function.arguments must be a JSON string", call_at);
    }
    has_tool_calls = !tc->empty();
  }
  const std::string content_at = at + ".content";
  auto it = msg.find("content");
  if (it == msg.end() || it->is_null()) {
    // OpenAI: content is required unless an assistant message carries tool_calls.
    if (r == "assistant" && has_tool_calls) return;
    fail_param(content_at, "{} must be a string or a list of text parts{}", content_at,
               r == "assistant" ? " (it may be null only with tool_calls)" : "");
  }
  if (it->is_string()) return;
  if (!it->is_array())
    fail_param(content_at, "{} must be a string or a list of text parts, got {}", content_at, json_type(*it));
  std::string text;
  for (size_t k = 0; k < it->size(); ++k) {
    const ojson& part = (*it)[k];
    const std::string part_at = fmt::format("{}[{}]", content_at, k);
    if (!part.is_object()) fail_param(part_at, "{} must be an object, got {}", part_at, json_type(part));
    auto type = part.find("type");
    if (type == part.end() || !type->is_string() || *type != "text")
      fail_param(part_at + ".type", "{}: only text content parts ({{\"type\": \"text\"}}) are supported",
                 part_at);
    auto t = part.find("text");
    if (t == part.end() || !t->is_string())
      fail_param(part_at + ".text", "{}.text must be a string", part_at);
    if (k > 0) text += "\n";
    text += t->get<std::string>();
  }
  *it = std::move(text);
}

}  // namespace

std::string string_field(const ojson& body, const char* name) {
  const ojson* v = field(body, name);
  return v ? get_string(*v, name) : std::string();
}

bool bool_field(const ojson& body, const char* name) {
  const ojson* v = field(body, name);
  return v ? get_bool(*v, name) : false;
}

void check_token_ids(const GenerateParams& p, int32_t vocab_size) {
  for (int32_t id : p.stop_token_ids)
    if (id >= vocab_size)
      fail_param("stop_token_ids", "token id {} is out of range for vocab size {}", id, vocab_size);
  if (p.sampling.logit_bias)
    for (const auto& [id, bias] : *p.sampling.logit_bias)
      if (id >= vocab_size)
        fail_param("logit_bias", "token id {} is out of range for vocab size {}", id, vocab_size);
  if (p.allowed_token_ids)
    for (int32_t id : *p.allowed_token_ids)
      if (id >= vocab_size)
        fail_param("allowed_token_ids", "token id {} is out of range for vocab size {}", id, vocab_size);
}

ojson parse_body(const std::string& body) {
  check_json_shape(body);  // linear; what passes it parses in time linear in the body too
  ojson j = ojson::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw ApiError("the request body is not valid JSON", ErrorKind::kInvalid);
  if (!j.is_object()) throw ApiError("the request body must be a JSON object", ErrorKind::kInvalid);
  return j;
}

CompletionRequest parse_completion_request(const ojson& b) {
  CompletionRequest r;
  parse_common(b, r, /*chat=*/false);
  if (const ojson* v = field(b, "logprobs")) {
    if (v->is_boolean()) fail_param("logprobs", "'logprobs' must be an integer for completions");
    int64_t k = get_int(*v, "logprobs");
    if (k < 0 || k > limits::kMaxLogprobs)
      fail_param("logprobs", "logprobs must be between 0 and {}, got {}", limits::kMaxLogprobs, k);
    r.logprobs = static_cast<int>(k);
  }
  if (const ojson* v = field(b, "add_special_tokens")) r.add_special_tokens = get_bool(*v, "add_special_tokens");
  const ojson* pr = field(b, "prompt");
  if (!pr) fail_param("prompt", "'prompt' is required");
  if (pr->is_string()) {
    r.prompts.push_back({pr->get<std::string>(), {}});
  } else if (pr->is_array()) {
    if (pr->empty()) fail_param("prompt", "the prompt is empty");
    const ojson& first = (*pr)[0];
    if (first.is_number()) {
      r.prompts.push_back({std::nullopt, get_token_ids(*pr, "prompt")});
    } else if (first.is_string() || first.is_array()) {
      // A batch: strings or lists of ids, never mixed (OpenAI's and vLLM's prompt types).
      for (const auto& x : *pr) {
        if (first.is_string() && x.is_string()) r.prompts.push_back({x.get<std::string>(), {}});
        else if (first.is_array() && x.is_array()) r.prompts.push_back({std::nullopt, get_token_ids(x, "prompt")});
        else fail_param("prompt", "a list of prompts must hold only strings or only lists of token ids");
      }
    } else {
      fail_param("prompt", "'prompt' must be a string, a list of token ids, or a list of strings or of token id lists");
    }
  } else {
    fail_param("prompt", "'prompt' must be a string or a list of token ids, got {}", json_type(*pr));
  }
  for (const auto& p : r.prompts)
    if ((p.text && p.text->empty()) || (!p.text && p.ids.empty())) fail_param("prompt", "the prompt is empty");
  if (static_cast<int64_t>(r.prompts.size()) * r.n > limits::kMaxChoices)
    fail_param("prompt", "{} prompts with n = {} make {} choices; at most {} are allowed", r.prompts.size(), r.n,
               r.prompts.size() * static_cast<size_t>(r.n), limits::kMaxChoices);
  // echo with logprobs shows the prompt tokens' logprobs too (vLLM: prompt_logprobs = logprobs).
  if (r.echo && r.logprobs >= 0 && r.prompt_logprobs < 0) r.prompt_logprobs = r.logprobs;
  return r;
}

ChatRequest parse_chat_request(const ojson& b) {
  ChatRequest r;
  parse_common(b, r, /*chat=*/true);
  bool want_logprobs = false;
  if (const ojson* v = field(b, "logprobs")) want_logprobs = get_bool(*v, "logprobs");
  if (const ojson* v = field(b, "top_logprobs")) {
    int64_t k = get_int(*v, "top_logprobs");
    if (k < 0 || k > limits::kMaxLogprobs)
      fail_param("top_logprobs", "top_logprobs must be between 0 and {}, got {}", limits::kMaxLogprobs, k);
    if (!want_logprobs) fail_param("top_logprobs", "when using `top_logprobs`, `logprobs` must be set to true");
    r.logprobs = static_cast<int>(k);
  } else if (want_logprobs) {
    r.logprobs = 0;
  }
  const ojson* m = field(b, "messages");
  if (!m) fail_param("messages", "'messages' is required");
  if (!m->is_array()) fail_param("messages", "'messages' must be a list, got {}", json_type(*m));
  if (m->empty()) fail_param("messages", "'messages' must not be empty");
  r.messages = *m;
  for (size_t i = 0; i < r.messages.size(); ++i) check_message(r.messages[i], i);
  if (const ojson* v = field(b, "tools")) {
    if (!v->is_array()) fail_param("tools", "'tools' must be a list");
    if (!v->empty()) r.tools = *v;
  }
  if (const ojson* v = field(b, "chat_template_kwargs")) {
    if (!v->is_object()) fail_param("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    r.chat_template_kwargs = *v;
  }
  if (const ojson* v = field(b, "documents")) {
    // Handed to the template as `documents` (RAG templates read it), as vLLM does.
    if (!v->is_array()) fail_param("documents", "'documents' must be a list of objects");
    for (const auto& d : *v)
      if (!d.is_object()) fail_param("documents", "'documents' must be a list of objects, got a {}", json_type(d));
    r.chat_template_kwargs["documents"] = *v;
  }
  if (const ojson* v = field(b, "reasoning_effort")) {
    // Passed to the template, as vLLM does (gpt-oss style templates read it).
    const std::string e = get_string(*v, "reasoning_effort");
    if (e != "low" && e != "medium" && e != "high")
      fail_param("reasoning_effort", "reasoning_effort must be one of low, medium, high, got '{}'", e);
    if (!r.chat_template_kwargs.contains("reasoning_effort")) r.chat_template_kwargs["reasoning_effort"] = e;
  }
  if (const ojson* v = field(b, "include_reasoning")) get_bool(*v, "include_reasoning");  // no reasoning parser
  const ojson* agp = field(b, "add_generation_prompt");
  if (agp) r.add_generation_prompt = get_bool(*agp, "add_generation_prompt");
  if (const ojson* v = field(b, "continue_final_message")) r.continue_final_message = get_bool(*v, "continue_final_message");
  if (r.continue_final_message) {
    if (agp && r.add_generation_prompt)
      fail_param("continue_final_message", "Cannot set both `continue_final_message` and `add_generation_prompt` to True.");
    r.add_generation_prompt = false;
    const ojson& last = r.messages.back();
    if (last["role"] != "assistant")
      fail_param("continue_final_message", "continue_final_message needs the last message to be an assistant message, "
                 "got role '{}'", last["role"].get<std::string>());
    if (!last.contains("content") || !last["content"].is_string() || last["content"].get_ref<const std::string&>().empty())
      fail_param("continue_final_message", "continue_final_message needs the last message to have text content");
  }
  if (const ojson* v = field(b, "add_special_tokens")) r.add_special_tokens = get_bool(*v, "add_special_tokens");
  if (const ojson* v = field(b, "chat_template")) {
    r.chat_template = get_string(*v, "chat_template");
    if (r.chat_template->empty()) fail_param("chat_template", "'chat_template' must not be empty");
  }
  r.tool_choice = parse_tool_choice(b, r.tools);
  if (const ojson* v = field(b, "parallel_tool_calls")) r.parallel_tool_calls = get_bool(*v, "parallel_tool_calls");
  return r;
}

std::vector<sched::Request> make_engine_requests(const GenerateParams& p, std::vector<int32_t> prompt,
                                                 const std::string& adapter, int64_t max_model_len,
                                                 int default_max_tokens,
                                                 std::shared_ptr<const std::vector<std::vector<int32_t>>> bad_words) {
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt == 0) fail_param("prompt", "the prompt is empty");
  if (n_prompt >= max_model_len)
    throw ApiError(fmt::format("This model's maximum context length is {} tokens. However, your request has {} input "
                               "tokens. Please reduce the length of the input messages.",
                               max_model_len, n_prompt),
                   ErrorKind::kInvalid, "messages", "context_length_exceeded");
  int64_t left = max_model_len - n_prompt;
  int64_t max_tokens;
  if (p.max_tokens) {
    max_tokens = *p.max_tokens;
    if (max_tokens > left)
      throw ApiError(fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                                 "({} in the messages, {} in the completion). Please reduce the length of the "
                                 "messages or completion.",
                                 max_model_len, n_prompt + max_tokens, n_prompt, max_tokens),
                     ErrorKind::kInvalid, "max_tokens", "context_length_exceeded");
    if (max_tokens == 0) max_tokens = 1;  // echo only: one token is generated and dropped, as vLLM
  } else {
    max_tokens = default_max_tokens < 0 ? left : std::min<int64_t>(default_max_tokens, left);
  }
  if (p.min_tokens > max_tokens)
    fail_param("min_tokens", "min_tokens must be less than or equal to max_tokens={}, got {}", max_tokens,
               p.min_tokens);
  sched::Request base;
  base.prompt = std::move(prompt);
  base.adapter = adapter;
  base.sampling = p.sampling;
  base.max_tokens = static_cast<int>(max_tokens);
  base.ignore_eos = p.ignore_eos;
  base.stop_token_ids = p.stop_token_ids;
  if (!p.stop.empty()) base.stop = std::make_shared<const std::vector<std::string>>(p.stop);
  base.include_stop_str_in_output = p.include_stop_str_in_output;
  base.skip_special_tokens = p.skip_special_tokens;
  base.logprobs = p.logprobs;
  base.min_tokens = p.min_tokens;
  if (p.allowed_token_ids)
    base.allowed_token_ids = std::make_shared<const std::vector<int32_t>>(*p.allowed_token_ids);
  base.bad_words = std::move(bad_words);
  base.prompt_logprobs = p.prompt_logprobs;
  base.cache_salt = p.cache_salt;
  std::vector<sched::Request> out(p.n, base);
  if (p.sampling.seed)
    for (int i = 0; i < p.n; ++i)
      out[i].sampling.seed = *p.sampling.seed + static_cast<uint64_t>(i);  // mod 2^64
  return out;
}

}  // namespace lp::server
