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
#include <optional>
#include <span>
#include <variant>

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

// A template sent with a request (chat_template, behind --trust-request-chat-template) is client code: it runs
// with bounds far below the model template's (jinja/interpreter.h Limits). Work counts evaluated nodes, copied
// items and copied bytes / 16, so 5M bounds the time (tens of ms) and the bytes a render can ever allocate
// (80 MB of strings, 5M items), while a real template over a long chat needs well under 1M.
text::jinja::TemplateOptions request_template_options() {
  text::jinja::TemplateOptions o;
  o.limits.max_work = 5'000'000;
  o.limits.max_string_bytes = 4u << 20;
  o.limits.max_items = 100'000;
  o.limits.max_loop_iterations = 200'000;
  o.limits.max_call_depth = 64;
  return o;
}

// One prompt of the call (completions may send several; choice index = prompt * n + j).
struct PromptInfo {
  std::vector<int32_t> ids;
  std::string echo_text;  // echo: written before the generated text
};

// Everything both paths need once the request is validated and submitted.
struct Call {
  ServerState& st;
  ResponseMeta meta;
  GenerateParams params;
  AdapterStack adapters;  // adapters.adapter: the tenant ("" = base model)
  std::string route;      // the route `model` named ("" = none); adapters.adapter is the arm it chose
  std::vector<PromptInfo> prompts;
  bool echo_only = false;  // completions echo with max_tokens 0: the generated token is dropped
  std::shared_ptr<const std::vector<std::vector<int32_t>>> bad_words;
  std::shared_ptr<const sched::ConstraintFactory> constraint;  // structured outputs / a forced tool call; null: free
  int64_t prompt_tokens = 0;
  double t0 = 0;  // arrival
  std::vector<std::shared_ptr<sched::RequestChannel>> chans;
  TokenText token_text;    // a token in logprobs ("token_id:<id>" with return_tokens_as_token_ids)
  TokenText decoded_text;  // a token's text (prompt_logprobs' decoded_token)
  ToolSetup tools;         // chat: how `tools` / `tool_choice` shape the reply

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
  bool echo_sent = false;  // streaming: the echo chunk went out
};

// Per-choice output gathered for the non-streaming answer.
struct ChoiceRaw {
  std::string text;
  std::vector<sched::TokenLogprob> logprobs;
  std::vector<std::optional<sched::TokenLogprob>> prompt_logprobs;
  sched::FinishReason finish = sched::FinishReason::kNone;
  std::variant<std::monostate, std::string, int32_t> stop_reason;
  int64_t completion_tokens = 0;
};

// The prompt's logprobs as completion logprobs entries (echo with logprobs): the first has none (null).
std::vector<sched::TokenLogprob> echo_logprobs(const std::vector<int32_t>& prompt,
                                               const std::vector<std::optional<sched::TokenLogprob>>& plp) {
  std::vector<sched::TokenLogprob> out;
  for (size_t k = 0; k < prompt.size(); ++k) {
    sched::TokenLogprob lp;
    if (k < plp.size() && plp[k]) lp = *plp[k];
    lp.token = prompt[k];
    out.push_back(std::move(lp));
  }
  return out;
}

// The error an engine output with finish kError stands for: its kind when the engine gave one (404: the
// adapter was unregistered while the request waited; 503: no adapter slot in time), else a 500.
ApiError engine_error(const sched::Output& o) {
  std::string msg = o.error.empty() ? "generation failed" : o.error;
  if (o.error_kind) return ApiError(msg, *o.error_kind, *o.error_kind == ErrorKind::kNotFound ? "model" : "");
  return ApiError(msg, ErrorKind::kInvalid, {}, {}, 500);
}

// Records TTFT / ITL (and, with the first token, the engine's queue time) for one update carrying tokens.
// The loraplex_* TTFT is the call's (its first choice); the vllm:* series are per engine request, as vLLM
// records them per (child) request.
void record_token_latency(ServerState& st, const Call& c, ChoiceProgress& p, const sched::Output& o,
                          bool first_choice) {
  size_t n_tokens = o.tokens.size();
  if (n_tokens == 0) return;
  const Labels model = {{"model_name", st.options.served_model_name}};
  double now = now_seconds();
  if (p.last_token_time == 0) {
    if (first_choice) st.metrics.observe("loraplex_time_to_first_token_seconds", {}, now - c.t0);
    st.metrics.observe("vllm:time_to_first_token_seconds", model, now - c.t0);
    if (o.queue_time_s >= 0) st.metrics.observe("vllm:request_queue_time_seconds", model, o.queue_time_s);
    n_tokens -= 1;  // the first token has no inter-token gap
  }
  if (n_tokens > 0 && p.last_token_time > 0) {
    double per = (now - p.last_token_time) / static_cast<double>(n_tokens);
    for (size_t i = 0; i < n_tokens; ++i) {
      st.metrics.observe("loraplex_inter_token_latency_seconds", {}, per);
      st.metrics.observe("vllm:inter_token_latency_seconds", model, per);
      st.metrics.observe("vllm:time_per_output_token_seconds", model, per);
    }
  }
  p.last_token_time = now;
}

