// AdapterManager: the three-tier LoRA adapter cache that lets a server with `max_loras` slots serve any
// number of registered adapters. It owns the registry (name → folder), the host tier (adapters parsed,
// validated, scale-folded and converted to the slot dtype, at most `max_cpu_loras`), the SlotBank the forward
// pass reads, and the loader thread that does all disk I/O.
//
// State machine of one registered adapter (the tier list() reports in brackets):
//
//   register ──▶ DISK ["disk"]  (or HOST at once: see "Registration" below)
//   DISK    ──acquire() miss, a host place is free or evictable──▶ LOADING ["loading"]  (else kNoSlot)
//   LOADING ──loader succeeds──▶ HOST ["host"]
//   LOADING ──loader fails──▶ DISK; for `failed_retry_after` acquire() answers kFailed with that error
//   HOST    ──acquire(), a slot is empty or evictable──▶ SLOT ["slot"]  (host → slot copy; else kNoSlot)
//   SLOT    ──evicted (slot LRU: no holders, not pinned)──▶ HOST
//   HOST    ──evicted (host LRU: not in a slot, not pinned, not fresh)──▶ DISK
//   any     ──unregister──▶ gone: at once when no request holds it; otherwise it leaves the registry at once
//                           (new requests: kUnknown / kNotFound) and the last release() frees its slot and
//                           host place
//   Never: evicting a slot with holders or a pinned adapter, evicting a LOADING adapter, a second load of
//   the same adapter, activating an unregistered name.
//
// Rules (what the tests check):
//   - The host tier is inclusive: an adapter in a slot keeps its host copy (so SLOT → HOST is free), which is
//     why max_cpu_loras >= max_loras. A LOADING adapter holds a host place: in-progress loads are never
//     evicted and never over-commit the tier.
//   - A slot with holders (running requests) is never evicted; a pinned adapter is never evicted from its
//     slot or from the host tier. When nothing can be evicted, acquire() answers kNoSlot — "cache full" is an
//     expected, typed result (the scheduler lets the request wait), never an exception.
//   - Eviction is least-recently-used per tier: the slot tier orders by acquire() hits, the host tier by
//     every acquire() of the adapter (a waiting request keeps its adapter warm). An adapter just loaded for a
//     waiting request is not evicted by another load until it has been in a slot (or `fresh_protect` passed).
//   - One load per adapter at a time: every acquire() of a LOADING adapter waits on the same load.
//   - Registration validates fully (load_adapter + pack_adapter + SlotBank::check_fits) so that errors
//     surface at once. The validated result is kept in the host tier when a host place is free (no
//     eviction for it, except for a pinned adapter); otherwise it is dropped and the adapter starts in DISK.
//
// Threads: every method is thread-safe unless marked "engine thread". The engine-thread methods (acquire,
// release, poll, view) must all be called from one thread, the one that runs the forward pass: it alone
// writes slot contents (host → slot copies happen inside acquire(), without holding the manager's mutex),
// and it alone reads them. acquire() never blocks on disk I/O.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "lora/cache_counters.h"
#include "lora/lru.h"
#include "lora/plan.h"
#include "lora/slot_bank.h"
#include "model/config.h"
#include "model/lora_view.h"

