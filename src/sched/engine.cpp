#include "sched/engine.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <set>

#include "core/check.h"
#include "core/clock.h"
#include "core/log.h"
#include "kv/kv_cache.h"
#include "lora/adapter_manager.h"
#include "model/model.h"
#include "sched/output_text.h"
#include "text/tokenizer.h"

namespace lp::sched {

namespace {

// A request inside the engine (engine thread only, except `channel` which is shared with the caller).
struct Seq {
  uint64_t id = 0;  // arrival order
  Request req;
  std::weak_ptr<RequestChannel> channel;
  std::vector<int32_t> tokens;  // prompt + generated
  int prompt_len = 0;
  int generated = 0;
  int64_t computed = 0;  // tokens whose K/V are in the cache
  kv::SeqBlocks blocks;
  int32_t slot = -1;     // adapter slot held while running, -1 none
  uint64_t adapter_key = 0;      // adapter registration id for prefix-cache hashes (0 = base model)
  std::vector<uint64_t> hashes;  // hashes of the full blocks of `tokens` known so far
  size_t registered = 0;         // blocks of the table registered in the prefix cache
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<OutputText> text;
  double blocked_since = 0;  // when admission first failed for it (0: never)
  bool first_token_sent = false;
};

}  // namespace

struct Engine::Impl {
  Impl(model::Model& m, const text::Tokenizer& t, lora::AdapterManager* a, const EngineConfig& c);

  void loop();
  void step();
  void admit(int64_t& budget, std::vector<std::pair<Seq*, int64_t>>& sched);
  bool reserve(Seq& s, int64_t n_tokens);
  uint64_t hash_of_block(Seq& s, size_t i);
  bool match_prefix(Seq& s);
  void register_full_blocks(Seq& s);
  void preempt(Seq& s);
  void finish(Seq& s, FinishReason why, const std::string& error = "");
  void free_resources(Seq& s);
  void handle_logits(Seq& s, const float* logits);
  void publish_stats();
  bool is_aborted(const Seq& s) const;

  model::Model& model;
  const text::Tokenizer& tok;
  lora::AdapterManager* adapters;
  EngineConfig cfg;
  ComputePool pool;
  std::unique_ptr<kv::KvCache> cache;
  int64_t max_len = 0;  // context cap: the model's, and no more than the whole KV cache holds
  std::vector<int32_t> eos_ids;

  // Submission queue: guarded by mu. Everything below `running` is engine-thread only.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Seq>> incoming;
  bool stopping = false;   // no new submissions
  bool quit = false;       // thread must exit
  uint64_t next_id = 0;
  std::atomic<int> queued{0};  // waiting + incoming, for the admission limit

  std::list<std::unique_ptr<Seq>> waiting;  // FIFO by arrival (preempted requests go back to the front)
  std::vector<std::unique_ptr<Seq>> running;
  model::Batch batch;
  Buffer<float> logits;
  std::vector<float> scratch_row;

  // Stats: written by the engine thread, read by any thread under stats_mu.
  mutable std::mutex stats_mu;
  EngineStats stats;
  int64_t prompt_tokens_total = 0, generation_tokens_total = 0, preemptions_total = 0;
  int64_t prefix_hit_tokens = 0, prefix_queried_tokens = 0;

