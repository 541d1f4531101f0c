// Scheduler: the policy half of the engine. Every step it decides which requests run and how many tokens
// each gets, whom to preempt when KV runs out, and whom to admit from the waiting queues; the engine
// (engine.cpp) carries the decision out. It touches KV blocks and adapter slots only through
// SchedulerResources, so it is unit-tested with fake sequences and fake resources (tests/sched).
//
// Tenants are isolated (ARCHITECTURE.md): each adapter, and the base model, is a tenant with its own FIFO
// waiting queue. Admission takes the next request from the tenant with the least weighted service so far
// (stride scheduling: a tenant's `pass` grows by 1/weight per admitted request; a tenant that becomes active
// starts at the current virtual time, so idle time earns no credit), FCFS within a tenant.
// - A tenant whose adapter has no slot yet (loading, or every slot held) is skipped this step: it never delays
//   requests that need no slot (the base model never waits on slots) nor other adapters that have one.
// - Starvation: once a request has waited `slot_fairness_s` for a slot, requests of other unpinned adapters
//   stop being admitted, so the slots they hold drain and one can be evicted for it. After
//   `adapter_wait_timeout_s` without a slot it is answered kUnavailable (HTTP 503 + Retry-After), with every
//   request of that tenant that has waited as long.
// - Caps: at most `max_waiting` waiting requests in all and `max_waiting_per_adapter` per tenant; over a cap
//   submit is refused at once with kOverloaded (HTTP 429 + Retry-After). Preempted requests re-enter their
//   queue at the front without being refused.
// - Preemption (recompute): when a running request needs KV that is not there, the newest running request of
//   the tenant holding the most running requests goes back to its queue (its KV and slot hold released).
// - prompt_logprobs: a request that needs a logits row for every prompt position gets prefill chunks within
//   the step's max_prompt_logprob_rows (shared by all such requests; the oldest first), so the logits buffer
//   stays bounded; when none are left it waits (running) or is not admitted this step.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/check.h"
#include "sched/scheduler_config.h"
#include "sched/seq.h"

namespace lp::sched {

// What admitting a request for an adapter got from the adapter cache.
struct AdapterGrant {
  enum Kind { kReady, kLoading, kNoSlot, kFailed } kind = kReady;
  std::optional<ErrorKind> error_kind;  // kFailed: how to answer (nullopt: an internal error)
  std::string error;                    // kFailed: why
};

// The mechanisms the scheduler asks for (implemented by the engine over the KV cache and AdapterManager).
class SchedulerResources {
 public:
  virtual ~SchedulerResources() = default;
  // Only for tenants != "": on kReady a slot hold is taken for each of `s`'s adapters, all or none (dropped
  // by release()).
  virtual AdapterGrant acquire_adapter(Seq& s) = 0;
  virtual bool adapter_pinned(const std::string& tenant) = 0;
  // A sequence that starts from nothing adopts the KV of its longest verified cached prefix (raising
  // s.computed); a no-op otherwise.
  virtual void adopt_prefix(Seq& s) = 0;
  // Makes room for `s`'s K/V up to `n_tokens` tokens in all. false: out of KV (nothing more was taken).
  virtual bool reserve_kv(Seq& s, int64_t n_tokens) = 0;
  // Drops every KV block and the adapter hold of `s` (idempotent).
  virtual void release(Seq& s) = 0;
};

struct ScheduledChunk {
  Seq* seq = nullptr;
  int64_t n_tokens = 0;  // the next n_tokens of seq->tokens after seq->computed
  bool admitted = false;  // admitted from a waiting queue in this step (else it was running)
};

// A waiting request the scheduler gives up on: the engine answers it with the error and drops it.
struct Rejection {
  std::unique_ptr<Seq> seq;
  std::optional<ErrorKind> kind;  // nullopt: an internal error (500)
  std::string error;
};

struct SchedulerOutput {
  std::vector<ScheduledChunk> chunks;  // running requests first (oldest first), then the ones admitted now
  std::vector<Rejection> rejected;
  int preempted = 0;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config);

  // Any thread: takes a waiting place for a new request of `tenant`, or throws kOverloaded naming the cap.
  // Every place taken is given back when its request leaves the waiting queues (admitted, rejected, removed).
  void reserve_place(const std::string& tenant);
  // Any thread: gives back a place taken by reserve_place() whose request never reached enqueue().
  void cancel_place(const std::string& tenant);
  // Any thread: waiting requests (places taken), in all and of one tenant.
  int num_waiting() const;
  int num_waiting(const std::string& tenant) const;

  // Engine thread from here on.
  // A new request (its place already reserved) joins the back of its tenant's queue.
  void enqueue(std::unique_ptr<Seq> s);
  // One step's decision at time `now` (seconds).
  SchedulerOutput schedule(SchedulerResources& res, double now);
  // Removes every request (waiting or running) for which pred is true, e.g. aborted ones.
  std::vector<std::unique_ptr<Seq>> remove_if(const std::function<bool(const Seq&)>& pred);
  // Removes the running requests the engine marked finished.
  std::vector<std::unique_ptr<Seq>> take_finished();

  const std::vector<std::unique_ptr<Seq>>& running() const { return running_; }
  bool has_waiting() const { return !tenants_.empty(); }
  // Tenants with waiting requests (engine thread).
  std::vector<std::string> waiting_tenants() const;

 private:
  struct Tenant {
    std::deque<std::unique_ptr<Seq>> queue;  // FCFS (preempted requests at the front)
    double pass = 0;                         // weighted admissions so far (stride scheduling)
  };
  double weight_of(const std::string& tenant) const;
  Tenant& activate(const std::string& tenant);  // the tenant's queue, created at the current virtual time
  std::unique_ptr<Seq> pop_front(const std::string& tenant);  // gives the place back; drops empty tenants
  std::map<std::string, Tenant>::iterator drop_if_empty(std::map<std::string, Tenant>::iterator it);
  void take_running(const std::function<bool(const Seq&)>& pred, std::vector<std::unique_ptr<Seq>>& out);
  void add_places(const std::string& tenant, int n);         // waiting-place counts += n (locks count_mu_)
  void add_places_locked(const std::string& tenant, int n);
  void admit(SchedulerResources& res, double now, int64_t& budget, int64_t& rows, SchedulerOutput& out);
  void reject_stale(const std::string& tenant, double now, SchedulerOutput& out, const std::string& why);
  size_t pick_victim(size_t from) const;
  void preempt(SchedulerResources& res, size_t i);

  SchedulerConfig cfg_;

  // Waiting-place counts: guarded by count_mu_ (submit runs on HTTP threads). Mutated only through
  // add_places[_locked].
  mutable std::mutex count_mu_;
  int waiting_total_ = 0;
  std::map<std::string, int> waiting_by_tenant_;

  // Engine thread only.
  std::map<std::string, Tenant> tenants_;  // tenants with waiting requests
  std::map<std::string, double> pass_left_;  // pass of tenants that went idle ahead of the virtual time
  std::vector<std::unique_ptr<Seq>> running_;
  double vtime_ = 0;  // the pass of the most recent admission
};

}  // namespace lp::sched
