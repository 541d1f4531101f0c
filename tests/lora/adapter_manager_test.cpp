// AdapterManager's state machine, one transition at a time: DISK → LOADING → HOST → SLOT, SLOT → HOST,
// HOST → DISK, unregister now or after the last holder; the forbidden moves (evicting a held or pinned slot,
// activating an unregistered name, removing an adapter in use); one load for many waiters; a failed load;
// LRU order of both tiers over a scripted sequence with pins and holders; and every registration refusal.
#include "lora/adapter_manager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>

#include "core/check.h"
#include "lora/adapter_cache_test_util.h"
#include "util/test_util.h"

namespace lp::lora {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Status = AdapterManager::Status;
using namespace cache_test;

class ManagerTest : public ::testing::Test {
 protected:
  ManagerTest() : cfg_(tiny_config()) {}

  fs::path adapter(const std::string& name, int rank = 4) {
    auto it = dirs_.find(name);
    if (it != dirs_.end()) return it->second;
    int i = static_cast<int>(dirs_.size());
    return dirs_[name] = write_adapter(tmp_.path(), name, cfg_, i, rank);
  }
  ManagerOptions opts(int max_loras, int max_cpu_loras, bool keep_validated = false) {
    ManagerOptions o;
    o.max_loras = max_loras;
    o.max_cpu_loras = max_cpu_loras;
    o.max_lora_rank = 8;
    o.lora_dtype = DType::kBF16;
    o.keep_validated = keep_validated;
    return o;
  }
  // The packed weights `name`'s folder must produce in a slot.
  const PackedAdapter& expected(const std::string& name) {
    auto it = packed_.find(name);
    if (it == packed_.end())
      it = packed_.emplace(name, pack_adapter(load_adapter(dirs_.at(name), base_shapes(cfg_)), DType::kBF16))
               .first;
    return it->second;
  }
  std::string tier(const AdapterManager& m, const std::string& name) {
    auto i = m.info(name);
    return i ? i->tier : "unregistered";
  }
  // acquire until ready, then check the slot's contents; returns the slot.
  int use(AdapterManager& m, const std::string& name, bool keep_hold = false) {
    AdapterManager::Acquire r = acquire_ready(m, name);
    EXPECT_EQ(r.status, Status::kReady) << name << ": " << r.error;
    if (r.status != Status::kReady) return -1;
    EXPECT_EQ(slot_mismatch(m.bank(), r.slot, expected(name)), "") << name << " in slot " << r.slot;
    if (!keep_hold) m.release(r.slot);
    return r.slot;
  }

