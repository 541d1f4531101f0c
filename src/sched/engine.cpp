#include "sched/engine.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <set>

#include "core/check.h"
#include "core/clock.h"
#include "core/log.h"
#include "kv/kv_cache.h"
#include "lora/adapter_manager.h"
#include "model/executor.h"
#include "sched/output_text.h"
#include "sched/scheduler.h"
#include "sched/seq.h"
#include "text/tokenizer.h"

namespace lp::sched {

// The mechanism half of the engine: carries out the Scheduler's decisions on the model, KV cache and adapter
// slots (SchedulerResources), samples, streams and retires.
struct Engine::Impl : SchedulerResources {
  Impl(model::Executor& m, const text::Tokenizer& t, lora::AdapterManager* a, const EngineConfig& c);

  void loop();
  void step();
  uint64_t hash_of_block(Seq& s, size_t i);
  kv::BlockIdentity identity_of_block(Seq& s, size_t i) const;
  void register_full_blocks(Seq& s);
  void finish(Seq& s, FinishReason why, const std::string& error = "", std::optional<ErrorKind> kind = {});
  void handle_logits(Seq& s, const float* logits);
  struct MaskError {
    std::string message;
    std::optional<ErrorKind> kind;
  };
  std::optional<MaskError> mask_logits(Seq& s, std::span<float> row);
  static MaskError constraint_failed(const Seq& s, const std::exception& e) {
    log(LogLevel::kError, "engine: the structured output of request {} failed: {}", s.id, e.what());
    return {fmt::format("the structured output failed: {}", e.what()), std::nullopt};
  }
  // The log-softmax normalizer of a raw logits row (kept in lp_lse) and its top k tokens.
  TokenLogprob raw_logprobs(const float* row, int k) { return top_logprobs(row, k, lp_scratch, &lp_lse); }
  // `scratch` holds a copy of the row; *lse gets the row's log-sum-exp (a token's logprob is logit - lse).
  TokenLogprob top_logprobs(const float* row, int k, std::vector<float>& scratch, float* lse) const;
  void publish_stats();
  bool is_aborted(const Seq& s) const;

  // SchedulerResources
  AdapterGrant acquire_adapter(Seq& s) override;
  bool adapter_pinned(const std::string& tenant) override;
  void adopt_prefix(Seq& s) override;
  bool reserve_kv(Seq& s, int64_t n_tokens) override;
  void release(Seq& s) override;

  model::Executor& model;
  const text::Tokenizer& tok;
  lora::AdapterManager* adapters;
  EngineConfig cfg;
  ComputePool pool;
  std::unique_ptr<kv::KvCache> cache;
  int64_t max_len = 0;  // context cap: the model's, and no more than the whole KV cache holds
  std::vector<int32_t> eos_ids;
  Scheduler scheduler;  // owns every accepted request; its place counts are thread-safe (submit)

  // Submission queue: guarded by mu. Everything below it is engine-thread only.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Seq>> incoming;
  bool stopping = false;   // no new submissions
  bool quit = false;       // thread must exit
  std::atomic<bool> drained{false};  // stopping, and the engine thread found no request left (set under mu)
  uint64_t next_id = 0;

  model::Batch batch;
  Buffer<float> logits;
  std::vector<float> scratch_row;
  std::vector<float> lp_scratch;   // raw_logprobs(): a copy of the row
  float lp_lse = 0;                // raw_logprobs(): the last row's log-sum-exp

  // Stats: written by the engine thread, read by any thread under stats_mu.
  mutable std::mutex stats_mu;
  EngineStats stats;
  KvCacheInfo kv_cache_info;  // set by the constructor, never changed
  int64_t prompt_tokens_total = 0, generation_tokens_total = 0, preemptions_total = 0;
  int64_t prefix_hit_tokens = 0, prefix_queried_tokens = 0;

