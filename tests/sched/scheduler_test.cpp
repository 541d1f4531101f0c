// The scheduler's policy on fake sequences and fake resources (no model): round-robin admission across tenants,
// weights, FCFS within a tenant, requests waiting for an adapter slot never delaying others, the starvation
// rule, the adapter-wait timeout, the waiting caps (429), preemption of the tenant holding the most, the bound
// on prompt_logprobs rows per step.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "sched/scheduler.h"

namespace lp::sched {
namespace {

// KV counted in tokens; adapters are ready unless listed as loading / without slot / failed.
struct FakeResources : SchedulerResources {
  int64_t kv_free = 1 << 20;
  std::map<const Seq*, int64_t> kv_held;
  std::set<std::string> no_slot, pinned;
  std::map<std::string, AdapterGrant> failed;
  std::map<std::string, int> holds;  // adapter holds taken and not released

  AdapterGrant acquire_adapter(Seq& s) override {
    if (auto it = failed.find(s.tenant()); it != failed.end()) return it->second;
    if (no_slot.count(s.tenant())) return {AdapterGrant::kNoSlot, {}, {}};
    s.slot = 0;
    ++holds[s.tenant()];
    return {AdapterGrant::kReady, {}, {}};
  }
  bool adapter_pinned(const std::string& t) override { return pinned.count(t) > 0; }
  void adopt_prefix(Seq&) override {}
  bool reserve_kv(Seq& s, int64_t n) override {
    int64_t need = n - kv_held[&s];
    if (need <= 0) return true;
    if (need > kv_free) return false;
    kv_free -= need;
    kv_held[&s] = n;
    return true;
  }
  void release(Seq& s) override {
    kv_free += kv_held[&s];
    kv_held.erase(&s);
    s.computed = 0;
    if (s.slot >= 0) {
      --holds[s.tenant()];
      s.slot = -1;
    }
  }
};

class SchedulerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Seq> seq(const std::string& tenant, int prompt = 4, double arrived = 0) {
    auto s = std::make_unique<Seq>();
    s->id = next_id_++;
    s->req.adapter = tenant;
    s->tokens.assign(prompt, 1);
    s->prompt_len = prompt;
    s->arrived = arrived;
    return s;
  }
  void submit(Scheduler& sc, const std::string& tenant, int prompt = 4, double arrived = 0) {
    sc.reserve_place(tenant);
    sc.enqueue(seq(tenant, prompt, arrived));
  }
  // Runs steps until nothing more is admitted; each admitted request "finishes" at once (prefill done and
  // retired), so admission order is observable one request per step with max_num_seqs 1.
  std::vector<std::string> admission_order(Scheduler& sc, FakeResources& res, int steps, double now = 0) {
    std::vector<std::string> order;
    for (int i = 0; i < steps; ++i) {
      SchedulerOutput out = sc.schedule(res, now);
      for (auto& c : out.chunks) {
        if (c.admitted) order.push_back(c.seq->tenant());
        c.seq->finished = true;
      }
      for (auto& s : sc.take_finished()) res.release(*s);
    }
    return order;
  }
  uint64_t next_id_ = 0;
};

SchedulerConfig one_at_a_time() {
  SchedulerConfig c;
  c.max_num_seqs = 1;
  return c;
}

TEST_F(SchedulerTest, RoundRobinAcrossTenantsFcfsWithin) {
  Scheduler sc(one_at_a_time());
  FakeResources res;
  for (int i = 0; i < 6; ++i) submit(sc, "a");  // tenant a floods first
  submit(sc, "b");
  submit(sc, "");  // the base model is a tenant too
  submit(sc, "b");
  auto order = admission_order(sc, res, 9);
  // Ties of equal service go to the older head: a, then b and base in turn with a, then a's backlog.
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "", "a", "b", "a", "a", "a", "a"}));
  EXPECT_EQ(sc.num_waiting(), 0);
}

TEST_F(SchedulerTest, FcfsWithinATenantKeepsArrivalOrder) {
  SchedulerConfig c = one_at_a_time();
  Scheduler sc(c);
  FakeResources res;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) submit(sc, "a");
  for (int i = 0; i < 5; ++i) {
    SchedulerOutput out = sc.schedule(res, 0);
    ASSERT_EQ(out.chunks.size(), 1u);
    ids.push_back(out.chunks[0].seq->id);
    out.chunks[0].seq->finished = true;
    for (auto& s : sc.take_finished()) res.release(*s);
  }
  EXPECT_EQ(ids, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
}

TEST_F(SchedulerTest, WeightsShareAdmissions) {
  SchedulerConfig c = one_at_a_time();
  c.weights["gold"] = 4;
  Scheduler sc(c);
  FakeResources res;
  for (int i = 0; i < 40; ++i) submit(sc, "gold");
  for (int i = 0; i < 40; ++i) submit(sc, "free");
  auto order = admission_order(sc, res, 40);
  int gold = 0;
  for (const auto& t : order) gold += t == "gold";
  EXPECT_EQ(gold, 32) << "weight 4 vs 1 must admit 4 of every 5";
}