  model::ModelConfig cfg_;
  test::TempDir tmp_{"mgr"};
  std::map<std::string, fs::path> dirs_;
  std::map<std::string, PackedAdapter> packed_;
};

TEST_F(ManagerTest, AllocatesExactlyThePlanAndRefusesTooSmallHostTier) {
  AdapterManager m(cfg_, opts(3, 0));
  EXPECT_EQ(m.max_cpu_loras(), 3);  // default = max_loras
  EXPECT_EQ(static_cast<int64_t>(m.bank().bytes()), m.plan().slots_bytes);
  EXPECT_EQ(m.plan().slots_bytes, 3 * static_cast<int64_t>(slot_bytes(cfg_, 8, DType::kBF16, kAllModules)));
  try {
    AdapterManager bad(cfg_, opts(4, 2));
    FAIL() << "max_cpu_loras < max_loras accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    EXPECT_THAT(e.what(), HasSubstr("--max-cpu-loras 2 is smaller than --max-loras 4"));
  }
}

TEST_F(ManagerTest, EveryTransitionOfTheStateMachine) {
  AdapterManager m(cfg_, opts(1, 2));
  for (const char* n : {"a", "b", "c"}) m.register_adapter(n, adapter(n));
  EXPECT_EQ(tier(m, "a"), "disk");  // keep_validated off: registration leaves it on disk

  // DISK → LOADING → HOST
  EXPECT_EQ(m.acquire("a").status, Status::kLoading);
  m.wait_for_loads();
  EXPECT_EQ(tier(m, "a"), "host");
  // HOST → SLOT
  int s = use(m, "a");
  EXPECT_EQ(s, 0);
  EXPECT_EQ(tier(m, "a"), "slot");
  auto c = m.counters();
  EXPECT_EQ(c.loads_from_disk, 1);
  EXPECT_EQ(c.loads_from_host, 1);
  EXPECT_EQ(c.slot_hits, 0);
  // a hit is not a load
  use(m, "a");
  EXPECT_EQ(m.counters().loads_from_host, 1);
  EXPECT_EQ(m.counters().slot_hits, 1);

  // SLOT → HOST (b needs the only slot; a is not held)
  use(m, "b");
  EXPECT_EQ(tier(m, "a"), "host");
  EXPECT_EQ(tier(m, "b"), "slot");
  EXPECT_EQ(m.counters().evictions_slot, 1);

  // HOST → DISK (c needs a host place: a is the least recently used host-only adapter)
  use(m, "c");
  EXPECT_EQ(tier(m, "a"), "disk");
  EXPECT_EQ(tier(m, "b"), "host");
  EXPECT_EQ(tier(m, "c"), "slot");
  c = m.counters();
  EXPECT_EQ(c.evictions_host, 1);
  EXPECT_EQ(c.evictions_slot, 2);
  EXPECT_EQ(c.in_slots, 1);
  EXPECT_EQ(c.in_host, 2);  // b and c (the host tier includes the slot's adapter)
  // tiers(): c in the slot, held while a request uses it; the host tier least recently used first
  const int held = use(m, "c", /*keep_hold=*/true);
  auto t = m.tiers();
  ASSERT_EQ(t.slots.size(), 1u);
  EXPECT_EQ(t.slots[0].name, "c");
  EXPECT_EQ(t.slots[0].holders, 1);
  EXPECT_FALSE(t.slots[0].pinned);
  EXPECT_EQ(t.host, (std::vector<std::string>{"b", "c"}));
  m.release(held);
  EXPECT_EQ(m.tiers().slots[0].holders, 0);
  EXPECT_EQ(m.counters().slot_hits, 2);

  // DISK again → back in: a reload from disk
  use(m, "a");
  EXPECT_EQ(m.counters().loads_from_disk, 4);

  // unregister: unused → removed at once, from any tier
  m.unregister_adapter("b");
  m.unregister_adapter("a");
  EXPECT_FALSE(m.is_registered("a"));
  EXPECT_EQ(m.acquire("a").status, Status::kUnknown);
  c = m.counters();
  EXPECT_EQ(c.registered, 1);
  EXPECT_EQ(c.in_slots, 0);
  EXPECT_EQ(c.in_host, 1);  // c, evicted from the slot by a's reload
  EXPECT_EQ(tier(m, "c"), "host");
  try {
    m.unregister_adapter("a");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
  }
  EXPECT_EQ(m.consistency_errors(), "");
}

TEST_F(ManagerTest, UnregisteredNameIsUnknownAndNothingMoves) {
  AdapterManager m(cfg_, opts(2, 2));
  m.register_adapter("a", adapter("a"));
  AdapterManager::Acquire r = m.acquire("nope");
  EXPECT_EQ(r.status, Status::kUnknown);
  EXPECT_THAT(r.error, HasSubstr("'nope' is not registered"));
  EXPECT_FALSE(m.count_request("nope"));
  auto c = m.counters();
  EXPECT_EQ(c.loading + c.in_host + c.in_slots, 0);
}

TEST_F(ManagerTest, HeldSlotIsNeverEvicted) {
  AdapterManager m(cfg_, opts(1, 3));
  m.register_adapter("a", adapter("a"));
  m.register_adapter("b", adapter("b"));
  int s = use(m, "a", /*keep_hold=*/true);
  ASSERT_EQ(m.acquire("b").status, Status::kLoading);  // the disk load may go on: a host place is free
  m.wait_for_loads();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m.acquire("b").status, Status::kNoSlot);
  EXPECT_EQ(tier(m, "a"), "slot");
  EXPECT_EQ(slot_mismatch(m.bank(), s, expected("a")), "");
  EXPECT_EQ(m.counters().evictions_slot, 0);
  m.release(s);
  EXPECT_EQ(use(m, "b"), s);
  EXPECT_EQ(m.counters().evictions_slot, 1);
}

