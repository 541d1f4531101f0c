#include "sched/scheduler.h"

#include <algorithm>
#include <limits>
#include <set>

namespace lp::sched {

Scheduler::Scheduler(SchedulerConfig config) : cfg_(std::move(config)) {
  LP_CHECK(cfg_.max_num_seqs > 0 && cfg_.max_num_batched_tokens > 0 && cfg_.max_prompt_logprob_rows > 0,
           "scheduler limits must be positive");
  for (const auto& [t, w] : cfg_.weights) LP_CHECK(w > 0, "weight of tenant '{}' is {}", t, w);
}

void Scheduler::reserve_place(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(count_mu_);
  if (cfg_.max_waiting > 0 && waiting_total_ >= cfg_.max_waiting)
    fail_as(ErrorKind::kOverloaded, "too many waiting requests ({}, --max-waiting); retry later", waiting_total_);
  auto it = waiting_by_tenant_.find(tenant);
  const int mine = it == waiting_by_tenant_.end() ? 0 : it->second;
  if (cfg_.max_waiting_per_adapter > 0 && mine >= cfg_.max_waiting_per_adapter)
    fail_as(ErrorKind::kOverloaded, "too many waiting requests for model '{}' ({}, --max-waiting-per-adapter); retry later",
            tenant, mine);
  add_places_locked(tenant, 1);
}

void Scheduler::cancel_place(const std::string& tenant) { add_places(tenant, -1); }

void Scheduler::add_places(const std::string& tenant, int n) {
  std::lock_guard<std::mutex> lock(count_mu_);
  add_places_locked(tenant, n);
}

void Scheduler::add_places_locked(const std::string& tenant, int n) {
  int& mine = waiting_by_tenant_[tenant];
  LP_CHECK(mine + n >= 0 && waiting_total_ + n >= 0, "waiting places of '{}' would go negative", tenant);
  mine += n;
  waiting_total_ += n;
  if (mine == 0) waiting_by_tenant_.erase(tenant);
}

int Scheduler::num_waiting() const {
  std::lock_guard<std::mutex> lock(count_mu_);
  return waiting_total_;
}

int Scheduler::num_waiting(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(count_mu_);
  auto it = waiting_by_tenant_.find(tenant);
  return it == waiting_by_tenant_.end() ? 0 : it->second;
}

double Scheduler::weight_of(const std::string& tenant) const {
  auto it = cfg_.weights.find(tenant);
  return it == cfg_.weights.end() ? 1.0 : it->second;
}

Scheduler::Tenant& Scheduler::activate(const std::string& tenant) {
  auto [it, fresh] = tenants_.try_emplace(tenant);
  if (fresh) {
    // Idle time earns no credit: start at the virtual time, or later if the tenant left ahead of it.
    it->second.pass = vtime_;
    if (auto p = pass_left_.find(tenant); p != pass_left_.end()) {
      it->second.pass = std::max(vtime_, p->second);
      pass_left_.erase(p);
    }
  }
  return it->second;
}

std::unique_ptr<Seq> Scheduler::pop_front(const std::string& tenant) {
  auto it = tenants_.find(tenant);
  LP_CHECK(it != tenants_.end() && !it->second.queue.empty(), "tenant '{}' has no waiting request", tenant);
  std::unique_ptr<Seq> s = std::move(it->second.queue.front());
  it->second.queue.pop_front();
  drop_if_empty(it);
  add_places(tenant, -1);
  return s;
}

// A tenant without waiting requests leaves tenants_; its pass is kept only while it is ahead of the virtual
// time (an entry at or behind it would change nothing at the next activation).
std::map<std::string, Scheduler::Tenant>::iterator Scheduler::drop_if_empty(
    std::map<std::string, Tenant>::iterator it) {
  if (!it->second.queue.empty()) return std::next(it);
  std::erase_if(pass_left_, [&](const auto& kv) { return kv.second <= vtime_; });
  if (it->second.pass > vtime_) pass_left_[it->first] = it->second.pass;
  return tenants_.erase(it);
}

void Scheduler::enqueue(std::unique_ptr<Seq> s) {
  LP_CHECK(s != nullptr);
  activate(s->tenant()).queue.push_back(std::move(s));
}

std::vector<std::string> Scheduler::waiting_tenants() const {
  std::vector<std::string> out;
  for (const auto& [t, q] : tenants_) out.push_back(t);
  return out;
}

std::vector<std::unique_ptr<Seq>> Scheduler::remove_if(const std::function<bool(const Seq&)>& pred) {
  std::vector<std::unique_ptr<Seq>> out;
  for (auto it = tenants_.begin(); it != tenants_.end();) {
    auto& q = it->second.queue;
    const size_t before = out.size();
    for (auto qi = q.begin(); qi != q.end();) {
      if (pred(**qi)) {
        out.push_back(std::move(*qi));
        qi = q.erase(qi);
      } else {
        ++qi;
      }
    }
    if (const int n = static_cast<int>(out.size() - before); n > 0) add_places(it->first, -n);
    it = drop_if_empty(it);
  }
  take_running(pred, out);
  return out;
}

std::vector<std::unique_ptr<Seq>> Scheduler::take_finished() {
  std::vector<std::unique_ptr<Seq>> out;
  take_running([](const Seq& s) { return s.finished; }, out);
  return out;
}

void Scheduler::take_running(const std::function<bool(const Seq&)>& pred, std::vector<std::unique_ptr<Seq>>& out) {
  for (size_t i = 0; i < running_.size();) {
    if (pred(*running_[i])) {
      out.push_back(std::move(running_[i]));
      running_.erase(running_.begin() + static_cast<long>(i));
    } else {
      ++i;
    }
  }
}

// The newest running request (at index >= from, i.e. not yet given tokens this step) of the tenant that holds
// the most running requests.
size_t Scheduler::pick_victim(size_t from) const {
  std::map<std::string, int> held;
  for (const auto& s : running_) ++held[s->tenant()];
  size_t best = running_.size();
  for (size_t i = from; i < running_.size(); ++i) {
    if (best == running_.size()) {
      best = i;
      continue;
    }
    int hi = held[running_[i]->tenant()], hb = held[running_[best]->tenant()];
    if (hi > hb || (hi == hb && running_[i]->id > running_[best]->id)) best = i;
  }
  LP_CHECK(best < running_.size(), "no preemption candidate");
  return best;
}

void Scheduler::preempt(SchedulerResources& res, size_t i) {
  std::unique_ptr<Seq> s = std::move(running_[i]);
  running_.erase(running_.begin() + static_cast<long>(i));
  res.release(*s);  // recompute later: tokens, sampler and text state stay
  s->adapter_wait_since = -1;
  s->no_slot = false;
  const std::string tenant = s->tenant();
  add_places(tenant, 1);  // never refused: it was accepted
  activate(tenant).queue.push_front(std::move(s));
}

namespace {

// Tokens `s` runs next: the rest of its prefill (or its one decode token) within the step's token budget and,
// while it needs a logits row per prompt position (prompt_logprobs), within the rows left for those.
int64_t chunk_for(const Seq& s, int64_t budget, int64_t rows) {
  int64_t chunk = std::min<int64_t>(budget, static_cast<int64_t>(s.tokens.size()) - s.computed);
  if (s.needs_prompt_rows()) chunk = std::min(chunk, rows);
  return chunk;
}

}  // namespace

SchedulerOutput Scheduler::schedule(SchedulerResources& res, double now) {
  SchedulerOutput out;
  int64_t budget = cfg_.max_num_batched_tokens;
  int64_t rows = cfg_.max_prompt_logprob_rows;
  // 1. Running requests first, oldest first: one decode token each, or the next prefill chunk. Out of KV:
  //    preempt until the older ones fit.
  std::sort(running_.begin(), running_.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Seq& s = *running_[i];
    const int64_t chunk = chunk_for(s, budget, rows);
    if (chunk <= 0) {
      ++i;
      continue;
    }
    bool self_preempted = false;
    while (!res.reserve_kv(s, s.computed + chunk)) {
      size_t v = pick_victim(i);
      self_preempted = v == i;
      preempt(res, v);
      ++out.preempted;
      if (self_preempted) break;
    }
    if (self_preempted) continue;  // running_[i] is now the next one
    budget -= chunk;
    if (s.needs_prompt_rows()) rows -= chunk;
    out.chunks.push_back({&s, chunk, false});
    ++i;
  }
  // 2. Admit waiting requests with what is left.
  admit(res, now, budget, rows, out);
  return out;
}

// Answers the head of `tenant`'s queue, and every request of that tenant queued at least as long, with a 503.
void Scheduler::reject_stale(const std::string& tenant, double now, SchedulerOutput& out, const std::string& why) {
  const double cutoff = now - cfg_.adapter_wait_timeout_s;
  out.rejected.push_back({pop_front(tenant), ErrorKind::kUnavailable, why});
  while (tenants_.count(tenant) && tenants_.at(tenant).queue.front()->arrived <= cutoff)
    out.rejected.push_back({pop_front(tenant), ErrorKind::kUnavailable, why});
}

void Scheduler::admit(SchedulerResources& res, double now, int64_t& budget, int64_t& rows, SchedulerOutput& out) {
  // A request that has waited past the fairness bound for a slot: unpinned adapters other than its own are not
  // admitted meanwhile (their slots drain). The longest-waiting such request decides.
  std::string starving;
  double starving_since = std::numeric_limits<double>::infinity();
  for (const auto& [t, q] : tenants_) {
    const Seq& head = *q.queue.front();
    if (head.no_slot && now - head.adapter_wait_since > cfg_.slot_fairness_s &&
        head.adapter_wait_since < starving_since) {
      starving = t;
      starving_since = head.adapter_wait_since;
    }
  }
  std::set<std::string> skipped;  // tenants that cannot be admitted this step
  while (budget > 0 && static_cast<int>(running_.size()) < cfg_.max_num_seqs) {
    // The tenant with the least weighted service; ties go to the older head request.
    Tenant* pick = nullptr;
    const std::string* pick_name = nullptr;
    for (auto& [t, tn] : tenants_) {
      if (skipped.count(t)) continue;
      if (!pick || tn.pass < pick->pass ||
          (tn.pass == pick->pass && tn.queue.front()->id < pick->queue.front()->id)) {
        pick = &tn;
        pick_name = &t;
      }
    }
    if (!pick) break;
    const std::string tenant = *pick_name;
    Seq& s = *pick->queue.front();
    if (s.needs_prompt_rows() && rows <= 0) {  // its prefill needs logits rows this step has no more of
      skipped.insert(tenant);
      continue;
    }
    if (!tenant.empty()) {
      if (!starving.empty() && tenant != starving && !res.adapter_pinned(tenant)) {
        skipped.insert(tenant);
        continue;
      }
      AdapterGrant g = res.acquire_adapter(s);
      if (g.kind == AdapterGrant::kFailed) {
        out.rejected.push_back({pop_front(tenant), g.error_kind, g.error});
        continue;
      }
      if (g.kind != AdapterGrant::kReady) {
        if (s.adapter_wait_since < 0) s.adapter_wait_since = now;
        s.no_slot = g.kind == AdapterGrant::kNoSlot;
        if (now - s.adapter_wait_since > cfg_.adapter_wait_timeout_s) {
          reject_stale(tenant, now, out,
                       fmt::format("adapter '{}' could not be given a slot within {:g} s (--adapter-wait-timeout); "
                                   "retry later", tenant, cfg_.adapter_wait_timeout_s));
          continue;
        }
        skipped.insert(tenant);
        continue;
      }
    }
    res.adopt_prefix(s);
    const int64_t chunk = chunk_for(s, budget, rows);
    if (!res.reserve_kv(s, s.computed + chunk)) {
      res.release(s);  // the adopted prefix and the adapter hold just taken
      break;           // out of KV: the running requests must finish first
    }
    s.adapter_wait_since = -1;
    s.no_slot = false;
    if (tenant == starving) starving.clear();  // it got its slot: the others may go on
    vtime_ = std::max(vtime_, pick->pass);
    pick->pass += 1.0 / weight_of(tenant);
    std::unique_ptr<Seq> owned = pop_front(tenant);
    budget -= chunk;
    if (s.needs_prompt_rows()) rows -= chunk;
    out.chunks.push_back({owned.get(), chunk, true});
    running_.push_back(std::move(owned));
  }
}

}  // namespace lp::sched