  std::thread thread;
};

Engine::Impl::Impl(model::Model& m, const text::Tokenizer& t, lora::AdapterManager* a, const EngineConfig& c)
    : model(m), tok(t), adapters(a), cfg(c), pool(c.threads) {
  const auto& mc = model.config();
  int64_t kv_tokens = cfg.kv_cache_tokens;
  if (kv_tokens <= 0) {
    // Default: room for max_num_seqs sequences of 2048 tokens, at most 1 GiB of KV.
    int64_t per_token = model.kv_shape(cfg.block_size, cfg.kv_cache_dtype).bytes_per_token();
    kv_tokens = std::min<int64_t>(int64_t{cfg.max_num_seqs} * std::min<int64_t>(2048, mc.max_model_len),
                                  (int64_t{1} << 30) / per_token);
  }
  int blocks = static_cast<int>((kv_tokens + cfg.block_size - 1) / cfg.block_size);
  cache = std::make_unique<kv::KvCache>(model.kv_shape(cfg.block_size, cfg.kv_cache_dtype), blocks);
  // A sequence longer than the cache could never run, even alone: it would preempt itself forever.
  max_len = std::min<int64_t>(mc.max_model_len, int64_t{blocks} * cfg.block_size);
  if (max_len < mc.max_model_len)
    log_info("engine: context capped at {} tokens (the KV cache), model allows {}", max_len, mc.max_model_len);
  eos_ids = mc.eos_token_ids;
  if (auto e = tok.eos_id(); e && std::find(eos_ids.begin(), eos_ids.end(), *e) == eos_ids.end()) eos_ids.push_back(*e);
  stats.kv_blocks_total = blocks;
  stats.max_loras = adapters ? adapters->max_loras() : 0;
  log_info("engine: KV cache {} blocks x {} tokens, {} ({:.1f} MB), max_num_seqs {}, max_num_batched_tokens {}",
           blocks, cfg.block_size, dtype_name(cache->shape().dtype), cache->bytes() / 1e6, cfg.max_num_seqs,
           cfg.max_num_batched_tokens);
}

bool Engine::Impl::is_aborted(const Seq& s) const {
  auto ch = s.channel.lock();
  return !ch || ch->aborted();
}

void Engine::Impl::free_resources(Seq& s) {
  s.blocks.release(cache->allocator());
  s.computed = 0;
  s.registered = 0;
  if (s.slot >= 0) {
    adapters->release(s.slot);
    s.slot = -1;
  }
}

void Engine::Impl::finish(Seq& s, FinishReason why, const std::string& error) {
  Output out;
  if (s.text && why != FinishReason::kError && why != FinishReason::kAbort) out.text = s.text->finish();
  out.finish = why;
  out.error = error;
  out.prompt_tokens = s.prompt_len;
  out.completion_tokens = s.generated;
  free_resources(s);  // before the push: a client that has its answer sees the KV and the hold already freed
  if (auto ch = s.channel.lock()) ch->push(std::move(out));
}

void Engine::Impl::preempt(Seq& s) {
  // Recompute later: drop the KV and the adapter hold, keep tokens, sampler and text state.
  free_resources(s);
  s.blocked_since = 0;
  ++preemptions_total;
}

bool Engine::Impl::reserve(Seq& s, int64_t n_tokens) {
  return s.blocks.reserve(cache->allocator(), cfg.block_size, n_tokens);
}

uint64_t Engine::Impl::hash_of_block(Seq& s, size_t i) {
  const size_t bs = static_cast<size_t>(cfg.block_size);
  while (s.hashes.size() <= i) {
    size_t j = s.hashes.size();
    LP_CHECK((j + 1) * bs <= s.tokens.size());
    s.hashes.push_back(kv::block_hash(j ? s.hashes[j - 1] : 0, s.adapter_key,
                                      std::span<const int32_t>(s.tokens.data() + j * bs, bs)));
  }
  return s.hashes[i];
}

// A sequence starting from nothing adopts the cached blocks of its longest cached prefix (whole blocks, and
// never its last token: that one must be computed to get logits). Returns whether it looked.
bool Engine::Impl::match_prefix(Seq& s) {
  if (!cfg.enable_prefix_caching || s.computed != 0 || !s.blocks.table().empty()) return false;
  const size_t full = (s.tokens.size() - 1) / static_cast<size_t>(cfg.block_size);
  size_t i = 0;
  for (; i < full; ++i) {
    int32_t b = cache->allocator().lookup(hash_of_block(s, i));
    if (b < 0) break;
    s.blocks.adopt(b);
  }
  s.computed = static_cast<int64_t>(i) * cfg.block_size;
  s.registered = i;
  return true;
}

// After a step: blocks that are now full and computed become findable by later sequences.
void Engine::Impl::register_full_blocks(Seq& s) {
  if (!cfg.enable_prefix_caching) return;
  const auto& table = s.blocks.table();
  while ((s.registered + 1) * static_cast<size_t>(cfg.block_size) <= static_cast<size_t>(s.computed) &&
         s.registered < table.size()) {
    cache->allocator().set_hash(table[s.registered], hash_of_block(s, s.registered));
    ++s.registered;
  }
}

// Admits waiting requests while the step has token budget, sequences and KV blocks left. A request whose
// adapter is loading, or has no free slot, waits without blocking the others behind it, unless it has waited
// longer than the fairness bound: then nobody behind it is admitted until it is.
void Engine::Impl::admit(int64_t& budget, std::vector<std::pair<Seq*, int64_t>>& sched) {
  constexpr double kFairnessBoundS = 2.0;
  const double now = now_seconds();
  for (auto it = waiting.begin(); it != waiting.end() && budget > 0;) {
    if (static_cast<int>(running.size()) >= cfg.max_num_seqs) break;
    Seq& s = **it;
    bool starving = s.blocked_since > 0 && now - s.blocked_since > kFairnessBoundS;
    if (!s.req.adapter.empty()) {
      LP_CHECK(adapters != nullptr);
      auto a = adapters->acquire(s.req.adapter);
      using St = lora::AdapterManager::Status;
      if (a.status == St::kFailed || a.status == St::kUnknown) {
        finish(s, FinishReason::kError,
               a.status == St::kUnknown ? fmt::format("adapter '{}' is not registered", s.req.adapter) : a.error);
        it = waiting.erase(it);
        --queued;
        continue;
      }
      if (a.status != St::kReady) {
        if (s.blocked_since == 0) s.blocked_since = now;
        if (starving) break;  // fairness: hold the line for it
        ++it;
        continue;
      }
      s.slot = a.slot;
      if (s.adapter_key != a.id) {  // first admission, or the name was registered again since
        s.adapter_key = a.id;
        s.hashes.clear();
      }
    }
    // KV for the known sequence (a preempted request recomputes its generated tokens too), minus the
    // blocks found in the prefix cache.
    const bool looked = match_prefix(s);
    int64_t chunk = std::min<int64_t>(budget, static_cast<int64_t>(s.tokens.size()) - s.computed);
    if (!reserve(s, s.computed + chunk)) {
      free_resources(s);
      if (s.blocked_since == 0) s.blocked_since = now;
      break;  // out of KV: nobody else fits either
    }
    if (looked) {  // counted once per admission, not per attempt
      prefix_hit_tokens += s.computed;
      prefix_queried_tokens += static_cast<int64_t>(s.tokens.size());
    }
    s.blocked_since = 0;
    budget -= chunk;
    sched.emplace_back(&s, chunk);
    running.push_back(std::move(*it));
    it = waiting.erase(it);
    --queued;
  }
}

void Engine::Impl::step() {
  // 1. Take new submissions.
  {
    std::lock_guard<std::mutex> lock(mu);
    while (!incoming.empty()) {
      waiting.push_back(std::move(incoming.front()));
      incoming.pop_front();
    }
  }
  if (adapters) adapters->poll();
  // 2. Drop aborted requests (client gone).
  for (auto it = waiting.begin(); it != waiting.end();) {
    if (is_aborted(**it)) {
      finish(**it, FinishReason::kAbort);
      it = waiting.erase(it);
      --queued;
    } else {
      ++it;
    }
  }
  for (size_t i = 0; i < running.size();) {
    if (is_aborted(*running[i])) {
      finish(*running[i], FinishReason::kAbort);
      running.erase(running.begin() + static_cast<long>(i));
    } else {
      ++i;
    }
  }
  // 3. Running requests first: decode tokens, then the rest of chunked prefills. Out of KV: preempt the
  //    newest running request (recompute later) until the older ones fit.
  int64_t budget = cfg.max_num_batched_tokens;
  std::vector<std::pair<Seq*, int64_t>> sched;
  std::sort(running.begin(), running.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  for (size_t i = 0; i < running.size() && budget > 0; ++i) {
    Seq& s = *running[i];
    int64_t chunk = std::min<int64_t>(budget, static_cast<int64_t>(s.tokens.size()) - s.computed);
    if (chunk <= 0) continue;
    while (!reserve(s, s.computed + chunk)) {
      Seq& victim = *running.back();
      preempt(victim);
      waiting.push_front(std::move(running.back()));
      ++queued;
      running.pop_back();
      if (&victim == &s) break;
    }
    if (i >= running.size()) break;  // s itself was preempted
    budget -= chunk;
    sched.emplace_back(&s, chunk);
  }
  // 4. Admit waiting requests with what is left (also while shutting down: they were accepted).
  admit(budget, sched);
  if (sched.empty()) return;

  // 5. One flat batch.
  batch.clear();
  bool any_lora = false;
  for (auto& [s, chunk] : sched) any_lora |= s->slot >= 0;
  std::vector<Seq*> with_logits;
  for (auto& [s, chunk] : sched) {
    kernels::AttnSeq as;
    as.q_begin = static_cast<int32_t>(batch.tokens.size());
    as.q_len = static_cast<int32_t>(chunk);
    as.ctx_len = static_cast<int32_t>(s->computed + chunk);
    as.block_table = s->blocks.table().data();
    batch.seqs.push_back(as);
    for (int64_t i = 0; i < chunk; ++i) {
      int64_t pos = s->computed + i;
      batch.tokens.push_back(s->tokens[pos]);
      batch.positions.push_back(static_cast<int32_t>(pos));
      batch.slots.push_back(s->blocks.slot(pos, cfg.block_size));
      if (any_lora) batch.lora_slots.push_back(s->slot);
    }
    s->computed += chunk;
    if (s->computed == static_cast<int64_t>(s->tokens.size())) {
      batch.logit_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
      with_logits.push_back(s);
    }
  }
  const int V = model.config().vocab_size;
  logits.resize(with_logits.size() * static_cast<size_t>(V));
  model.forward(pool, batch, *cache, logits.data(), any_lora && adapters ? &adapters->view() : nullptr);

  // 6. Register newly full blocks, sample, stream, retire.
  for (auto& [s, chunk] : sched) register_full_blocks(*s);
  for (size_t i = 0; i < with_logits.size(); ++i) handle_logits(*with_logits[i], logits.data() + i * V);
  for (size_t i = 0; i < running.size();) {
    if (running[i]->sampler == nullptr) {  // finished (handle_logits clears the sampler)
      running.erase(running.begin() + static_cast<long>(i));
    } else {
      ++i;
    }
  }
}

void Engine::Impl::handle_logits(Seq& s, const float* row) {
  const int V = model.config().vocab_size;
  if (s.generated == 0 && !s.first_token_sent) prompt_tokens_total += s.prompt_len;
  scratch_row.assign(row, row + V);
  Output out;
  if (s.req.logprobs >= 0) {
    std::vector<float> lp;
    Sampler::log_softmax(scratch_row, lp);
    TokenLogprob tl;
    // The chosen token is filled in below; alternatives are the top-k of the model's distribution.
    int k = std::min(s.req.logprobs, V);
    std::vector<int32_t> idx(V);
    for (int i = 0; i < V; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
    for (int i = 0; i < k; ++i) tl.top.emplace_back(idx[i], lp[idx[i]]);
    out.logprobs.push_back(std::move(tl));
    std::span<const int32_t> prompt(s.tokens.data(), s.prompt_len);
    int32_t tok_id = s.sampler->sample(scratch_row, prompt);
    out.logprobs.back().token = tok_id;
    out.logprobs.back().logprob = lp[tok_id];
    out.tokens.push_back(tok_id);
  } else {
    std::span<const int32_t> prompt(s.tokens.data(), s.prompt_len);
    out.tokens.push_back(s.sampler->sample(scratch_row, prompt));
  }
  const int32_t t = out.tokens.back();
  s.sampler->accept(t);
  s.tokens.push_back(t);
  ++s.generated;
  ++generation_tokens_total;

  FinishReason why = FinishReason::kNone;
  bool is_eos = std::find(eos_ids.begin(), eos_ids.end(), t) != eos_ids.end();
  bool is_stop_id = std::find(s.req.stop_token_ids.begin(), s.req.stop_token_ids.end(), t) != s.req.stop_token_ids.end();
  if ((is_eos && !s.req.ignore_eos) || is_stop_id) {
    why = FinishReason::kStop;  // the stop token itself is not rendered as text
  } else {
    bool stopped = false;
    out.text = s.text->add(t, &stopped);
    if (stopped) why = FinishReason::kStop;
  }
  if (why == FinishReason::kNone &&
      (s.generated >= s.req.max_tokens || static_cast<int64_t>(s.tokens.size()) >= max_len))
    why = FinishReason::kLength;
  out.prompt_tokens = s.prompt_len;
  out.completion_tokens = s.generated;
  s.first_token_sent = true;
  if (why != FinishReason::kNone) {
    out.text += s.text->finish();
    out.finish = why;
    s.text.reset();
  }
  if (why != FinishReason::kNone) {
    free_resources(s);  // before the push, as in finish()
    s.sampler.reset();  // marks it finished for the step's sweep
  }
  if (auto ch = s.channel.lock()) ch->push(std::move(out));
}

void Engine::Impl::publish_stats() {
  EngineStats st;
  st.running = static_cast<int>(running.size());
  st.waiting = queued.load();
  st.kv_blocks_total = cache->num_blocks();
  st.kv_usage = cache->num_blocks() ? 1.0 - static_cast<double>(cache->allocator().num_free()) / cache->num_blocks() : 0;
  st.prompt_tokens_total = prompt_tokens_total;
  st.generation_tokens_total = generation_tokens_total;
  st.preemptions_total = preemptions_total;
  st.prefix_cache_hit_tokens = prefix_hit_tokens;
  st.prefix_cache_queried_tokens = prefix_queried_tokens;
  std::set<std::string> ra, wa;
  for (const auto& s : running)
    if (!s->req.adapter.empty()) ra.insert(s->req.adapter);
  for (const auto& s : waiting)
    if (!s->req.adapter.empty()) wa.insert(s->req.adapter);
  st.running_adapters.assign(ra.begin(), ra.end());
  st.waiting_adapters.assign(wa.begin(), wa.end());
  st.max_loras = adapters ? adapters->max_loras() : 0;
  std::lock_guard<std::mutex> lock(stats_mu);
  stats = std::move(st);
}

void Engine::Impl::loop() {
  publish_stats();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      bool idle = running.empty() && waiting.empty();
      if (idle) {
        cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return quit || !incoming.empty(); });
      }
      if (quit) break;
    }
    bool had_work = !running.empty() || !waiting.empty();
    step();
    publish_stats();
    // Only waiting requests, all blocked on adapter loads: don't spin.
    if (had_work && running.empty() && !waiting.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& s : running) finish(*s, FinishReason::kAbort);
  for (auto& s : waiting) finish(*s, FinishReason::kAbort);
  running.clear();
  waiting.clear();
  std::lock_guard<std::mutex> lock(mu);
  for (auto& s : incoming) {
    if (auto ch = s->channel.lock()) {
      Output o;
      o.finish = FinishReason::kAbort;
      ch->push(std::move(o));
    }
  }
  incoming.clear();
}