TEST_F(ManagerTest, HostTierFullOfHeldSlotsMakesNewAdaptersWait) {
  AdapterManager m(cfg_, opts(1, 1));  // max_cpu_loras == max_loras
  m.register_adapter("a", adapter("a"));
  m.register_adapter("b", adapter("b"));
  int s = use(m, "a", true);
  EXPECT_EQ(m.acquire("b").status, Status::kNoSlot);  // no host place: a is in a held slot
  EXPECT_EQ(m.counters().loading, 0);
  m.release(s);
  // a is unheld now: SLOT → HOST → DISK to make room, then b loads
  EXPECT_EQ(use(m, "b"), 0);
  EXPECT_EQ(tier(m, "a"), "disk");
  EXPECT_EQ(m.consistency_errors(), "");
}

// Requests waiting for a slot must not evict each other's freshly loaded adapters (a load storm); once the
// protection lapses (here: 0 ms) plain LRU applies.
TEST_F(ManagerTest, FreshLoadIsNotEvictedByAnotherLoadBeforeItGetsASlot) {
  for (int protect_ms : {60000, 0}) {
    ManagerOptions o = opts(1, 2);
    o.fresh_protect = std::chrono::milliseconds(protect_ms);
    AdapterManager m(cfg_, o);
    for (const char* n : {"a", "b", "c"}) m.register_adapter(n, adapter(n));
    int s = use(m, "a", /*keep_hold=*/true);
    EXPECT_EQ(acquire_ready(m, "b").status, Status::kNoSlot);  // loaded, waits for the held slot
    AdapterManager::Acquire r = m.acquire("c");
    if (protect_ms > 0) {
      EXPECT_EQ(r.status, Status::kNoSlot);  // b keeps its place: c waits instead
      EXPECT_EQ(tier(m, "b"), "host");
    } else {
      EXPECT_EQ(r.status, Status::kLoading);  // b is evicted for c
      EXPECT_EQ(tier(m, "b"), "disk");
    }
    m.release(s);
    m.wait_for_loads();
    use(m, "b");
    EXPECT_EQ(m.counters().loads_from_disk, protect_ms > 0 ? 2 : 4);  // a b | a b c b
    EXPECT_EQ(m.consistency_errors(), "");
  }
}

TEST_F(ManagerTest, UnregisterInUseWaitsForTheLastHolder) {
  AdapterManager m(cfg_, opts(2, 2));
  m.register_adapter("a", adapter("a"));
  int s = use(m, "a", true);
  EXPECT_EQ(m.acquire("a").slot, s);  // a second request holds it too
  m.unregister_adapter("a");
  EXPECT_FALSE(m.is_registered("a"));
  EXPECT_EQ(m.acquire("a").status, Status::kUnknown);  // new requests: unknown
  EXPECT_TRUE(m.list().empty());
  EXPECT_THAT(m.slot_names(), ElementsAre("a", ""));  // still in its slot for the running ones
  EXPECT_EQ(slot_mismatch(m.bank(), s, expected("a")), "");
  EXPECT_EQ(m.consistency_errors(), "");
  // The name may be registered again at once (a new adapter: the old one still finishes its requests).
  m.register_adapter("a", adapter("a"));
  m.unregister_adapter("a");
  m.release(s);
  EXPECT_THAT(m.slot_names(), ElementsAre("a", ""));
  m.release(s);
  EXPECT_THAT(m.slot_names(), ElementsAre("", ""));
  auto c = m.counters();
  EXPECT_EQ(c.in_slots, 0);
  EXPECT_EQ(c.in_host, 0);
  EXPECT_EQ(m.consistency_errors(), "");
}

// A loader hook that blocks every load until open() and counts calls.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool is_open = false;
  std::atomic<int> calls{0};
  void wait() {
    ++calls;
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return is_open; });
  }
  void open() {
    std::lock_guard lk(mu);
    is_open = true;
    cv.notify_all();
  }
};