void record_finish(ServerState& st, const Call& c, FinishReason why) {
  const double e2e = now_seconds() - c.t0;
  const std::string& model_name = st.options.served_model_name;
  st.metrics.observe("loraplex_e2e_request_latency_seconds", {}, e2e);
  st.metrics.observe("vllm:e2e_request_latency_seconds", {{"model_name", model_name}}, e2e);
  st.metrics.add("loraplex_request_success_total", {{"finished_reason", finish_reason_json(why)}});
  st.metrics.add("vllm:request_success_total",
                 {{"model_name", model_name}, {"finished_reason", finish_reason_json(why)}});
}

// The call's adapter; a route's name picks an arm, sticky per `user` (its type checked by the request
// parser).
void resolve_call_target(Call& c, const std::string& model, const ojson& body) {
  auto user = body.find("user");
  ModelTarget t =
      resolve_target(c.st, model, user != body.end() && user->is_string() ? user->get<std::string>() : "");
  c.adapters = AdapterStack{std::move(t.adapter), 1.f, {}};
  c.route = std::move(t.route);
}

// The value of the x-loraplex-adapter header: the name as it is, unless a control character (a CR/LF in a
// name an operator registered) would break the response head; then none.
bool header_safe(const std::string& v) {
  for (unsigned char ch : v)
    if (ch < 0x20 || ch == 0x7f) return false;
  return true;
}