  std::thread thread;
};

Engine::Impl::Impl(model::Executor& m, const text::Tokenizer& t, lora::AdapterManager* a, const EngineConfig& c)
    : model(m), tok(t), adapters(a), cfg(c), pool(c.threads), scheduler(c.sched) {
  const auto& mc = model.config();
  int64_t kv_tokens = cfg.kv_cache_tokens;
  if (kv_tokens <= 0) {
    // Default: room for max_num_seqs sequences of 2048 tokens, at most 1 GiB of KV.
    int64_t per_token = model.kv_shape(cfg.block_size, cfg.kv_cache_dtype).bytes_per_token();
    kv_tokens = std::min<int64_t>(int64_t{cfg.sched.max_num_seqs} * std::min<int64_t>(2048, mc.max_model_len),
                                  (int64_t{1} << 30) / per_token);
  }
  int blocks = static_cast<int>((kv_tokens + cfg.block_size - 1) / cfg.block_size);
  cache = model.make_kv_cache(model.kv_shape(cfg.block_size, cfg.kv_cache_dtype), blocks);
  // A sequence longer than the cache could never run, even alone: it would preempt itself forever.
  max_len = std::min<int64_t>(mc.max_model_len, int64_t{blocks} * cfg.block_size);
  if (max_len < mc.max_model_len)
    log_info("engine: context capped at {} tokens (the KV cache), model allows {}", max_len, mc.max_model_len);
  eos_ids = mc.eos_token_ids;
  if (auto e = tok.eos_id(); e && std::find(eos_ids.begin(), eos_ids.end(), *e) == eos_ids.end()) eos_ids.push_back(*e);
  stats.max_loras = adapters ? adapters->max_loras() : 0;
  // The element type the cache really holds ("bf16", "f16", "f32"), also when --kv-cache-dtype is auto.
  std::string dtype_label(dtype_name(cache->shape().dtype));
  for (auto& ch : dtype_label) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  kv_cache_info = KvCacheInfo{cfg.block_size, blocks, int64_t{blocks} * cfg.block_size, dtype_label,
                              cfg.enable_prefix_caching};
  stats.kv_cache = kv_cache_info;
  log_info("engine: KV cache {} blocks x {} tokens, {} ({:.1f} MB), max_num_seqs {}, max_num_batched_tokens {}",
           blocks, cfg.block_size, dtype_name(cache->shape().dtype), cache->bytes() / 1e6, cfg.sched.max_num_seqs,
           cfg.sched.max_num_batched_tokens);
}

bool Engine::Impl::is_aborted(const Seq& s) const {
  auto ch = s.channel.lock();
  return !ch || ch->aborted();
}

void Engine::Impl::release(Seq& s) {
  s.blocks.release(cache->allocator());
  s.computed = 0;
  s.registered = 0;
  if (s.slot >= 0) {
    adapters->release(s.slot);
    s.slot = -1;
  }
  for (int32_t slot : s.more_slots) adapters->release(slot);
  s.more_slots.clear();
}

void Engine::Impl::finish(Seq& s, FinishReason why, const std::string& error, std::optional<ErrorKind> kind) {
  Output out;
  if (s.text && why != FinishReason::kError && why != FinishReason::kAbort) out.text = s.text->finish();
  out.finish = why;
  out.error = error;
  out.error_kind = kind;
  out.prompt_tokens = s.prompt_len;
  out.completion_tokens = s.generated;
  release(s);  // before the push: a client that has its answer sees the KV and the hold already freed
  s.finished = true;
  if (auto ch = s.channel.lock()) ch->push(std::move(out));
}

AdapterGrant Engine::Impl::acquire_adapter(Seq& s) {
  LP_CHECK(adapters != nullptr, "a request for adapter '{}' without an adapter manager", s.tenant());
  using St = lora::AdapterManager::Status;
  // Every adapter of the stack gets a slot hold, or none does: holding some while waiting for the others
  // could deadlock two stacks that wait on each other's slots. Asking for each starts every load at once.
  std::vector<int32_t> held;
  std::vector<uint64_t> ids;
  AdapterGrant grant{AdapterGrant::kReady, {}, {}};
  auto take = [&](const std::string& name) {
    auto a = adapters->acquire(name);
    switch (a.status) {
      case St::kReady:
        held.push_back(a.slot);
        ids.push_back(a.id);
        return;
      case St::kLoading:
        if (grant.kind == AdapterGrant::kReady) grant.kind = AdapterGrant::kLoading;
        return;
      case St::kNoSlot:
        if (grant.kind != AdapterGrant::kFailed) grant.kind = AdapterGrant::kNoSlot;
        return;
      case St::kUnknown:
        if (grant.kind != AdapterGrant::kFailed)
          grant = {AdapterGrant::kFailed, ErrorKind::kNotFound,
                   fmt::format("The model `{}` does not exist (the adapter was unregistered).", name)};
        return;
      case St::kFailed:
        if (grant.kind != AdapterGrant::kFailed)
          grant = {AdapterGrant::kFailed, std::nullopt, fmt::format("adapter '{}' failed to load: {}", name, a.error)};
        return;
    }
  };
  take(s.tenant());
  for (const AdapterRef& r : s.req.more_adapters) take(r.name);
  if (grant.kind != AdapterGrant::kReady) {
    for (int32_t slot : held) adapters->release(slot);
    return grant;
  }
  s.slot = held[0];
  s.more_slots.assign(held.begin() + 1, held.end());
  // A plain adapter keys the prefix cache by its registration id as always; a scaled or stacked one by every
  // id and scale in order, so no other stack (or scale) shares its blocks.
  uint64_t key = ids[0];
  if (s.req.adapter_scale != 1.f || !s.req.more_adapters.empty()) {
    key = 0x6c6f7261706c6578ull;
    for (size_t i = 0; i < ids.size(); ++i) {
      const float m = i == 0 ? s.req.adapter_scale : s.req.more_adapters[i - 1].scale;
      key = mix_key(mix_key(key, ids[i]), std::bit_cast<uint32_t>(m));
    }
    key |= uint64_t{1} << 63;  // never a plain registration id
  }
  if (s.adapter_key != key) {  // first admission, or a name was registered again since
    s.adapter_key = key;
    s.hashes.clear();
  }
  return grant;
}

bool Engine::Impl::adapter_pinned(const std::string& tenant) {
  if (!adapters) return false;
  auto i = adapters->info(tenant);
  return i && i->pinned;
}

bool Engine::Impl::reserve_kv(Seq& s, int64_t n_tokens) {
  return s.blocks.reserve(cache->allocator(), cfg.block_size, n_tokens);
}

uint64_t Engine::Impl::hash_of_block(Seq& s, size_t i) {
  const size_t bs = static_cast<size_t>(cfg.block_size);
  while (s.hashes.size() <= i) {
    size_t j = s.hashes.size();
    LP_CHECK((j + 1) * bs <= s.tokens.size());
    std::span<const int32_t> toks(s.tokens.data() + j * bs, bs);
    const uint64_t prev = j ? s.hashes[j - 1] : 0;
    const uint64_t key = s.prefix_key();
    uint64_t h = cfg.block_hash ? cfg.block_hash(prev, key, toks) : kv::block_hash(prev, key, toks);
    s.hashes.push_back(h == 0 ? 1 : h);  // 0 means "no hash" to the allocator
  }
  return s.hashes[i];
}

// Block i of s as the prefix cache must find it: same adapter, same tokens, same block before it.
kv::BlockIdentity Engine::Impl::identity_of_block(Seq& s, size_t i) const {
  const size_t bs = static_cast<size_t>(cfg.block_size);
  kv::BlockIdentity id;
  id.adapter_key = s.prefix_key();
  id.parent = i ? s.blocks.table()[i - 1] : -1;
  id.tokens = std::span<const int32_t>(s.tokens.data() + i * bs, bs);
  return id;
}

// A sequence starting from nothing adopts the cached blocks of its longest cached prefix (whole blocks, and
// never its last token: that one must be computed to get logits).
// A sequence that still needs prompt_logprobs computes every position (vLLM skips the prefix cache for it).
void Engine::Impl::adopt_prefix(Seq& s) {
  if (!cfg.enable_prefix_caching || s.computed != 0 || !s.blocks.table().empty() || s.needs_prompt_rows()) return;
  const size_t full = (s.tokens.size() - 1) / static_cast<size_t>(cfg.block_size);
  size_t i = 0;
  for (; i < full; ++i) {
    int32_t b = cache->allocator().lookup(hash_of_block(s, i), identity_of_block(s, i));
    if (b < 0) break;
    s.blocks.adopt(b);
  }
  s.computed = static_cast<int64_t>(i) * cfg.block_size;
  s.registered = i;
}

// After a step: blocks that are now full and computed become findable by later sequences.
void Engine::Impl::register_full_blocks(Seq& s) {
  if (!cfg.enable_prefix_caching) return;
  const auto& table = s.blocks.table();
  while ((s.registered + 1) * static_cast<size_t>(cfg.block_size) <= static_cast<size_t>(s.computed) &&
         s.registered < table.size()) {
    cache->allocator().set_hash(table[s.registered], hash_of_block(s, s.registered),
                                identity_of_block(s, s.registered));
    ++s.registered;
  }
}

void Engine::Impl::step() {
  // 1. Take new submissions.
  {
    std::lock_guard<std::mutex> lock(mu);
    while (!incoming.empty()) {
      scheduler.enqueue(std::move(incoming.front()));
      incoming.pop_front();
    }
  }
  if (adapters) adapters->poll();
  // 2. Drop aborted requests (client gone): their KV and adapter holds are freed now.
  for (auto& s : scheduler.remove_if([this](const Seq& q) { return is_aborted(q); })) finish(*s, FinishReason::kAbort);
  // 3. The scheduler decides (running requests first, then fair admission); also while shutting down, since
  //    waiting requests were accepted.
  const double now = now_seconds();
  SchedulerOutput plan = scheduler.schedule(*this, now);
  preemptions_total += plan.preempted;
  for (auto& r : plan.rejected) finish(*r.seq, FinishReason::kError, r.error, r.kind);
  if (plan.chunks.empty()) return;

  // 4. One flat batch. Logits rows: the last position of every sequence whose prefill is done (it samples),
  //    and for prompt_logprobs every prompt position whose entry is still missing (entry = position + 1).
  batch.clear();
  bool any_lora = false;
  for (const auto& c : plan.chunks) any_lora |= c.seq->slot >= 0;
  struct RowOwner {
    Seq* seq;
    int entry;  // prompt_logprobs entry, or -1: the row to sample from
  };
  std::vector<RowOwner> rows;
  for (const auto& c : plan.chunks) {
    Seq* s = c.seq;
    const int64_t chunk = c.n_tokens;
    if (c.admitted && s->first_scheduled < 0) s->first_scheduled = now;
    if (c.admitted && !s->needs_prompt_rows()) {  // counted once per admission; prompt_logprobs skips the cache
      prefix_hit_tokens += s->computed;
      prefix_queried_tokens += static_cast<int64_t>(s->tokens.size());
    }
    const bool prompt_rows = s->needs_prompt_rows();
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
      if (any_lora) {  // a scale of 1 computes exactly what no scale does (kernels/lora.h)
        batch.lora_slots.push_back(s->slot);
        batch.lora_scales.push_back(s->req.adapter_scale);
      }
      for (size_t k = 0; k < s->more_slots.size(); ++k)
        batch.lora_more.push_back({static_cast<int32_t>(batch.tokens.size()) - 1, s->more_slots[k],
                                   s->req.more_adapters[k].scale});
      const int64_t entry = pos + 1;
      if (prompt_rows && entry >= s->prompt_lp_next && entry < s->prompt_len) {  // not again after a preemption
        batch.logit_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
        rows.push_back({s, static_cast<int>(entry)});
      }
    }
    s->computed += chunk;
    if (s->computed == static_cast<int64_t>(s->tokens.size())) {
      batch.logit_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
      rows.push_back({s, -1});
    }
  }
  const int V = model.config().vocab_size;
  logits.resize(rows.size() * static_cast<size_t>(V));
  model.forward(pool, batch, *cache, logits.data(), any_lora && adapters ? &adapters->view() : nullptr);

