// POST /tokenize, POST /detokenize and GET /version, with vLLM's request and response shapes
// (TokenizeCompletionRequest / TokenizeChatRequest / TokenizeResponse / DetokenizeRequest /
// DetokenizeResponse in vLLM's protocol.py). Adapters share the base model's tokenizer, so `model` only has
// to name something servable (resolve_model, as generation does: an unknown name is a 404).
//
// The prompt form tokenizes `prompt` with add_special_tokens defaulting to true; the messages form renders
// the chat template exactly as /v1/chat/completions does (client text can never become a special token) with
// add_special_tokens defaulting to false, as vLLM's defaults per form are. Nothing here touches the engine.
#include <algorithm>
#include <span>

#include "core/version.h"
#include "server/backend.h"
#include "server/handlers.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "text/chat_prompt.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace lp::server {

namespace {

using ojson = nlohmann::ordered_json;

const ojson* present(const ojson& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

bool bool_or(const ojson& body, const char* name, bool dflt) {
  return present(body, name) ? bool_field(body, name) : dflt;
}

// The messages form: validated as a chat request is (roles, content, tools, chat_template_kwargs).
std::vector<int32_t> tokenize_messages(ServerState& st, const ojson& body) {
  if (present(body, "chat_template"))
    fail_param("chat_template",
               "a per-request chat_template is not supported on /tokenize; the model's chat "
               "template is used");
  const bool add_generation_prompt = bool_or(body, "add_generation_prompt", true);
  const bool continue_final_message = bool_or(body, "continue_final_message", false);
  if (add_generation_prompt && continue_final_message)
    fail_param("continue_final_message",
               "Cannot set both `continue_final_message` and `add_generation_prompt` to True.");
  const bool add_special_tokens = bool_or(body, "add_special_tokens", false);
  if (!st.chat_template) fail_param("messages", "this model has no chat template; use the prompt form");
  // Only the fields the chat parser shares with this request, so generation parameters are not looked at.
  ojson sub = ojson::object();
  for (const char* k : {"messages", "tools", "chat_template_kwargs"})
    if (auto it = body.find(k); it != body.end()) sub[k] = *it;
  const ChatRequest r = parse_chat_request(sub);
  const text::Tokenizer& tok = *st.tokenizer;
  const text::ChatTemplate& tmpl = *st.chat_template;
  try {
    return text::encode_chat_prompt(tmpl, tok, r.messages, add_generation_prompt, r.tools, r.chat_template_kwargs,
                                    add_special_tokens, st.options.allow_special_tokens_in_content,
                                    continue_final_message);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    if (continue_final_message) fail_param("continue_final_message", "{}", e.what());
    throw;
  }
}

}  // namespace

void handle_tokenize(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  const ojson body = parse_body(req.body);
  resolve_model(st, string_field(body, "model"));
  const text::Tokenizer& tok = *st.tokenizer;
  const ojson* prompt = present(body, "prompt");
  const ojson* messages = present(body, "messages");
  if (prompt && messages) fail_param("messages", "give either 'prompt' or 'messages', not both");
  if (!prompt && !messages) fail_param("prompt", "either 'prompt' or 'messages' is required");
  const bool return_token_strs = bool_or(body, "return_token_strs", false);

  std::vector<int32_t> ids;
  if (prompt) {
    if (!prompt->is_string()) fail_param("prompt", "'prompt' must be a string, got {}", prompt->type_name());
    for (const char* k : {"add_generation_prompt", "continue_final_message", "chat_template", "tools"})
      if (present(body, k)) fail_param(k, "'{}' applies to the messages form only", k);
    ids = tok.encode(prompt->get_ref<const std::string&>(), bool_or(body, "add_special_tokens", true));
  } else {
    ids = tokenize_messages(st, body);
  }

  ojson out = ojson::object();
  out["count"] = ids.size();
  out["max_model_len"] = st.backend->max_model_len();
  out["tokens"] = ids;
  if (return_token_strs) {
    ojson strs = ojson::array();
    for (int32_t id : ids) strs.push_back(tok.id_to_token(id).value_or(""));
    out["token_strs"] = std::move(strs);
  } else {
    out["token_strs"] = nullptr;
  }
  write_json(res, dump_json(out));
}

void handle_detokenize(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  const ojson body = parse_body(req.body);
  resolve_model(st, string_field(body, "model"));
  const ojson* tokens = present(body, "tokens");
  if (!tokens) fail_param("tokens", "'tokens' is required");
  if (!tokens->is_array())
    fail_param("tokens", "'tokens' must be a list of token ids, got {}", tokens->type_name());
  // Bounded like a prompt: no sequence the server could hold is longer than the context.
  const int64_t max_len = st.backend->max_model_len();
  if (static_cast<int64_t>(tokens->size()) > max_len)
    fail_param("tokens", "'tokens' holds {} ids, more than max_model_len ({})", tokens->size(), max_len);
  const int32_t vocab = st.tokenizer->vocab_size();
  std::vector<int32_t> ids;
  ids.reserve(tokens->size());
  for (size_t i = 0; i < tokens->size(); ++i) {
    const ojson& t = (*tokens)[i];
    if (!t.is_number_integer())
      fail_param("tokens", "tokens[{}] must be an integer, got {}", i, t.type_name());
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id >= vocab)
      fail_param("tokens", "token id {} is out of range for vocab size {}", id, vocab);
    ids.push_back(static_cast<int32_t>(id));
  }
  // As vLLM (Hugging Face's decode with its defaults): special tokens kept, and the model's
  // clean_up_tokenization_spaces setting applied.
  text::DecodeOptions opts;
  opts.clean_up_tokenization_spaces = st.tokenizer->config_clean_up_tokenization_spaces();
  ojson out = {{"prompt", st.tokenizer->decode(std::span<const int32_t>(ids), opts)}};
  write_json(res, dump_json(out));
}

std::string version_json() {
  return dump_json(ojson{{"version", std::string(version())}});
}

}  // namespace lp::server
