// POST /v1/completions and POST /v1/chat/completions: parse and validate, build the prompt (chat template,
// tokenizer), submit one engine request per choice, and hand the connection a GenerationProducer that turns
// the engine's outputs into either one JSON object (when every choice is done) or SSE chunks as they arrive.
// Latency metrics are recorded here, where the client sees them: time to first token, inter-token latency
// (per token, from the gaps between updates) and end-to-end latency.
//
// Nothing here waits: the handler returns once the requests are submitted; each channel's listener wakes the
// connection, which polls the producer on its I/O strand (pops with a zero timeout). A client that goes away
// (the connection sees EOF or an error, streaming or not, or a write stalls) cancels the producer, which aborts
// every engine request of the call; the engine frees their KV blocks and adapter holds at its next step.
#include <chrono>
#include <span>

#include "core/clock.h"
#include "core/log.h"
#include "server/backend.h"
#include "server/handlers.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/tool_calls.h"
#include "text/chat_prompt.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace lp::server {

namespace {

using ojson = nlohmann::ordered_json;
using sched::FinishReason;

constexpr double kKeepAliveS = 0.25;
constexpr size_t kPollBudget = 64 << 10;

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
  ToolSetup tools;  // chat: how `tools` / `tool_choice` shape the reply

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
  std::optional<ChoiceTools> tools;  // chat with tools: this choice's tool-call state (GenerationProducer::tools_of)
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
    // tools validated, tool_choice checked against them and the server's flags. kNamed / kRequired: the
    // output must follow c.tools.schema (the constraint is attached where the engine requests are built).
    c.tools = setup_tools(r.tools, r.tool_choice, r.parallel_tool_calls,
                          ToolFlags{st.options.enable_auto_tool_choice, st.options.tool_call_parser});
    // vLLM's mistral parser keeps special tokens: [TOOL_CALLS] is one, and it marks the calls.
    if (c.tools.mode == ToolSetup::Mode::kAuto && c.tools.parser == ToolParserKind::kMistral)
      r.skip_special_tokens = false;
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

// The response of one generation call, polled by the connection (see ResponseProducer).
class GenerationProducer final : public ResponseProducer {
 public:
  GenerationProducer(std::unique_ptr<Call> call, bool streaming)
      : c_(std::move(call)), in_flight_(c_->st), streaming_(streaming), prog_(c_->chans.size()),
        results_(c_->chans.size()), last_write_(now_seconds()) {}
  ~GenerationProducer() override {
    for (auto& ch : c_->chans) ch->set_listener(nullptr);  // no wake-up may outlive the connection's strand
  }

  void start(std::function<void()> wake) noexcept override {
    for (auto& ch : c_->chans) ch->set_listener(wake);
    wake();  // outputs pushed before the listener was set
  }

  bool poll(HttpResponse& res, std::string& out) noexcept override {
    if (complete_) return true;
    try {
      complete_ = streaming_ ? poll_stream(out) : poll_whole(res);
    } catch (...) {
      // A failure building the answer: an error reply (non-streaming) or one error event (after the 200).
      ErrorReply e = error_reply(std::current_exception());
      c_->abort();
      try {
        if (streaming_) out += sse_event(e.body.is_null() ? make_error(500, "internal server error").body : e.body) +
                               kSseDone;
        else write_error(res, e);
      } catch (...) {
      }
      complete_ = true;
    }
    return complete_;
  }

  void cancel() noexcept override {
    c_->abort();
    if (complete_ || cancelled_) return;
    cancelled_ = true;
    try {
      c_->st.metrics.add("loraplex_request_aborted_total", {});
    } catch (...) {
    }
  }

 private:
  // Non-streaming: gather every choice; answer once all are done.
  bool poll_whole(HttpResponse& res) {
    for (size_t i = 0; i < prog_.size(); ++i)
      while (!prog_[i].done) {
        auto o = c_->chans[i]->pop(std::chrono::milliseconds(0));
        if (!o) break;
        if (o->finish == FinishReason::kError) throw engine_error(*o);
        record_token_latency(c_->st, *c_, prog_[i], o->tokens.size(), i == 0);
        results_[i].text += o->text;
        for (auto& lp : o->logprobs) results_[i].logprobs.push_back(std::move(lp));
        results_[i].completion_tokens = o->completion_tokens;
        if (o->prompt_tokens > 0) c_->prompt_tokens = o->prompt_tokens;
        if (o->finish != FinishReason::kNone) {
          results_[i].finish = o->finish;
          prog_[i].done = true;
          record_finish(c_->st, *c_, o->finish);
        }
      }
    if (!all_done()) return false;
    // Tools: each choice's text is split into content and calls, which are patched into the reply.
    std::vector<std::vector<ToolCall>> calls(results_.size());
    for (size_t i = 0; i < results_.size(); ++i)
      if (ChoiceTools* t = tools_of(i)) {
        ExtractedToolCalls e = t->whole(results_[i].text);
        results_[i].text = std::move(e.content);
        calls[i] = std::move(e.calls);
      }
    ojson reply = full_response(c_->meta, results_, c_->prompt_tokens, c_->params.logprobs, c_->token_text);
    for (size_t i = 0; i < results_.size(); ++i)
      if (ChoiceTools* t = tools_of(i)) apply_tool_calls(reply["choices"][i], calls[i], t->finish_as_tool_calls());
    write_json(res, dump_json(reply));
    return true;
  }