  // 5. Register newly full blocks, keep prompt logprobs, sample, stream, retire. A sequence's prompt rows come
  //    before its sampling row, so its entries are complete when its first token is sampled.
  for (const auto& c : plan.chunks) register_full_blocks(*c.seq);
  std::vector<size_t> prompt_rows;  // up to max_prompt_logprob_rows, each a full-vocabulary pass: in parallel
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].entry >= 0) prompt_rows.push_back(i);
  pool.parallel_for(static_cast<int64_t>(prompt_rows.size()), 1, [&](int64_t b, int64_t e) {
    std::vector<float> scratch;
    for (int64_t r = b; r < e; ++r) {
      const size_t i = prompt_rows[r];
      Seq& s = *rows[i].seq;
      const int j = rows[i].entry;
      const float* row = logits.data() + i * V;
      float lse = 0;
      TokenLogprob tl = top_logprobs(row, s.req.prompt_logprobs, scratch, &lse);
      tl.token = s.tokens[j];
      tl.logprob = row[tl.token] - lse;
      // vLLM's rank: 1 + the tokens strictly more likely than this one.
      const float own = row[tl.token];
      tl.rank = 1 + static_cast<int>(std::count_if(row, row + V, [own](float x) { return x > own; }));
      s.prompt_lp[j] = std::move(tl);  // distinct entries: no two threads write the same one
    }
  });
  for (size_t i = 0; i < rows.size(); ++i) {
    Seq& s = *rows[i].seq;
    if (rows[i].entry < 0)
      handle_logits(s, logits.data() + i * V);
    else
      s.prompt_lp_next = rows[i].entry + 1;
  }
  scheduler.take_finished();
}