TEST_F(SchedulerTest, IdleTimeEarnsNoCredit) {
  Scheduler sc(one_at_a_time());
  FakeResources res;
  for (int i = 0; i < 10; ++i) submit(sc, "a");
  admission_order(sc, res, 6);  // a alone for a while
  for (int i = 0; i < 4; ++i) submit(sc, "b");
  // b arrives late: it starts at the virtual time and shares from now on; it does not get six admissions in
  // a row to catch up.
  auto order = admission_order(sc, res, 4);
  EXPECT_EQ(order, (std::vector<std::string>{"b", "a", "b", "a"}));
}

TEST_F(SchedulerTest, RequestWaitingForASlotNeverDelaysOthers) {
  SchedulerConfig c;
  c.max_num_seqs = 8;
  Scheduler sc(c);
  FakeResources res;
  res.no_slot = {"x"};
  submit(sc, "x");
  submit(sc, "x");
  submit(sc, "");
  submit(sc, "y");
  SchedulerOutput out = sc.schedule(res, 0);
  std::vector<std::string> got;
  for (auto& ch : out.chunks) got.push_back(ch.seq->tenant());
  EXPECT_EQ(got, (std::vector<std::string>{"", "y"}));
  EXPECT_EQ(sc.num_waiting("x"), 2);
  EXPECT_TRUE(out.rejected.empty());
}

TEST_F(SchedulerTest, StarvingAdapterDrainsOtherUnpinnedAdaptersButNotBaseOrPinned) {
  SchedulerConfig c;
  c.max_num_seqs = 64;
  c.slot_fairness_s = 2;
  Scheduler sc(c);
  FakeResources res;
  res.no_slot = {"x"};
  res.pinned = {"p"};
  submit(sc, "x");
  EXPECT_TRUE(sc.schedule(res, 0).chunks.empty());  // x starts waiting for a slot at t=0
  submit(sc, "y");
  SchedulerOutput first = sc.schedule(res, 1);
  ASSERT_EQ(first.chunks.size(), 1u) << "within the fairness bound others still go ahead";
  EXPECT_TRUE(first.chunks[0].admitted);
  submit(sc, "y");
  submit(sc, "p");
  submit(sc, "");
  SchedulerOutput out = sc.schedule(res, 3);  // x has waited 3 s > 2 s
  std::set<std::string> got;
  for (auto& ch : out.chunks)
    if (ch.admitted) got.insert(ch.seq->tenant());
  EXPECT_EQ(got, (std::set<std::string>{"", "p"})) << "y would extend a hold on a slot x needs";
  EXPECT_EQ(sc.num_waiting("y"), 1);
  res.no_slot.clear();  // a slot drained
  out = sc.schedule(res, 4);
  got.clear();
  for (auto& ch : out.chunks)
    if (ch.admitted) got.insert(ch.seq->tenant());
  EXPECT_EQ(got, (std::set<std::string>{"x", "y"}));
}

TEST_F(SchedulerTest, AdapterWaitTimeoutAnswersTheStaleOnes) {
  SchedulerConfig c;
  c.adapter_wait_timeout_s = 30;
  Scheduler sc(c);
  FakeResources res;
  res.no_slot = {"x"};
  submit(sc, "x", 4, 0);
  submit(sc, "x", 4, 5);
  submit(sc, "x", 4, 20);
  EXPECT_TRUE(sc.schedule(res, 1).rejected.empty());
  EXPECT_TRUE(sc.schedule(res, 31).rejected.empty()) << "30 s since it first waited, not more";
  SchedulerOutput out = sc.schedule(res, 36);
  ASSERT_EQ(out.rejected.size(), 2u) << "the head and the one queued behind it for over 30 s";
  for (auto& r : out.rejected) {
    EXPECT_EQ(r.kind, ErrorKind::kUnavailable);
    EXPECT_NE(r.error.find("--adapter-wait-timeout"), std::string::npos) << r.error;
  }
  EXPECT_EQ(out.rejected[0].seq->arrived, 0);
  EXPECT_EQ(out.rejected[1].seq->arrived, 5);
  EXPECT_EQ(sc.num_waiting("x"), 1);
}

TEST_F(SchedulerTest, FailedAdapterIsRejectedWithItsKind) {
  Scheduler sc(SchedulerConfig{});
  FakeResources res;
  res.failed["gone"] = {AdapterGrant::kFailed, ErrorKind::kNotFound, "unregistered"};
  submit(sc, "gone");
  submit(sc, "");
  SchedulerOutput out = sc.schedule(res, 0);
  ASSERT_EQ(out.rejected.size(), 1u);
  EXPECT_EQ(out.rejected[0].kind, ErrorKind::kNotFound);
  EXPECT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(sc.num_waiting(), 0);
}