namespace lp::lora {

class LoaderThread;

struct ManagerOptions {
  int max_loras = 1;                // --max-loras: slots
  int max_cpu_loras = 0;            // --max-cpu-loras: host tier places (0: = max_loras; smaller is an error)
  int max_lora_rank = 16;           // --max-lora-rank
  DType lora_dtype = DType::kBF16;  // the slot dtype, already resolved from --lora-dtype
  ModuleSet modules = kAllModules;  // which projections get slot memory
  // Where the slots live: null = host memory (the CPU executor); else the executor's device memory
  // (model::Executor::slot_memory()), which also page-locks the host tier's adapters for DMA.
  DeviceMemory* slot_memory = nullptr;
  bool strict_base = false;     // refuse adapters whose base_model_name_or_path names another model
  std::string base_model_name;  // the served model's name or path (for strict_base)
  bool keep_validated = true;   // keep the result of registration's validation in the host tier if room
  // How long a failed load's error is reported to acquire() before the next acquire() tries the disk again.
  // Must be longer than one engine step, so that every request waiting on the load sees the failure.
  std::chrono::milliseconds failed_retry_after{10000};
  // How long an adapter loaded for a waiting request, and not yet in a slot, is safe from being evicted by
  // another adapter's load. Without it, requests that wait for a slot evict each other's loads (a load storm
  // when more distinct adapters wait than the host tier holds); after it, an adapter whose requests went
  // away cannot keep its host place forever.
  std::chrono::milliseconds fresh_protect{2000};
  // Testing hook: called on the loader thread before each disk → host load with the adapter's name; it may
  // throw lp::Error (a failing disk) or block (a slow one).
  std::function<void(const std::string&)> on_load;
};

class AdapterManager {
 public:
  // Allocates the SlotBank: exactly plan_memory(base, ...).slots_bytes. Throws lp::Error for bad options.
  AdapterManager(const model::ModelConfig& base, ManagerOptions options);
  ~AdapterManager();  // stops the loader thread (a load in progress finishes first)
  AdapterManager(const AdapterManager&) = delete;
  AdapterManager& operator=(const AdapterManager&) = delete;

  // Any thread. Validates and registers; blocks on disk I/O (the caller is a CLI or HTTP thread).
  // Throws lp::Error: kInvalid (empty name, "adapter 'x' already exists", a bad config/tensor/shape,
  // "adapter rank 64 exceeds --max-lora-rank 16", a base-model mismatch under strict_base, a pin that
  // would leave no evictable slot: at most max_loras - 1 adapters are pinned), kNotFound (no such folder). Whether a path may be used at all (HTTP paths must stay inside
  // --lora-root) is the server's decision (server/lora_paths.h). pinned: placed in a slot by the next poll()
  // and never evicted.
  // replace: an adapter already registered under `name` is replaced (load_inplace), but only once the new
  // folder has passed validation; if it fails, the old registration stays as it was.
  // confine_root: set for a folder a client named (HTTP, the resolver; unset for the operator's
  // --lora-modules). The folder must lie inside it (kForbidden), and every file read from it, now and at
  // every later reload from disk on the loader thread, must be a regular file whose real path is inside it
  // (io::open_regular_file: kForbidden outside, kInvalid not a regular file). Unconfined adapters' files
  // must be regular files too.
  void register_adapter(const std::string& name, const std::filesystem::path& path, bool pinned = false,
                        bool replace = false,
                        const std::optional<std::filesystem::path>& confine_root = std::nullopt);
  // Any thread. Throws kNotFound when `name` is not registered. See the state machine for holders.
  void unregister_adapter(const std::string& name);
  bool is_registered(const std::string& name) const;
  // Any thread. Counts one request for `name` (the requests-per-adapter counter); false if not registered.
  bool count_request(const std::string& name);

  struct Info {
    std::string name;
    std::filesystem::path path;  // the resolved folder
    bool pinned = false;
    std::string tier;  // "slot" | "host" | "loading" | "disk"
    int slot = -1;
    int rank = 0;  // the adapter's largest rank
  };
  std::vector<Info> list() const;  // registered adapters, in name order
  std::optional<Info> info(const std::string& name) const;

  enum class Status {
    kReady,    // `slot` holds the adapter; one hold was taken (release(slot) when the request is done)
    kLoading,  // the disk → host load is in flight (started now if it was not): ask again next step
    kNoSlot,   // every slot (or host place) is held, pinned or loading: wait; nothing was evicted
    kFailed,   // the load failed: `error` says why (the same message for every waiter); fail the request
    kUnknown,  // not registered (or being unregistered)
  };
  struct Acquire {
    Status status = Status::kUnknown;
    int slot = -1;
    std::string error;
    uint64_t id = 0;  // the registration (new for every register(), never 0): keys caches of adapter output
  };
  // Engine thread. Never blocks on disk I/O; a host → slot copy (a few ms for a 1B model) happens here.
  Acquire acquire(const std::string& name);
  // Engine thread: drops one hold taken by acquire(). A slot left without holders by an unregistered
  // adapter is freed now.
  void release(int slot);
  // Engine thread, between steps: places pinned adapters that are not in a slot yet (starting their loads).
  void poll();
  // Engine thread: what Model::forward reads.
  const model::LoraBankView& view() const { return bank_.view(); }
  const SlotBank& bank() const { return bank_; }
  int max_loras() const { return options_.max_loras; }
  int max_cpu_loras() const { return options_.max_cpu_loras; }
  const MemoryPlan& plan() const { return plan_; }

