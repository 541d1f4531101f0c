// POST /v1/completions and POST /v1/chat/completions: parse and validate, build the prompt (chat template,
// tokenizer), submit one engine request per choice, then either wait and answer one JSON object, or stream
// SSE chunks as outputs arrive. Latency metrics are recorded here, where the client sees them: time to first
// token, inter-token latency (per token, from the gaps between updates) and end-to-end latency.
//
// Streaming runs in cpp-httplib's chunked content provider, on the connection's thread. A client that goes
// away (a failed write, or sink.is_writable() false; a keep-alive comment is written while nothing else is,
// so a silent disconnect before the first token is noticed within ~kKeepAliveS) aborts every engine request
// of the call; the engine frees their KV blocks and adapter holds at its next step.
#include <httplib.h>

#include <chrono>
#include <span>

#include "core/clock.h"
#include "core/log.h"
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
using sched::FinishReason;

constexpr double kKeepAliveS = 0.25;

// Everything both paths need once the request is validated and submitted.
struct Call {
  ServerState& st;
  ResponseMeta meta;
  GenerateParams params;
  std::string adapter;
  int64_t prompt_tokens = 0;
  double t0 = 0;  // arrival
  std::vector<std::shared_ptr<sched::RequestChannel>> chans;
  TokenText token_text;

  Call(ServerState& s) : st(s) {}
  ~Call() { abort(); }  // a no-op for finished requests (the engine already dropped them)
  void abort() {
    for (auto& c : chans)
      if (c) c->abort();
  }
};

// Per-choice progress, shared by both paths.
struct ChoiceProgress {
  bool done = false;
  bool role_sent = false;
  int64_t completion_tokens = 0;
  double last_token_time = 0;  // 0: no token yet
  CompletionLogprobState lp_state;
};

// The error an engine output with finish kError stands for: its kind when the engine gave one (404: the
// adapter was unregistered while the request waited; 503: no adapter slot in time), else a 500.
ApiError engine_error(const sched::Output& o) {
  std::string msg = o.error.empty() ? "generation failed" : o.error;
  if (o.error_kind) return ApiError(msg, *o.error_kind, *o.error_kind == ErrorKind::kNotFound ? "model" : "");
  return ApiError(msg, ErrorKind::kInvalid, {}, {}, 500);
}

// Records TTFT / ITL for one update carrying tokens.
void record_token_latency(ServerState& st, const Call& c, ChoiceProgress& p, size_t n_tokens, bool first_choice) {
  if (n_tokens == 0) return;
  double now = now_seconds();
  if (p.last_token_time == 0) {
    if (first_choice) st.metrics.observe("loraplex_time_to_first_token_seconds", {}, now - c.t0);
    n_tokens -= 1;  // the first token has no inter-token gap
  }
  if (n_tokens > 0 && p.last_token_time > 0) {
    double per = (now - p.last_token_time) / static_cast<double>(n_tokens);
    for (size_t i = 0; i < n_tokens; ++i) st.metrics.observe("loraplex_inter_token_latency_seconds", {}, per);
  }
  p.last_token_time = now;
}

void record_finish(ServerState& st, const Call& c, FinishReason why) {
  st.metrics.observe("loraplex_e2e_request_latency_seconds", {}, now_seconds() - c.t0);
  st.metrics.add("loraplex_request_success_total", {{"finished_reason", finish_reason_json(why)}});
}