TokenLogprob Engine::Impl::top_logprobs(const float* row, int k, std::vector<float>& scratch, float* lse) const {
  const std::span<const float> r(row, static_cast<size_t>(model.config().vocab_size));
  *lse = Sampler::log_sum_exp(r, scratch);
  TokenLogprob tl;
  std::vector<std::pair<int32_t, float>> best;
  Sampler::top_k(r, k, best);
  for (const auto& [id, logit] : best) tl.top.emplace_back(id, logit - *lse);
  return tl;
}

// vLLM's logits processors as -inf masks on `row` (a copy of the raw logits), before the sampler's
// logit_bias and penalties. An error when nothing is left to sample.
std::optional<Engine::Impl::MaskError> Engine::Impl::mask_logits(Seq& s, std::span<float> row) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  const Request& r = s.req;
  const auto V = static_cast<int32_t>(row.size());
  auto ban = [&](int32_t t) {
    if (t >= 0 && t < V) row[t] = kMasked;
  };
  bool masked = false;
  if (r.constraint) {
    if (!s.constraint) s.constraint = r.constraint->start();
    if (s.constraint_ended) {  // ignore_eos after the structured output ended: EOS again, nothing else
      std::vector<float> keep;
      for (int32_t e : eos_ids) keep.push_back(e >= 0 && e < V ? row[e] : kMasked);
      std::fill(row.begin(), row.end(), kMasked);
      for (size_t i = 0; i < eos_ids.size(); ++i)
        if (eos_ids[i] >= 0 && eos_ids[i] < V) row[eos_ids[i]] = keep[i];
    } else if (!s.constraint->mask(row, eos_ids)) {
      return MaskError{"the structured output allows no token here", std::nullopt};
    }
    masked = true;
  }
  if (r.allowed_token_ids) {
    auto it = r.allowed_token_ids->begin(), end = r.allowed_token_ids->end();
    for (int32_t t = 0; t < V; ++t) {
      while (it != end && *it < t) ++it;
      if (it == end || *it != t) row[t] = kMasked;
    }
    masked = true;
  }
  if (r.bad_words) {
    // vLLM's NoBadWordsLogitsProcessor: the generated tokens (not the prompt) must end with the prefix.
    std::span<const int32_t> out(s.tokens.data() + s.prompt_len, static_cast<size_t>(s.generated));
    for (const auto& w : *r.bad_words) {
      if (w.empty() || w.size() - 1 > out.size()) continue;
      if (std::equal(w.begin(), w.end() - 1, out.end() - static_cast<long>(w.size() - 1))) {
        ban(w.back());
        masked = true;
      }
    }
  }
  if (s.generated < r.min_tokens) {  // as vLLM: with ignore_eos, EOS is an ordinary token and stays
    if (!r.ignore_eos)
      for (int32_t e : eos_ids) ban(e);
    for (int32_t t : r.stop_token_ids) ban(t);
    masked = true;
  }
  if (masked && std::none_of(row.begin(), row.end(), [](float x) { return x > kMasked; }))
    return MaskError{"no token can come next: this request's structured output, allowed_token_ids, bad_words and "
                     "min_tokens together exclude every token", ErrorKind::kInvalid};
  return std::nullopt;
}