Engine::Engine(model::Model& m, const text::Tokenizer& t, lora::AdapterManager* a, const EngineConfig& c)
    : impl_(std::make_unique<Impl>(m, t, a, c)) {}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    impl_->quit = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Engine::start() {
  LP_CHECK(!impl_->thread.joinable(), "engine already started");
  impl_->thread = std::thread([this] { impl_->loop(); });
}

void Engine::shutdown(std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  double deadline = now_seconds() + timeout.count() / 1000.0;
  while (now_seconds() < deadline) {
    EngineStats st = stats();
    if (st.running == 0 && st.waiting == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->quit = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int64_t Engine::max_model_len() const { return impl_->max_len; }

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  return impl_->stats;
}

std::shared_ptr<RequestChannel> Engine::submit(Request req) {
  Impl& im = *impl_;
  const int64_t max_len = im.max_len;
  const int V = im.model.config().vocab_size;
  if (req.prompt.empty()) fail("the prompt is empty");
  for (int32_t t : req.prompt)
    if (t < 0 || t >= V) fail("token id {} is out of range for vocab size {}", t, V);
  if (static_cast<int64_t>(req.prompt.size()) >= max_len)
    fail("This model's maximum context length is {} tokens. However, your request has {} input tokens. "
         "Please reduce the length of the input messages.", max_len, req.prompt.size());
  if (req.max_tokens < 1) fail("max_tokens must be at least 1, got {}", req.max_tokens);
  req.max_tokens = static_cast<int>(std::min<int64_t>(req.max_tokens, max_len - static_cast<int64_t>(req.prompt.size())));
  if (!req.adapter.empty() && (!im.adapters || !im.adapters->is_registered(req.adapter)))
    fail_as(ErrorKind::kNotFound, "The model `{}` does not exist.", req.adapter);

  auto seq = std::make_unique<Seq>();
  auto ch = std::make_shared<RequestChannel>();
  seq->channel = ch;
  seq->tokens = req.prompt;
  seq->prompt_len = static_cast<int>(req.prompt.size());
  seq->sampler = std::make_unique<Sampler>(req.sampling);
  seq->text = std::make_unique<OutputText>(im.tok, req.skip_special_tokens, req.stop, req.include_stop_str_in_output);
  const std::string adapter = req.adapter;
  seq->req = std::move(req);
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (im.stopping) fail_as(ErrorKind::kUnavailable, "the server is shutting down");
    if (im.queued.load() >= im.cfg.max_waiting)
      fail_as(ErrorKind::kUnavailable, "too many waiting requests ({}); retry later", im.queued.load());
    seq->id = im.next_id++;
    im.incoming.push_back(std::move(seq));
    ++im.queued;
  }
  im.cv.notify_one();
  // Counted once accepted (requests refused above are not); unregistered meanwhile: admission reports it.
  if (!adapter.empty()) im.adapters->count_request(adapter);
  return ch;
}

}  // namespace lp::sched