// Validates the model and turns the body into prompt tokens; fills everything of `c` but the channels.
std::vector<int32_t> prepare(Call& c, Api api, const ojson& body, int* default_max_tokens) {
  ServerState& st = c.st;
  std::vector<int32_t> prompt;
  const text::Tokenizer& tok = *st.tokenizer;
  if (api == Api::kCompletion) {
    CompletionRequest r = parse_completion_request(body);
    c.adapter = resolve_model(st, r.model);
    if (r.prompt_text) {
      prompt = tok.encode(*r.prompt_text, /*add_special_tokens=*/true);
    } else {
      prompt = std::move(r.prompt_ids);
      int32_t vocab = tok.vocab_size();
      for (int32_t id : prompt)
        if (id >= vocab) fail_param("prompt", "token id {} is out of range for vocab size {}", id, vocab);
    }
    c.params = r;
    *default_max_tokens = 16;  // OpenAI's default for completions
  } else {
    ChatRequest r = parse_chat_request(body);
    c.adapter = resolve_model(st, r.model);
    if (!st.chat_template)
      fail_param("messages", "this model has no chat template; use /v1/completions");
    prompt = text::encode_chat_prompt(*st.chat_template, tok, r.messages, r.add_generation_prompt, r.tools,
                                      r.chat_template_kwargs, r.add_special_tokens,
                                      st.options.allow_special_tokens_in_content);
    c.params = r;
    *default_max_tokens = -1;  // the rest of the context
  }
  check_token_ids(c.params, tok.vocab_size());  // stop_token_ids, logit_bias keys
  c.meta.api = api;
  c.meta.id = make_response_id(api);
  c.meta.created = unix_now();
  c.meta.model = c.params.model.empty() ? st.options.served_model_name : c.params.model;
  c.prompt_tokens = static_cast<int64_t>(prompt.size());
  const text::Tokenizer* tk = st.tokenizer;
  c.token_text = [tk](int32_t id) { return tk->decode(std::span<const int32_t>(&id, 1), false); };
  return prompt;
}

void submit_all(Call& c, std::vector<int32_t> prompt, int default_max_tokens) {
  auto reqs = make_engine_requests(c.params, std::move(prompt), c.adapter, c.st.backend->max_model_len(),
                                   default_max_tokens);
  for (auto& r : reqs) c.chans.push_back(c.st.backend->submit(std::move(r)));  // on a throw, ~Call aborts the rest
}

// Non-streaming: wait for every choice, answer one object.
void answer_blocking(Call& c, httplib::Response& res) {
  const int n = static_cast<int>(c.chans.size());
  std::vector<ChoiceResult> results(n);
  std::vector<ChoiceProgress> prog(n);
  for (int i = 0; i < n; ++i) {
    while (!prog[i].done) {
      auto o = c.chans[i]->pop(std::chrono::milliseconds(200));
      if (!o) continue;
      if (o->finish == FinishReason::kError) throw engine_error(*o);
      record_token_latency(c.st, c, prog[i], o->tokens.size(), i == 0);
      results[i].text += o->text;
      for (auto& lp : o->logprobs) results[i].logprobs.push_back(std::move(lp));
      results[i].completion_tokens = o->completion_tokens;
      if (o->prompt_tokens > 0) c.prompt_tokens = o->prompt_tokens;
      if (o->finish != FinishReason::kNone) {
        results[i].finish = o->finish;
        prog[i].done = true;
        record_finish(c.st, c, o->finish);
      }
    }
  }
  write_json(res, dump_json(full_response(c.meta, results, c.prompt_tokens, c.params.logprobs, c.token_text)));
}

// Streaming: the state the content provider carries between calls.
class StreamJob {
 public:
  StreamJob(std::unique_ptr<Call> call, ServerState& st)
      : c_(std::move(call)), in_flight_(st), prog_(c_->chans.size()), last_write_(now_seconds()) {}

  // One bounded unit of work: gather outputs (waiting up to ~100 ms), write them. false ends the response.
  // Runs outside the route wrapper (cpp-httplib calls it while writing), so nothing may escape it: an
  // exception here would end the connection thread, and the process with it.
  bool pump(httplib::DataSink& sink) noexcept {
    try {
      return pump_once(sink);
    } catch (const std::exception& e) {
      log_warn("streaming response failed: {}", e.what());
    } catch (...) {
      log_warn("streaming response failed");
    }
    return disconnected();
  }

  // Called by cpp-httplib when the response ends, however it ends.
  void release() noexcept {
    if (!tail_sent_) disconnected();
  }

 private:
  bool pump_once(httplib::DataSink& sink) {
    std::string out;
    size_t n = c_->chans.size();
    for (size_t i = 0; i < n && !failed_; ++i)
      while (!prog_[i].done && !failed_)
        if (auto o = c_->chans[i]->pop(std::chrono::milliseconds(0))) handle(i, *o, out);
        else break;
    if (out.empty() && !all_done()) {
      size_t i = first_active();
      auto wait = std::chrono::milliseconds(n == 1 ? 100 : 10);
      if (auto o = c_->chans[i]->pop(wait)) handle(i, *o, out);
    }
    if (all_done() && !tail_sent_) {
      if (c_->params.include_usage && !failed_)
        out += sse_event(usage_chunk(c_->meta, c_->prompt_tokens, total_completion_tokens()));
      out += kSseDone;
      tail_sent_ = true;
    }
    double now = now_seconds();
    if (out.empty() && now - last_write_ >= kKeepAliveS) out = kSseKeepAlive;
    if (!out.empty()) {
      if (!sink.is_writable() || !sink.write(out.data(), out.size())) return disconnected();
      last_write_ = now;
    } else if (!sink.is_writable()) {
      return disconnected();
    }
    if (tail_sent_) sink.done();
    return true;
  }