// load_inplace: the replacement is validated before the old registration goes; a refused folder leaves the
// old one registered, serving, with its id (so its cached KV stays valid), and a good one gets a new id.
TEST_F(ManagerTest, ReplaceKeepsTheOldRegistrationWhenTheNewFolderIsRefused) {
  AdapterManager m(cfg_, opts(2, 2));
  m.register_adapter("a", adapter("a"));
  const uint64_t id = m.acquire("a").id;
  const fs::path bad = tmp_.path() / "not-an-adapter";
  fs::create_directories(bad);
  EXPECT_THROW(m.register_adapter("a", bad, false, /*replace=*/true), Error);
  ASSERT_TRUE(m.is_registered("a"));
  EXPECT_EQ(m.info("a")->path, fs::canonical(adapter("a")));
  EXPECT_EQ(m.acquire("a").id, id);
  EXPECT_THROW(m.register_adapter("a", adapter("b")), Error) << "without replace a name is taken";
  m.register_adapter("a", adapter("b"), false, /*replace=*/true);
  EXPECT_EQ(m.info("a")->path, fs::canonical(adapter("b")));
  m.poll();
  auto r = m.acquire("a");
  while (r.status == AdapterManager::Status::kLoading) {
    m.wait_for_loads();
    r = m.acquire("a");
  }
  EXPECT_NE(r.id, id);
}

TEST_F(ManagerTest, OneLoadForEveryWaiter) {
  auto gate = std::make_shared<Gate>();
  ManagerOptions o = opts(1, 2);
  o.on_load = [gate](const std::string&) { gate->wait(); };
  AdapterManager m(cfg_, o);
  m.register_adapter("a", adapter("a"));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(m.acquire("a").status, Status::kLoading);
  EXPECT_EQ(tier(m, "a"), "loading");
  EXPECT_EQ(m.counters().loading, 1);
  gate->open();
  m.wait_for_loads();
  EXPECT_EQ(gate->calls.load(), 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(m.acquire("a").status, Status::kReady);
  auto c = m.counters();
  EXPECT_EQ(c.loads_from_disk, 1);
  EXPECT_EQ(c.loads_from_host, 1);
  EXPECT_EQ(c.held_slots, 1);
  for (int i = 0; i < 10; ++i) m.release(0);
}

TEST_F(ManagerTest, InProgressLoadIsNeverEvictedAndUnregisterDiscardsIt) {
  auto gate = std::make_shared<Gate>();
  ManagerOptions o = opts(1, 1);
  o.on_load = [gate](const std::string&) { gate->wait(); };
  AdapterManager m(cfg_, o);
  m.register_adapter("a", adapter("a"));
  m.register_adapter("b", adapter("b"));
  EXPECT_EQ(m.acquire("a").status, Status::kLoading);
  EXPECT_EQ(m.acquire("b").status, Status::kNoSlot);  // the only host place belongs to a's load
  m.unregister_adapter("a");
  gate->open();
  m.wait_for_loads();
  auto c = m.counters();
  EXPECT_EQ(c.loads_from_disk, 0);  // the result was dropped
  EXPECT_EQ(c.in_host, 0);
  EXPECT_EQ(m.consistency_errors(), "");
  use(m, "b");
}

TEST_F(ManagerTest, FailedLoadTellsEveryWaiterWhyAndLeavesTiersConsistent) {
  ManagerOptions o = opts(1, 2);
  o.failed_retry_after = std::chrono::hours(1);
  auto gate = std::make_shared<Gate>();
  o.on_load = [gate](const std::string& name) {
    gate->wait();
    if (name == "a") fail("disk on fire");
  };
  AdapterManager m(cfg_, o);
  m.register_adapter("a", adapter("a"));
  m.register_adapter("b", adapter("b"));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m.acquire("a").status, Status::kLoading);  // three waiters
  gate->open();
  m.wait_for_loads();
  std::string first;
  for (int i = 0; i < 3; ++i) {
    AdapterManager::Acquire r = m.acquire("a");
    EXPECT_EQ(r.status, Status::kFailed);
    EXPECT_THAT(r.error, HasSubstr("disk on fire"));
    EXPECT_THAT(r.error, HasSubstr("'a'"));
    if (i == 0) first = r.error;
    EXPECT_EQ(r.error, first);
  }
  EXPECT_EQ(gate->calls.load(), 1);
  auto c = m.counters();
  EXPECT_EQ(c.load_failures, 1);
  EXPECT_EQ(c.loading, 0);
  EXPECT_EQ(c.in_host, 0);
  EXPECT_EQ(tier(m, "a"), "disk");
  EXPECT_TRUE(m.is_registered("a"));
  EXPECT_EQ(m.consistency_errors(), "");
  use(m, "b");  // the others are not affected
}