TEST_F(SchedulerTest, WaitingCapsAreOverloadedErrorsAndPlacesComeBack) {
  SchedulerConfig c;
  c.max_waiting = 5;
  c.max_waiting_per_adapter = 3;
  Scheduler sc(c);
  FakeResources res;
  auto refusal = [&](const std::string& t) -> std::string {
    try {
      sc.reserve_place(t);
      sc.enqueue(seq(t));
      return "ok";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kOverloaded);
      return e.what();
    }
  };
  for (int i = 0; i < 3; ++i) EXPECT_EQ(refusal("a"), "ok");
  EXPECT_NE(refusal("a").find("--max-waiting-per-adapter"), std::string::npos);
  EXPECT_EQ(refusal("b"), "ok");
  EXPECT_EQ(refusal(""), "ok");
  EXPECT_NE(refusal("c").find("--max-waiting"), std::string::npos);
  EXPECT_EQ(sc.num_waiting(), 5);
  sc.schedule(res, 0);  // admits all five (max_num_seqs 64)
  EXPECT_EQ(sc.num_waiting(), 0);
  EXPECT_EQ(refusal("a"), "ok");
  auto removed = sc.remove_if([](const Seq& s) { return s.tenant() == "a"; });
  EXPECT_EQ(removed.size(), 4u);  // three running, one waiting
  EXPECT_EQ(sc.num_waiting(), 0);
}

TEST_F(SchedulerTest, PreemptsTheNewestOfTheTenantHoldingTheMost) {
  SchedulerConfig c;
  c.max_num_seqs = 8;
  c.max_num_batched_tokens = 1000;
  Scheduler sc(c);
  FakeResources res;
  res.kv_free = 5 * 4;  // room for five 4-token prompts
  submit(sc, "b");
  for (int i = 0; i < 3; ++i) submit(sc, "a");
  submit(sc, "c");
  SchedulerOutput out = sc.schedule(res, 0);
  ASSERT_EQ(out.chunks.size(), 5u);
  for (auto& ch : out.chunks) ch.seq->computed += ch.n_tokens;
  // Each now wants one more token (a decode step), KV is full: someone must go. a holds three.
  for (auto& s : sc.running()) s->tokens.push_back(2);
  out = sc.schedule(res, 0);
  EXPECT_EQ(out.preempted, 1);
  EXPECT_EQ(sc.num_waiting("a"), 1);
  EXPECT_EQ(sc.num_waiting(), 1);
  uint64_t max_a = 0;
  for (auto& s : sc.running())
    if (s->tenant() == "a") max_a = std::max(max_a, s->id);
  EXPECT_LT(max_a, 3u) << "the newest of a (id 3) is the one preempted";
}

TEST_F(SchedulerTest, OutOfKvStopsAdmissionAndReleasesTheHold) {
  SchedulerConfig c;
  Scheduler sc(c);
  FakeResources res;
  res.kv_free = 3;
  submit(sc, "a", 4);
  SchedulerOutput out = sc.schedule(res, 0);
  EXPECT_TRUE(out.chunks.empty());
  EXPECT_EQ(res.holds["a"], 0) << "the adapter hold taken for admission must be given back";
  EXPECT_EQ(sc.num_waiting(), 1);
}

// Requests that need a logits row per prompt position (prompt_logprobs) share max_prompt_logprob_rows per
// step, oldest first; one that finds none left is not admitted (others are), and free requests are not bound.
TEST_F(SchedulerTest, PromptLogprobRowsAreBoundedPerStep) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 100;
  cfg.max_prompt_logprob_rows = 10;
  Scheduler sc(cfg);
  FakeResources res;
  auto with_rows = [&](int prompt) {
    auto s = seq("", prompt);
    s->req.prompt_logprobs = 0;
    s->prompt_lp_next = 1;
    sc.reserve_place("");
    sc.enqueue(std::move(s));
  };
  with_rows(35);          // A
  with_rows(35);          // B
  submit(sc, "", 30);     // C: free
  std::map<uint64_t, std::vector<int64_t>> chunks;  // by id: A 0, B 1, C 2
  for (int step = 0; step < 9; ++step) {
    SchedulerOutput out = sc.schedule(res, 0);
    int64_t rows = 0;
    for (auto& c : out.chunks) {
      Seq& s = *c.seq;
      chunks[s.id].push_back(c.n_tokens);
      if (s.needs_prompt_rows()) rows += c.n_tokens;
      s.computed += c.n_tokens;  // what the engine does
      if (s.req.prompt_logprobs >= 0)
        s.prompt_lp_next = static_cast<int>(std::min<int64_t>(s.computed + 1, s.prompt_len));
      if (s.computed == static_cast<int64_t>(s.tokens.size())) s.finished = true;
    }
    EXPECT_LE(rows, 10) << "step " << step;
    for (auto& s : sc.take_finished()) res.release(*s);
  }
  EXPECT_EQ(chunks[0], (std::vector<int64_t>{10, 10, 10, 5}));
  EXPECT_EQ(chunks[1], (std::vector<int64_t>{5, 10, 10, 10}));
  EXPECT_EQ(chunks[2], (std::vector<int64_t>{30}));
}

}  // namespace
}  // namespace lp::sched