  bool all_done() const {
    for (const auto& p : prog_)
      if (!p.done) return false;
    return true;
  }
  size_t first_active() const {
    for (size_t i = 0; i < prog_.size(); ++i)
      if (!prog_[i].done) return i;
    return 0;
  }
  int64_t total_completion_tokens() const {
    int64_t t = 0;
    for (const auto& p : prog_) t += p.completion_tokens;
    return t;
  }
  bool disconnected() noexcept {
    if (!aborted_) {
      aborted_ = true;
      c_->abort();
      try {
        if (!tail_sent_) c_->st.metrics.add("loraplex_request_aborted_total", {});
      } catch (...) {
      }
    }
    return false;
  }

  void handle(size_t i, sched::Output& o, std::string& out) {
    Call& c = *c_;
    ChoiceProgress& p = prog_[i];
    if (o.finish == FinishReason::kError) {
      // An error after the 200 went out: an error event (the openai clients raise it), then [DONE].
      ErrorReply e = error_reply(std::make_exception_ptr(engine_error(o)));
      out += sse_event(e.body);
      for (auto& q : prog_) q.done = true;
      failed_ = true;
      c.abort();
      return;
    }
    record_token_latency(c.st, c, p, o.tokens.size(), i == 0);
    if (o.prompt_tokens > 0) c.prompt_tokens = o.prompt_tokens;
    p.completion_tokens = o.completion_tokens;
    const bool chat = c.meta.api == Api::kChat;
    const bool usage_null = c.params.include_usage;
    if (chat && !p.role_sent) {
      out += sse_event(stream_chunk(c.meta, static_cast<int>(i), "", true, nullptr, FinishReason::kNone, usage_null));
      p.role_sent = true;
    }
    ojson lp = nullptr;
    if (c.params.logprobs >= 0 && !o.logprobs.empty()) {
      lp = chat ? ojson{{"content", chat_logprobs_content(o.logprobs, c.token_text, c.params.logprobs)}}
                : completion_logprobs(o.logprobs, c.token_text, p.lp_state);
    }
    if (!o.text.empty() || !lp.is_null() || o.finish != FinishReason::kNone)
      out += sse_event(stream_chunk(c.meta, static_cast<int>(i), o.text, false, std::move(lp), o.finish, usage_null));
    if (o.finish != FinishReason::kNone) {
      p.done = true;
      record_finish(c.st, c, o.finish);
    }
  }

  std::unique_ptr<Call> c_;
  InFlight in_flight_;
  std::vector<ChoiceProgress> prog_;
  double last_write_;
  bool tail_sent_ = false;
  bool failed_ = false;
  bool aborted_ = false;
};

void handle_generate(ServerState& st, Api api, const httplib::Request& req, httplib::Response& res) {
  auto call = std::make_unique<Call>(st);
  call->t0 = now_seconds();
  InFlight in_flight(st);
  ojson body = parse_body(req.body);
  int default_max_tokens = 16;
  std::vector<int32_t> prompt = prepare(*call, api, body, &default_max_tokens);
  submit_all(*call, std::move(prompt), default_max_tokens);
  if (!call->params.stream) {
    answer_blocking(*call, res);
    return;
  }
  auto job = std::make_shared<StreamJob>(std::move(call), st);
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream", [job](size_t, httplib::DataSink& sink) { return job->pump(sink); },
      [job](bool) { job->release(); });
}

}  // namespace

void handle_completions(ServerState& st, const httplib::Request& req, httplib::Response& res) {
  handle_generate(st, Api::kCompletion, req, res);
}

void handle_chat_completions(ServerState& st, const httplib::Request& req, httplib::Response& res) {
  handle_generate(st, Api::kChat, req, res);
}

}  // namespace lp::server