void Engine::Impl::handle_logits(Seq& s, const float* row) {
  const int V = model.config().vocab_size;
  if (s.generated == 0 && !s.first_token_sent) prompt_tokens_total += s.prompt_len;
  Output out;
  // Logprobs are the model's raw distribution (as vLLM reports them), before any mask or penalty.
  if (s.req.logprobs >= 0) out.logprobs.push_back(raw_logprobs(row, s.req.logprobs));
  scratch_row.assign(row, row + V);
  // The constraint is another layer's code working on the client's schema: a throw from it ends this request
  // (an internal error), not the engine thread.
  std::optional<MaskError> err;
  try {
    err = mask_logits(s, scratch_row);
  } catch (const std::exception& e) {
    err = constraint_failed(s, e);
  }
  if (err) {
    finish(s, FinishReason::kError, err->message, err->kind);
    return;
  }
  std::span<const int32_t> prompt(s.tokens.data(), s.prompt_len);
  const int32_t t = s.sampler->sample(scratch_row, prompt);
  if (s.req.logprobs >= 0) {
    out.logprobs.back().token = t;
    out.logprobs.back().logprob = row[t] - lp_lse;
  }
  out.tokens.push_back(t);
  s.sampler->accept(t);
  const bool is_eos = std::find(eos_ids.begin(), eos_ids.end(), t) != eos_ids.end();
  if (s.constraint && !s.constraint_ended) {
    try {
      s.constraint->accept(t);
    } catch (const std::exception& e) {
      err = constraint_failed(s, e);
    }
    if (err) {
      finish(s, FinishReason::kError, err->message, err->kind);
      return;
    }
    s.constraint_ended = is_eos;
  }
  s.tokens.push_back(t);
  ++s.generated;
  ++generation_tokens_total;

  FinishReason why = FinishReason::kNone;
  if (is_eos && !s.req.ignore_eos) {
    why = FinishReason::kStop;  // the stop token itself is not rendered as text; stop_reason stays empty
  } else if (std::find(s.req.stop_token_ids.begin(), s.req.stop_token_ids.end(), t) != s.req.stop_token_ids.end()) {
    why = FinishReason::kStop;
    out.stop_reason = t;
  } else {
    bool stopped = false;
    // vLLM checks stop strings only once more than min_tokens tokens are out (a match must end after that).
    out.text = s.text->add(t, &stopped, s.generated > s.req.min_tokens);
    if (stopped) {
      why = FinishReason::kStop;
      out.stop_reason = s.text->stop_string();
    }
  }
  if (why == FinishReason::kNone &&
      (s.generated >= s.req.max_tokens || static_cast<int64_t>(s.tokens.size()) >= max_len))
    why = FinishReason::kLength;
  out.prompt_tokens = s.prompt_len;
  out.completion_tokens = s.generated;
  if (!s.first_token_sent) out.queue_time_s = std::max(0.0, s.first_scheduled - s.arrived);
  if (s.req.prompt_logprobs >= 0 && !s.prompt_lp_sent) {  // once, in the first output
    LP_CHECK(s.prompt_lp_next == s.prompt_len, "prompt logprobs incomplete: {} of {}", s.prompt_lp_next, s.prompt_len);
    out.prompt_logprobs = std::move(s.prompt_lp);
    s.prompt_lp.clear();
    s.prompt_lp_sent = true;
  }
  s.first_token_sent = true;
  if (why != FinishReason::kNone) {
    out.text += s.text->finish();
    out.finish = why;
    s.text.reset();
  }
  if (why != FinishReason::kNone) {
    release(s);         // before the push, as in finish()
    s.finished = true;  // the scheduler retires it after this step
  }
  if (auto ch = s.channel.lock()) ch->push(std::move(out));
}

