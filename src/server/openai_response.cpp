#include "server/openai_response.h"

#include <chrono>
#include <cmath>
#include <random>

#include "server/api_error.h"

namespace lp::server {

using ojson = nlohmann::ordered_json;

namespace {

// JSON has no -inf; vLLM reports -9999.0 for impossible tokens.
double json_logprob(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

ojson utf8_bytes(const std::string& s) {
  ojson b = ojson::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

std::string make_response_id(Api api) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = api == Api::kChat ? "chatcmpl-" : "cmpl-";
  id += fmt::format("{:016x}{:016x}", rng(), rng());
  return id;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ojson stop_reason_json(const std::variant<std::monostate, std::string, int32_t>& r) {
  if (const auto* s = std::get_if<std::string>(&r)) return *s;
  if (const auto* id = std::get_if<int32_t>(&r)) return *id;
  return nullptr;
}

ojson prompt_logprobs_json(const std::vector<int32_t>& prompt,
                           const std::vector<std::optional<sched::TokenLogprob>>& lps, const TokenText& text) {
  ojson out = ojson::array();
  for (size_t i = 0; i < lps.size(); ++i) {
    if (!lps[i]) {
      out.push_back(nullptr);
      continue;
    }
    const sched::TokenLogprob& lp = *lps[i];
    const int32_t token = i < prompt.size() ? prompt[i] : lp.token;
    ojson d = ojson::object();
    // The prompt token first, then its alternatives best first (rank = position), as vLLM orders them.
    ojson rank = lp.rank > 0 ? ojson(lp.rank) : ojson(nullptr);
    for (size_t k = 0; k < lp.top.size(); ++k)
      if (lp.top[k].first == token && rank.is_null()) rank = static_cast<int>(k + 1);
    d[std::to_string(token)] = {{"logprob", json_logprob(lp.logprob)}, {"rank", rank}, {"decoded_token", text(token)}};
    for (size_t k = 0; k < lp.top.size(); ++k) {
      const std::string key = std::to_string(lp.top[k].first);
      if (d.contains(key)) continue;
      d[key] = {{"logprob", json_logprob(lp.top[k].second)},
                {"rank", static_cast<int>(k + 1)},
                {"decoded_token", text(lp.top[k].first)}};
    }
    out.push_back(std::move(d));
  }
  return out;
}

ojson completion_logprobs(const std::vector<sched::TokenLogprob>& lps, const TokenText& text,
                          CompletionLogprobState& state, size_t null_first) {
  ojson tokens = ojson::array(), token_lps = ojson::array(), top = ojson::array(), offsets = ojson::array();
  for (size_t i = 0; i < lps.size(); ++i) {
    const auto& lp = lps[i];
    std::string t = text(lp.token);
    if (i < null_first) {
      tokens.push_back(t);
      token_lps.push_back(nullptr);
      top.push_back(nullptr);
      offsets.push_back(state.text_offset);
      state.text_offset += t.size();
      continue;
    }
    tokens.push_back(t);
    token_lps.push_back(json_logprob(lp.logprob));
    ojson alts = ojson::object();
    for (const auto& [id, l] : lp.top) alts[text(id)] = json_logprob(l);
    if (!alts.contains(t)) alts[t] = json_logprob(lp.logprob);  // the sampled token is always listed
    top.push_back(std::move(alts));
    offsets.push_back(state.text_offset);
    state.text_offset += t.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_lps)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

ojson chat_logprobs_content(const std::vector<sched::TokenLogprob>& lps, const TokenText& text, int top_k) {
  ojson content = ojson::array();
  for (const auto& lp : lps) {
    std::string t = text(lp.token);
    ojson alts = ojson::array();
    int k = 0;
    for (const auto& [id, l] : lp.top) {
      if (k++ >= top_k) break;
      std::string at = text(id);
      alts.push_back({{"token", at}, {"logprob", json_logprob(l)}, {"bytes", utf8_bytes(at)}});
    }
    content.push_back(
        {{"token", t}, {"logprob", json_logprob(lp.logprob)}, {"bytes", utf8_bytes(t)}, {"top_logprobs", std::move(alts)}});
  }
  return content;
}

ojson usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

const char* finish_reason_json(sched::FinishReason r) {
  switch (r) {
    case sched::FinishReason::kStop: return "stop";
    case sched::FinishReason::kLength: return "length";
    case sched::FinishReason::kAbort: return "abort";
    default: return "stop";
  }
}

ojson full_response(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices, int64_t prompt_tokens,
                    int logprobs, const TokenText& text) {
  ojson arr = ojson::array();
  int64_t completion_tokens = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    completion_tokens += c.completion_tokens;
    ojson lp = nullptr;
    ojson choice;
    choice["index"] = i;
    if (meta.api == Api::kChat) {
      if (logprobs >= 0) lp = {{"content", chat_logprobs_content(c.logprobs, text, logprobs)}};
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] = std::move(lp);
    } else {
      if (logprobs >= 0) {
        CompletionLogprobState st;
        lp = completion_logprobs(c.logprobs, text, st, c.logprobs_null_first);
      }
      choice["text"] = c.text;
      choice["logprobs"] = std::move(lp);
    }
    choice["finish_reason"] = finish_reason_json(c.finish);
    choice["stop_reason"] = stop_reason_json(c.stop_reason);
    if (meta.api == Api::kCompletion) choice["prompt_logprobs"] = c.prompt_logprobs;
    arr.push_back(std::move(choice));
  }
  ojson r;
  r["id"] = meta.id;
  r["object"] = meta.api == Api::kChat ? "chat.completion" : "text_completion";
  r["created"] = meta.created;
  r["model"] = meta.model;
  r["choices"] = std::move(arr);
  r["usage"] = usage_json(prompt_tokens, completion_tokens);
  if (meta.api == Api::kChat) r["prompt_logprobs"] = choices.empty() ? ojson(nullptr) : choices[0].prompt_logprobs;
  return r;
}

ojson stream_chunk(const ResponseMeta& meta, int index, const std::string& text, bool role_delta, ojson logprobs,
                   sched::FinishReason finish, bool with_usage_null, ojson stop_reason) {
  ojson choice;
  choice["index"] = index;
  if (meta.api == Api::kChat) {
    ojson delta = ojson::object();
    if (role_delta) delta["role"] = "assistant";
    if (!text.empty() || role_delta) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finish == sched::FinishReason::kNone ? ojson(nullptr) : ojson(finish_reason_json(finish));
  choice["stop_reason"] = std::move(stop_reason);
  ojson r;
  r["id"] = meta.id;
  r["object"] = meta.api == Api::kChat ? "chat.completion.chunk" : "text_completion";
  r["created"] = meta.created;
  r["model"] = meta.model;
  r["choices"] = ojson::array({std::move(choice)});
  if (with_usage_null) r["usage"] = nullptr;
  return r;
}

ojson usage_chunk(const ResponseMeta& meta, int64_t prompt_tokens, int64_t completion_tokens) {
  ojson r;
  r["id"] = meta.id;
  r["object"] = meta.api == Api::kChat ? "chat.completion.chunk" : "text_completion";
  r["created"] = meta.created;
  r["model"] = meta.model;
  r["choices"] = ojson::array();
  r["usage"] = usage_json(prompt_tokens, completion_tokens);
  return r;
}

std::string sse_event(const ojson& j) { return "data: " + dump_json(j) + "\n\n"; }
std::string sse_event(const nlohmann::json& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace lp::server