TEST_F(ManagerTest, FailedLoadIsRetriedAfterTheWindowAndRealDiskErrorsAreReported) {
  ManagerOptions o = opts(1, 2);
  o.failed_retry_after = std::chrono::milliseconds(0);
  AdapterManager m(cfg_, o);
  fs::path dir = adapter("a");
  m.register_adapter("a", dir);
  fs::rename(dir / "adapter_model.safetensors", dir / "moved");
  EXPECT_EQ(m.acquire("a").status, Status::kLoading);
  m.wait_for_loads();
  AdapterManager::Acquire r = m.acquire("a");  // window 0: this acquire already retries...
  EXPECT_EQ(r.status, Status::kLoading);
  m.wait_for_loads();
  EXPECT_EQ(m.counters().load_failures, 2);
  fs::rename(dir / "moved", dir / "adapter_model.safetensors");  // ...and once the file is back it loads
  use(m, "a");
  EXPECT_EQ(m.counters().loads_from_disk, 1);
}

TEST_F(ManagerTest, OneSlotCanNeverBePinned) {
  AdapterManager m(cfg_, opts(1, 2));
  try {
    m.register_adapter("p", adapter("p"), true);
    FAIL() << "a pin of the only slot must be refused";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("at most 0 adapter(s) can be pinned"));
  }
  EXPECT_FALSE(m.is_registered("p"));
}

TEST_F(ManagerTest, PinnedAdapterNeverLeavesItsSlot) {
  AdapterManager m(cfg_, opts(2, 3));
  m.register_adapter("p", adapter("p"), /*pinned=*/true);
  EXPECT_EQ(tier(m, "p"), "disk");  // the engine places it at its next poll()
  m.poll();
  m.wait_for_loads();
  m.poll();
  ASSERT_EQ(tier(m, "p"), "slot");
  const int ps = m.info("p")->slot;
  for (const char* n : {"a", "b", "c", "d", "a", "c"}) {
    m.register_adapter(n, adapter(n));
    EXPECT_NE(use(m, n), ps);
    m.unregister_adapter(n);
    EXPECT_EQ(m.info("p")->slot, ps);
  }
  EXPECT_EQ(slot_mismatch(m.bank(), ps, expected("p")), "");
  // The other slot held: nothing left for a third adapter.
  m.register_adapter("a", adapter("a"));
  m.register_adapter("b", adapter("b"));
  int s = use(m, "a", true);
  EXPECT_EQ(acquire_ready(m, "b").status, Status::kNoSlot);
  m.release(s);
  // A second pin would leave no evictable slot of the two: refused, and nothing registered.
  try {
    m.register_adapter("q", adapter("q"), true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("with 2 slot(s) (--max-loras) at most 1 adapter(s) can be pinned"));
  }
  EXPECT_FALSE(m.is_registered("q"));
  // Replacing the pinned adapter by a pinned one is allowed (the pin count stays 1).
  m.register_adapter("p", adapter("p"), true, /*replace=*/true);
  m.poll();
  m.wait_for_loads();
  m.poll();
  EXPECT_EQ(tier(m, "p"), "slot");
  EXPECT_EQ(acquire_ready(m, "b").status, Status::kReady) << "the one unpinned slot must stay usable";
  EXPECT_EQ(m.consistency_errors(), "");
}