void Engine::Impl::publish_stats() {
  EngineStats st;
  st.running = static_cast<int>(scheduler.running().size());
  st.waiting = scheduler.num_waiting();
  st.kv_usage = cache->num_blocks() ? 1.0 - static_cast<double>(cache->allocator().num_free()) / cache->num_blocks() : 0;
  st.prompt_tokens_total = prompt_tokens_total;
  st.generation_tokens_total = generation_tokens_total;
  st.preemptions_total = preemptions_total;
  st.prefix_cache_hit_tokens = prefix_hit_tokens;
  st.prefix_cache_queried_tokens = prefix_queried_tokens;
  std::set<std::string> ra, wa;
  for (const auto& s : scheduler.running())
    if (!s->tenant().empty()) ra.insert(s->tenant());
  for (const auto& t : scheduler.waiting_tenants())
    if (!t.empty()) wa.insert(t);
  st.running_adapters.assign(ra.begin(), ra.end());
  st.waiting_adapters.assign(wa.begin(), wa.end());
  st.max_loras = adapters ? adapters->max_loras() : 0;
  st.kv_cache = kv_cache_info;
  std::lock_guard<std::mutex> lock(stats_mu);
  stats = std::move(st);
}

void Engine::Impl::loop() {
  publish_stats();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      bool idle = scheduler.running().empty() && !scheduler.has_waiting();
      // Drained: judged here, on the thread that owns the requests, with the submission lock held (so no
      // submission is in between); published stats could be a step old and miss a request just taken in.
      if (idle && stopping && incoming.empty()) drained.store(true);
      if (idle) {
        cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return quit || !incoming.empty() || (stopping && !drained); });
      }
      if (quit) break;
    }
    bool had_work = !scheduler.running().empty() || scheduler.has_waiting();
    step();
    publish_stats();
    // Only waiting requests, all blocked on adapter loads: don't spin.
    if (had_work && scheduler.running().empty() && scheduler.has_waiting())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& s : scheduler.remove_if([](const Seq&) { return true; })) finish(*s, FinishReason::kAbort);
  std::lock_guard<std::mutex> lock(mu);
  for (auto& s : incoming) {
    if (auto ch = s->channel.lock()) {
      Output o;
      o.finish = FinishReason::kAbort;
      ch->push(std::move(o));
    }
    scheduler.cancel_place(s->tenant());
  }
  incoming.clear();
}