  // Streaming: every chunk ready now; the usage chunk and [DONE] once all choices are done; a keep-alive
  // comment after kKeepAliveS of silence.
  bool poll_stream(std::string& out) {
    size_t before = out.size();
    // At most ~kPollBudget per call: what is left stays in the channels until the connection has sent this
    // (it polls again after each write), so a slow reader's backlog shows up as unsent bytes and gets it cut.
    for (size_t i = 0; i < prog_.size() && !failed_; ++i)
      while (!prog_[i].done && !failed_ && out.size() - before < kPollBudget)
        if (auto o = c_->chans[i]->pop(std::chrono::milliseconds(0))) handle(i, *o, out);
        else break;
    if (out.size() - before >= kPollBudget) return false;
    bool done = all_done();
    if (done) {
      if (c_->params.include_usage && !failed_)
        out += sse_event(usage_chunk(c_->meta, c_->prompt_tokens, total_completion_tokens()));
      out += kSseDone;
    }
    double now = now_seconds();
    if (out.size() > before) last_write_ = now;
    else if (now - last_write_ >= kKeepAliveS) {
      out += kSseKeepAlive;
      last_write_ = now;
    }
    return done;
  }

  bool all_done() const {
    for (const auto& p : prog_)
      if (!p.done) return false;
    return true;
  }
  // Choice i's tool-call state, made on first use; null when the call's tools do not touch the reply.
  ChoiceTools* tools_of(size_t i) {
    if (c_->tools.mode == ToolSetup::Mode::kNone) return nullptr;
    if (!prog_[i].tools) prog_[i].tools.emplace(c_->tools);
    return &*prog_[i].tools;
  }
  int64_t total_completion_tokens() const {
    int64_t t = 0;
    for (const auto& p : prog_) t += p.completion_tokens;
    return t;
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
    // Tools: the text goes through the choice's extractor (content and tool-call deltas).
    ChoiceTools* tools = tools_of(i);
    ToolStreamDelta td;
    if (tools) td = tools->step(o.text, o.finish != FinishReason::kNone);
    else td.content = std::move(o.text);
    if (!td.empty() || !lp.is_null() || o.finish != FinishReason::kNone) {
      ojson chunk = stream_chunk(c.meta, static_cast<int>(i), td.content, false, std::move(lp), o.finish, usage_null);
      add_tool_call_deltas(chunk, td.calls);
      if (o.finish != FinishReason::kNone && tools && tools->finish_as_tool_calls()) set_finish_tool_calls(chunk);
      out += sse_event(chunk);
    }
    if (o.finish != FinishReason::kNone) {
      p.done = true;
      record_finish(c.st, c, o.finish);
    }
  }

  std::unique_ptr<Call> c_;
  InFlight in_flight_;
  const bool streaming_;
  std::vector<ChoiceProgress> prog_;
  std::vector<ChoiceResult> results_;
  double last_write_;
  bool complete_ = false;
  bool failed_ = false;
  bool cancelled_ = false;
};

void handle_generate(ServerState& st, Api api, const HttpRequest& req, HttpResponse& res) {
  auto call = std::make_unique<Call>(st);
  call->t0 = now_seconds();
  InFlight in_flight(st);
  ojson body = parse_body(req.body);
  int default_max_tokens = 16;
  std::vector<int32_t> prompt = prepare(*call, api, body, &default_max_tokens);
  submit_all(*call, std::move(prompt), default_max_tokens);
  const bool streaming = call->params.stream;
  res.producer = std::make_shared<GenerationProducer>(std::move(call), streaming);
  res.streaming = streaming;
  res.status = 200;
  if (streaming) {
    res.content_type = "text/event-stream";
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
  }
}

}  // namespace

void handle_completions(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  handle_generate(st, Api::kCompletion, req, res);
}

void handle_chat_completions(ServerState& st, const HttpRequest& req, HttpResponse& res) {
  handle_generate(st, Api::kChat, req, res);
}

}  // namespace lp::server