// Validates the model and turns the body into prompt tokens (c.prompts); fills everything of `c` but the
// channels.
void prepare(Call& c, Api api, const ojson& body, int* default_max_tokens) {
  ServerState& st = c.st;
  const text::Tokenizer& tok = *st.tokenizer;
  const int64_t max_len = st.backend->max_model_len();
  if (api == Api::kCompletion) {
    CompletionRequest r = parse_completion_request(body);
    resolve_call_target(c, r.model, body);
    c.adapters = resolve_adapters(st, c.adapters.adapter, r.adapters);
    const int32_t vocab = tok.vocab_size();
    for (auto& in : r.prompts) {
      PromptInfo pi;
      if (in.text) {
        pi.ids = tok.encode(*in.text, r.add_special_tokens);
        if (pi.ids.empty()) fail_param("prompt", "the prompt is empty");
      } else {
        pi.ids = std::move(in.ids);
        for (int32_t id : pi.ids)
          if (id >= vocab) fail_param("prompt", "token id {} is out of range for vocab size {}", id, vocab);
      }
      const size_t before = pi.ids.size();
      truncate_prompt(r, pi.ids, max_len);
      if (r.echo) pi.echo_text = in.text && pi.ids.size() == before ? *in.text : tok.decode(pi.ids, false);
      c.prompts.push_back(std::move(pi));
    }
    c.echo_only = r.echo && r.max_tokens && *r.max_tokens == 0;
    c.params = r;
    *default_max_tokens = 16;  // OpenAI's default for completions
  } else {
    ChatRequest r = parse_chat_request(body);
    // tools validated, tool_choice checked against them and the server's flags. kNamed / kRequired: the
    // output must follow the tools' schema, a structured output like any other (vLLM does the same).
    c.tools = setup_tools(r.tools, r.tool_choice, r.parallel_tool_calls,
                          ToolFlags{st.options.enable_auto_tool_choice, st.options.tool_call_parser});
    constrain_tool_output(c.tools, r.structured);
    // vLLM's hermes and mistral parsers keep special tokens: their markers are special in some models
    // ([TOOL_CALLS] always), and a skipped marker would hide the call.
    if (c.tools.mode == ToolSetup::Mode::kAuto && c.tools.parser != ToolParserKind::kLlama3Json)
      r.skip_special_tokens = false;
    resolve_call_target(c, r.model, body);
    c.adapters = resolve_adapters(st, c.adapters.adapter, r.adapters);
    const text::ChatTemplate* tmpl = st.chat_template;
    std::optional<text::ChatTemplate> own;
    if (r.chat_template) {
      if (!st.options.trust_request_chat_template)
        fail_param("chat_template", "Chat template is passed with request, but --trust-request-chat-template is not "
                   "set. Refused request with untrusted chat template.");
      try {
        own.emplace(*r.chat_template, st.chat_template ? st.chat_template->special_tokens() : ojson::object(),
                    request_template_options());
      } catch (const Error& e) {
        fail_param("chat_template", "chat_template: {}", e.what());
      }
      tmpl = &*own;
    }
    if (!tmpl) fail_param("messages", "this model has no chat template; use /v1/completions");
    PromptInfo pi;
    try {
      pi.ids = text::encode_chat_prompt(*tmpl, tok, r.messages, r.add_generation_prompt, r.tools,
                                        r.chat_template_kwargs, r.add_special_tokens,
                                        st.options.allow_special_tokens_in_content, r.continue_final_message);
    } catch (const ApiError&) {
      throw;
    } catch (const Error& e) {
      if (own) fail_param("chat_template", "chat_template: {}", e.what());
      if (r.continue_final_message) fail_param("continue_final_message", "{}", e.what());
      throw;
    }
    truncate_prompt(r, pi.ids, max_len);
    if (r.echo) {
      // vLLM: the reply is prepended with the last message when it has the reply's role.
      const ojson& last = r.messages.back();
      auto content = last.find("content");
      if ((last["role"] == "assistant" || !r.add_generation_prompt) && content != last.end() && content->is_string())
        pi.echo_text = content->get<std::string>();
    }
    c.prompts.push_back(std::move(pi));
    c.params = r;
    *default_max_tokens = -1;  // the rest of the context
  }
  check_token_ids(c.params, tok.vocab_size());  // stop_token_ids, logit_bias keys, allowed_token_ids
  c.bad_words = bad_words_token_ids(c.params.bad_words,
                                    [&tok](const std::string& w) { return tok.encode(w, /*add_special_tokens=*/false); });
  // Structured outputs: compiled (or found in the cache) here, on the handler thread, before anything is
  // submitted; an unsupported schema is a 400 naming its field.
  c.constraint = st.structured->constraint(c.params.structured);
  c.meta.api = api;
  c.meta.id = make_response_id(api);
  c.meta.created = unix_now();
  c.meta.model = c.params.model.empty() ? st.options.served_model_name : c.params.model;
  c.prompt_tokens = 0;
  for (const auto& p : c.prompts) c.prompt_tokens += static_cast<int64_t>(p.ids.size());  // once per prompt, not per n
  const text::Tokenizer* tk = st.tokenizer;
  c.decoded_text = [tk](int32_t id) { return tk->decode(std::span<const int32_t>(&id, 1), false); };
  c.token_text = c.params.return_tokens_as_token_ids ? TokenText([](int32_t id) { return fmt::format("token_id:{}", id); })
                                                     : c.decoded_text;
}

// Every request is built (and checked against the context) before any is submitted; the channels are in
// choice order, prompt-major.
void submit_all(Call& c, int default_max_tokens) {
  std::vector<sched::Request> all;
  for (const auto& p : c.prompts) {
    auto reqs = make_engine_requests(c.params, p.ids, c.adapters.adapter, c.st.backend->max_model_len(),
                                     default_max_tokens, c.bad_words);
    for (auto& r : reqs) {
      r.constraint = c.constraint;
      r.adapter_scale = c.adapters.scale;
      r.more_adapters = c.adapters.more;
      all.push_back(std::move(r));
    }
  }
  for (auto& r : all) c.chans.push_back(c.st.backend->submit(std::move(r)));  // on a throw, ~Call aborts the rest
}