  CacheCounters counters() const;  // any thread: a consistent snapshot
  // Any thread: blocks until no disk → host load is in flight (tests, benchmarks, shutdown).
  void wait_for_loads() const;
  // Any thread: checks every invariant of the state machine; returns "" or a description of what is wrong.
  std::string consistency_errors() const;
  // Any thread: who is in each slot ("" when empty) and the host tier from least to most recently used.
  std::vector<std::string> slot_names() const;
  std::vector<std::string> host_lru_names() const;
  // Any thread: both tiers in one consistent snapshot (the operator dashboard): each slot's adapter ("" when
  // empty), pin and holders (running requests), and the host tier from least to most recently used.
  struct SlotInfo {
    std::string name;
    bool pinned = false;
    int holders = 0;
  };
  struct Tiers {
    std::vector<SlotInfo> slots;  // (max_loras), by slot index
    std::vector<std::string> host;
  };
  Tiers tiers() const;

 private:
  struct Entry;
  using EntryPtr = std::shared_ptr<Entry>;
  using Registry = std::unordered_map<std::string, EntryPtr>;  // by name
  struct SlotState {
    EntryPtr entry;   // null: empty
    int holders = 0;  // running requests using it
  };

  Acquire place_locked(const EntryPtr& e, bool hold, std::shared_ptr<const PackedAdapter>* copy);
  Acquire fill_slot(const EntryPtr& e, int slot, std::shared_ptr<const PackedAdapter> data);
  bool start_load_locked(const EntryPtr& e);
  void finish_load(const EntryPtr& e, std::shared_ptr<const PackedAdapter> data, const std::string& error,
                   double ms);
  bool make_host_room_locked(bool evict_slots);
  int free_slot_locked();
  void evict_slot_locked(int slot);
  void drop_host_locked(Entry& e);
  void remove_locked(EntryPtr e);
  void unregister_locked(Registry::iterator it);
  std::filesystem::path resolve_path(const std::filesystem::path& path,
                                     const std::optional<std::filesystem::path>& confine_root) const;
  std::string tier_locked(const Entry& e) const;

  const BaseShapes shapes_;
  ManagerOptions options_;
  MemoryPlan plan_;
  SlotBank bank_;  // slot contents: engine thread only (its immutable fields are read by the loader)

  // mu_ guards everything below it up to `loader_`: the registry, every Entry's mutable fields, the slot
  // table, both LRU orders and the counters. It does not guard slot contents (bank_, engine thread only) or
  // the PackedAdapter data (immutable once published, kept alive by shared_ptr).
  mutable std::mutex mu_;
  mutable std::condition_variable loads_done_;         // signalled when n_loading_ drops
  Registry by_name_;  // registered adapters
  std::vector<SlotState> slots_;                       // (max_loras)
  LruList<int> slot_lru_;                              // occupied slots
  LruList<Entry*> host_lru_;                           // entries with host data
  std::vector<EntryPtr> pinned_;                       // registered pinned adapters
  int n_host_ = 0;                                     // entries with host data (in the host tier)
  int n_loading_ = 0;                                  // loads in flight (each holds a host place)
  uint64_t next_id_ = 1;
  CacheCounters counters_;
  // Requests per adapter name since start. Kept across unregister / register of the same name, so the
  // exported counter never goes down (Prometheus counters must be monotonic): for every registered name and
  // the kKeptUnregisteredCounts most recently unregistered ones (older ones are dropped, bounding memory).
  static constexpr size_t kKeptUnregisteredCounts = 256;
  std::map<std::string, int64_t> requests_by_name_;
  LruList<std::string> unregistered_counts_;  // names with a count that are not registered, oldest first

  std::unique_ptr<LoaderThread> loader_;  // last: destroyed (joined) before the state its jobs touch
};

}  // namespace lp::lora