// A scripted sequence over 3 slots and 5 host places with a pinned adapter and a holder; the expected slot
// contents and host LRU order after every step are worked out by hand in the comments.
TEST_F(ManagerTest, LruOrderOfBothTiersWithPinsAndHolders) {
  AdapterManager m(cfg_, opts(3, 5));
  m.register_adapter("P", adapter("P"), true);
  for (const char* n : {"A", "B", "C", "D", "E", "F"}) m.register_adapter(n, adapter(n));
  m.poll();
  m.wait_for_loads();
  m.poll();
  EXPECT_THAT(m.slot_names(), ElementsAre("P", "", ""));
  use(m, "A");  // empty slot 1
  use(m, "B");  // empty slot 2
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "A", "B"));
  use(m, "A");  // hit: slot order P, B, A
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "B", "A"));
  use(m, "C");  // slot victim: B (P pinned, A more recent)
  EXPECT_THAT(m.slot_names(), ElementsAre("P", "A", "C"));
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "B", "A", "C"));
  int a = use(m, "A", /*keep_hold=*/true);  // A held from now on
  use(m, "D");                              // slot victim: C (A is held); host now full (5)
  EXPECT_THAT(m.slot_names(), ElementsAre("P", "A", "D"));
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "B", "C", "A", "D"));
  use(m, "E");  // host victim: B (P pinned); slot victim: D
  EXPECT_EQ(tier(m, "B"), "disk");
  EXPECT_THAT(m.slot_names(), ElementsAre("P", "A", "E"));
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "C", "A", "D", "E"));
  use(m, "B");  // host victim: C (A is in a slot); slot victim: E
  EXPECT_THAT(m.slot_names(), ElementsAre("P", "A", "B"));
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "A", "D", "E", "B"));
  m.release(a);
  use(m, "F");  // host victim: D; slot victim: A (unheld now, older than B)
  EXPECT_THAT(m.slot_names(), ElementsAre("P", "F", "B"));
  EXPECT_THAT(m.host_lru_names(), ElementsAre("P", "A", "E", "B", "F"));
  EXPECT_EQ(tier(m, "A"), "host");
  EXPECT_EQ(tier(m, "C"), "disk");
  EXPECT_EQ(tier(m, "D"), "disk");
  auto c = m.counters();
  EXPECT_EQ(c.evictions_slot, 5);   // B, C, D, E, A
  EXPECT_EQ(c.evictions_host, 3);   // B, C, D
  EXPECT_EQ(c.loads_from_disk, 8);  // P A B C D E B F
  EXPECT_EQ(m.consistency_errors(), "");
}

TEST_F(ManagerTest, RegistrationKeepsTheValidatedAdapterWhileTheHostTierHasRoom) {
  AdapterManager m(cfg_, opts(1, 2, /*keep_validated=*/true));
  for (const char* n : {"a", "b", "c"}) m.register_adapter(n, adapter(n));
  EXPECT_EQ(tier(m, "a"), "host");
  EXPECT_EQ(tier(m, "b"), "host");
  EXPECT_EQ(tier(m, "c"), "disk");  // no eviction for a registration
  use(m, "a");
  auto c = m.counters();
  EXPECT_EQ(c.loads_from_disk, 0);
  EXPECT_EQ(c.loads_from_host, 1);
}

TEST_F(ManagerTest, RequestCountsPerAdapter) {
  AdapterManager m(cfg_, opts(1, 1));
  m.register_adapter("a", adapter("a"));
  m.register_adapter("b", adapter("b"));
  EXPECT_TRUE(m.count_request("a"));
  EXPECT_TRUE(m.count_request("a"));
  EXPECT_TRUE(m.count_request("b"));
  auto c = m.counters();
  ASSERT_EQ(c.requests.size(), 2u);
  EXPECT_EQ(c.requests[0], (std::pair<std::string, int64_t>{"a", 2}));
  EXPECT_EQ(c.requests[1], (std::pair<std::string, int64_t>{"b", 1}));
  // A Prometheus counter never goes down: unregistering and registering the name again continues the count.
  m.unregister_adapter("a");
  EXPECT_FALSE(m.count_request("a"));
  m.register_adapter("a", adapter("a"));
  EXPECT_TRUE(m.count_request("a"));
  c = m.counters();
  ASSERT_EQ(c.requests.size(), 2u);
  EXPECT_EQ(c.requests[0], (std::pair<std::string, int64_t>{"a", 3}));
  // A churn of unique names keeps a bounded number of counts.
  for (int i = 0; i < 600; ++i) {
    std::string n = "churn" + std::to_string(i);
    m.register_adapter(n, adapter("b"));
    m.count_request(n);
    m.unregister_adapter(n);
  }
  EXPECT_LE(m.counters().requests.size(), 2u + 256u);
}

// ---- registration refusals
// ----------------------------------------------------------------------------------