Engine::Engine(model::Executor& m, const text::Tokenizer& t, lora::AdapterManager* a, const EngineConfig& c)
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
  impl_->cv.notify_all();
  double deadline = now_seconds() + timeout.count() / 1000.0;
  // Until the engine thread itself finds nothing running, waiting or submitted (or the timeout passes).
  while (now_seconds() < deadline && !(impl_->drained.load() || !impl_->thread.joinable()))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
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
  // The HTTP layer validates these with the API's field names; here only what would break the engine.
  auto in_vocab = [&](int32_t t, const char* what) {
    if (t < 0 || t >= V) fail("{} holds token id {}, out of range for vocab size {}", what, t, V);
  };
  if (req.min_tokens < 0) fail("min_tokens must be at least 0, got {}", req.min_tokens);
  if (req.allowed_token_ids) {
    if (req.allowed_token_ids->empty()) fail("allowed_token_ids is empty");
    for (int32_t t : *req.allowed_token_ids) in_vocab(t, "allowed_token_ids");
    LP_CHECK(std::is_sorted(req.allowed_token_ids->begin(), req.allowed_token_ids->end()),
             "allowed_token_ids must come sorted");
  }
  if (req.bad_words)
    for (const auto& w : *req.bad_words)
      for (int32_t t : w) in_vocab(t, "bad_words");
  req.max_tokens = static_cast<int>(std::min<int64_t>(req.max_tokens, max_len - static_cast<int64_t>(req.prompt.size())));
  if (!req.adapter.empty() && (!im.adapters || !im.adapters->is_registered(req.adapter)))
    fail_as(ErrorKind::kNotFound, "The model `{}` does not exist.", req.adapter);
  if (!std::isfinite(req.adapter_scale)) fail("the adapter scale must be a finite number");
  if (!req.more_adapters.empty()) {
    LP_CHECK(!req.adapter.empty(), "stacked adapters without a first adapter");
    const int n = 1 + static_cast<int>(req.more_adapters.size());
    if (n > im.adapters->max_loras())
      fail("a stack of {} adapters needs {} slots at once; this server has --max-loras {}", n, n,
           im.adapters->max_loras());
    std::set<std::string> names = {req.adapter};
    for (const AdapterRef& r : req.more_adapters) {
      if (!names.insert(r.name).second) fail("adapter `{}` appears twice in one stack", r.name);
      if (!std::isfinite(r.scale)) fail("the scale of adapter `{}` must be a finite number", r.name);
      if (!im.adapters->is_registered(r.name)) fail_as(ErrorKind::kNotFound, "The model `{}` does not exist.", r.name);
    }
  }

  auto seq = std::make_unique<Seq>();
  auto ch = std::make_shared<RequestChannel>();
  seq->channel = ch;
  seq->tokens = req.prompt;
  seq->prompt_len = static_cast<int>(req.prompt.size());
  seq->prompt_lp_next = req.prompt_logprobs >= 0 ? 1 : seq->prompt_len;
  if (req.prompt_logprobs >= 0) seq->prompt_lp.resize(req.prompt.size());
  seq->sampler = std::make_unique<Sampler>(req.sampling);
  seq->text = std::make_unique<OutputText>(im.tok, req.skip_special_tokens, req.stop, req.include_stop_str_in_output);
  const std::string adapter = req.adapter;
  std::vector<std::string> more;
  for (const AdapterRef& r : req.more_adapters) more.push_back(r.name);
  seq->req = std::move(req);
  seq->arrived = now_seconds();
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (im.stopping) fail_as(ErrorKind::kUnavailable, "the server is shutting down");
    im.scheduler.reserve_place(adapter);  // throws kOverloaded over a cap
    seq->id = im.next_id++;
    im.incoming.push_back(std::move(seq));
  }
  im.cv.notify_one();
  // Counted once accepted (requests refused above are not); unregistered meanwhile: admission reports it.
  if (!adapter.empty()) im.adapters->count_request(adapter);
  for (const std::string& name : more) im.adapters->count_request(name);
  return ch;
}

}  // namespace lp::sched