// The response of one generation call, polled by the connection (see ResponseProducer).
class GenerationProducer final : public ResponseProducer {
 public:
  GenerationProducer(std::unique_ptr<Call> call, bool streaming)
      : c_(std::move(call)), in_flight_(c_->st), streaming_(streaming), prog_(c_->chans.size()),
        raw_(c_->chans.size()), last_write_(now_seconds()) {}
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
        record_token_latency(c_->st, *c_, prog_[i], *o, i == 0);
        ChoiceRaw& r = raw_[i];
        r.text += o->text;
        for (auto& lp : o->logprobs) r.logprobs.push_back(std::move(lp));
        if (!o->prompt_logprobs.empty()) r.prompt_logprobs = std::move(o->prompt_logprobs);
        r.completion_tokens = o->completion_tokens;
        if (o->finish != FinishReason::kNone) {
          r.finish = o->finish;
          r.stop_reason = o->stop_reason;
          prog_[i].done = true;
          record_finish(c_->st, *c_, o->finish);
        }
      }
    if (!all_done()) return false;
    std::vector<ChoiceResult> results(raw_.size());
    std::vector<std::vector<ToolCall>> calls(raw_.size());
    const bool completion = c_->meta.api == Api::kCompletion;
    for (size_t i = 0; i < raw_.size(); ++i) {
      ChoiceRaw& r = raw_[i];
      const PromptInfo& prompt = prompt_of(i);
      ChoiceResult& out = results[i];
      std::string text = c_->echo_only ? std::string() : std::move(r.text);
      // Tools: the generated text is split into content and calls, which are patched into the reply below.
      if (ChoiceTools* t = tools_of(i)) {
        ExtractedToolCalls e = t->whole(text);
        text = std::move(e.content);
        calls[i] = std::move(e.calls);
      }
      out.text = prompt.echo_text + text;
      if (completion && c_->params.echo && c_->params.logprobs >= 0) {
        out.logprobs = echo_logprobs(prompt.ids, r.prompt_logprobs);
        out.logprobs_null_first = 1;
      }
      if (!c_->echo_only)
        for (auto& lp : r.logprobs) out.logprobs.push_back(std::move(lp));
      out.finish = r.finish;
      out.stop_reason = r.stop_reason;
      out.completion_tokens = r.completion_tokens;
      out.prompt_logprobs = c_->params.prompt_logprobs >= 0 && !r.prompt_logprobs.empty()
                                ? prompt_logprobs_json(prompt.ids, r.prompt_logprobs, c_->decoded_text)
                                : ojson(nullptr);
    }
    ojson reply = full_response(c_->meta, results, c_->prompt_tokens, c_->params.logprobs, c_->token_text);
    for (size_t i = 0; i < results.size(); ++i)
      if (ChoiceTools* t = tools_of(i)) apply_tool_calls(reply["choices"][i], calls[i], t->finish_as_tool_calls());
    write_json(res, dump_json(reply));
    return true;
  }

  const PromptInfo& prompt_of(size_t choice) const { return c_->prompts[choice / static_cast<size_t>(c_->params.n)]; }

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
    record_token_latency(c.st, c, p, o, i == 0);
    p.completion_tokens = o.completion_tokens;
    const bool chat = c.meta.api == Api::kChat;
    const bool usage_null = c.params.include_usage;
    const int index = static_cast<int>(i);
    // continuous_usage_stats: every chunk carries this choice's usage so far (vLLM: its prompt's tokens).
    auto emit = [&](ojson chunk) {
      if (c.params.continuous_usage)
        chunk["usage"] = usage_json(static_cast<int64_t>(prompt_of(i).ids.size()), p.completion_tokens);
      out += sse_event(chunk);
    };
    if (chat && !p.role_sent) {
      emit(stream_chunk(c.meta, index, "", true, nullptr, FinishReason::kNone, usage_null));
      p.role_sent = true;
    }
    if (!p.echo_sent) {
      // echo: the prompt (completions; with logprobs, the prompt's too, the first null) or the echoed message
      // (chat) in one chunk before the first generated text, as vLLM streams it.
      p.echo_sent = true;
      const PromptInfo& prompt = prompt_of(i);
      ojson lp = nullptr;
      if (!chat && c.params.echo && c.params.logprobs >= 0)
        lp = completion_logprobs(echo_logprobs(prompt.ids, o.prompt_logprobs), c.token_text, p.lp_state, 1);
      if (!prompt.echo_text.empty() || !lp.is_null())
        emit(stream_chunk(c.meta, index, prompt.echo_text, false, std::move(lp), FinishReason::kNone, usage_null));
    }
    if (c.echo_only) {  // the one generated token is not part of the answer
      o.text.clear();
      o.logprobs.clear();
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
      ojson chunk = stream_chunk(c.meta, index, td.content, false, std::move(lp), o.finish, usage_null,
                                 o.finish == FinishReason::kNone ? ojson(nullptr) : stop_reason_json(o.stop_reason));
      add_tool_call_deltas(chunk, td.calls);
      if (o.finish != FinishReason::kNone && tools && tools->finish_as_tool_calls()) set_finish_tool_calls(chunk);
      emit(std::move(chunk));
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
  std::vector<ChoiceRaw> raw_;
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
  prepare(*call, api, body, &default_max_tokens);
  submit_all(*call, default_max_tokens);
  // Routes: which arm served the call, in a header (streaming or not) and a counter (one per call).
  if (!call->route.empty())
    st.metrics.add("loraplex_route_requests_total", {{"route", call->route}, {"adapter", call->adapters.adapter}});
  if (!call->adapters.adapter.empty() && header_safe(call->adapters.adapter))
    res.set_header("x-loraplex-adapter", call->adapters.adapter);
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