class RefusalTest : public ManagerTest {
 protected:
  // Registers and expects a refusal of `kind` whose message contains `text`; the registry is unchanged.
  void expect_refused(AdapterManager& m, const std::string& name, const fs::path& path, ErrorKind kind,
                      const std::string& text, bool pinned = false) {
    const int before = m.counters().registered;
    try {
      m.register_adapter(name, path, pinned);
      ADD_FAILURE() << "registered " << name << " from " << path;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_THAT(e.what(), HasSubstr(text));
    }
    EXPECT_EQ(m.counters().registered, before);
    EXPECT_EQ(m.consistency_errors(), "");
  }
  fs::path write_for(const model::ModelConfig& c, const std::string& name, DemoAdapterSpec spec) {
    fs::path d = tmp_.path() / name;
    write_demo_adapter(d, c, spec);
    return d;
  }
};

TEST_F(RefusalTest, EveryValidationRefusalWithItsMessage) {
  ManagerOptions o = opts(2, 2);
  AdapterManager m(cfg_, o);
  expect_refused(m, "", adapter("a"), ErrorKind::kInvalid, "name must not be empty");
  expect_refused(m, "x", tmp_.path() / "missing", ErrorKind::kNotFound, "does not exist");
  test::write_file(tmp_.path() / "file", "x");
  expect_refused(m, "x", tmp_.path() / "file", ErrorKind::kInvalid, "is not a folder");

  DemoAdapterSpec s = demo_adapter_spec(0, 4, false, 3, DType::kBF16);
  // config does not parse / is unsupported
  fs::path bad = write_for(cfg_, "bad-config", s);
  test::write_file(bad / "adapter_config.json", "{not json");
  expect_refused(m, "x", bad, ErrorKind::kInvalid, "adapter 'x'");
  fs::path dora = write_for(cfg_, "dora", s);
  test::write_file(dora / "adapter_config.json",
                   "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], "
                   "\"use_dora\": true}");
  expect_refused(m, "x", dora, ErrorKind::kInvalid, "DoRA");
  // layers the base does not have
  model::ModelConfig deeper = cfg_;
  deeper.n_layers = 3;
  expect_refused(m, "x", write_for(deeper, "deeper", s), ErrorKind::kInvalid, "the base model has 2 layers");
  // shapes that do not fit
  model::ModelConfig wider = cfg_;
  wider.hidden_size = 128;
  wider.head_dim = 32;
  expect_refused(m, "x", write_for(wider, "wider", s), ErrorKind::kInvalid, "has shape");
  // rank over --max-lora-rank (8 here) — the message the issue quotes
  DemoAdapterSpec big = s;
  big.rank = 64;
  ManagerOptions o16 = o;
  o16.max_lora_rank = 16;
  AdapterManager m16(cfg_, o16);
  expect_refused(m16, "x", write_for(cfg_, "r64", big), ErrorKind::kInvalid,
                 "adapter rank 64 exceeds --max-lora-rank 16");
  // a module without slot memory
  ManagerOptions qv = o;
  qv.modules = parse_module_set({"q_proj", "v_proj"});
  AdapterManager mqv(cfg_, qv);
  expect_refused(mqv, "x", adapter("a"), ErrorKind::kInvalid, "k_proj, which has no LoRA slot memory");
  // duplicate name
  m.register_adapter("x", adapter("a"));
  expect_refused(m, "x", adapter("b"), ErrorKind::kInvalid, "adapter 'x' already exists");
}

TEST_F(RefusalTest, StrictBaseModelName) {
  DemoAdapterSpec s = demo_adapter_spec(0, 4, false, 3, DType::kBF16);
  s.base_model = "other-org/Other-7B";
  fs::path other = write_for(cfg_, "other", s);
  s.base_model = "meta-llama/Tiny-Llama";
  fs::path same = write_for(cfg_, "same", s);
  s.base_model = "";
  fs::path none = write_for(cfg_, "none", s);

  ManagerOptions o = opts(2, 2);
  o.strict_base = true;
  o.base_model_name = "/models/Tiny-Llama/";
  AdapterManager m(cfg_, o);
  expect_refused(m, "x", other, ErrorKind::kInvalid, "trained for base model 'other-org/Other-7B'");
  m.register_adapter("same", same);  // the same model by its last path component
  m.register_adapter("none", none);  // an adapter that names no base model
  ManagerOptions lax = o;
  lax.strict_base = false;
  AdapterManager ml(cfg_, lax);
  ml.register_adapter("other", other);
}

}  // namespace
}  // namespace lp::lora
