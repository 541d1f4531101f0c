#include "lora/adapter_manager.h"

#include <algorithm>
#include <utility>

#include "core/check.h"
#include "core/clock.h"
#include "core/log.h"
#include "io/file_open.h"
#include "lora/loader_thread.h"

namespace lp::lora {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// One registered adapter. The first block never changes after registration (the loader reads it without the
// lock); the rest is guarded by AdapterManager::mu_.
struct AdapterManager::Entry {
  const uint64_t id;
  const std::string name;
  const fs::path dir;  // resolved folder
  // Set for an adapter a client named (HTTP, resolver): every file of it, at registration and at every later
  // load from disk, must be a regular file inside this root (io::open_regular_file).
  const std::optional<fs::path> confine_root;
  const bool pinned;
  const int rank;  // the adapter's largest rank

  bool registered = true;                     // false once unregistered (kept alive by a holder or a load)
  std::shared_ptr<const PackedAdapter> host;  // non-null: in the host tier
  bool loading = false;                       // a disk → host load is in flight (holds a host place)
  int slot = -1;                              // >= 0: in that slot (host stays set: the tier is inclusive)
  std::string failed;                         // the last load's error, reported until failed_at + retry
  Clock::time_point failed_at{};
  Clock::time_point fresh_until{};  // loaded for a waiter, not in a slot yet: another load may not evict it

  Entry(uint64_t id_, std::string name_, fs::path dir_, std::optional<fs::path> root_, bool pinned_,
        int rank_)
      : id(id_),
        name(std::move(name_)),
        dir(std::move(dir_)),
        confine_root(std::move(root_)),
        pinned(pinned_),
        rank(rank_) {}
};

namespace {

PlanOptions plan_options(const ManagerOptions& o) {
  PlanOptions p;
  p.max_loras = o.max_loras;
  p.max_lora_rank = o.max_lora_rank;
  p.lora_dtype = o.lora_dtype;
  p.modules = o.modules;
  p.max_cpu_loras = o.max_cpu_loras;
  return p;
}

// "meta-llama/Llama-3.2-1B" names the same model as "/models/Llama-3.2-1B/".
bool same_model(const std::string& a, const std::string& b) {
  auto last = [](std::string s) {
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    size_t p = s.rfind('/');
    return p == std::string::npos ? s : s.substr(p + 1);
  };
  return a == b || last(a) == last(b);
}

double ms_since(double t0) {
  return (now_seconds() - t0) * 1e3;
}

}  // namespace

AdapterManager::AdapterManager(const model::ModelConfig& base, ManagerOptions options)
    : shapes_(base_shapes(base)),
      options_(std::move(options)),
      plan_(plan_memory(base, plan_options(options_))),
      bank_(base, options_.max_loras, options_.max_lora_rank, options_.lora_dtype, options_.modules,
            options_.slot_memory) {
  options_.max_cpu_loras = plan_.options.max_cpu_loras;
  LP_CHECK(static_cast<int64_t>(bank_.bytes()) == plan_.slots_bytes, "slot bank {} bytes, plan {}",
           bank_.bytes(), plan_.slots_bytes);
  slots_.resize(options_.max_loras);
  loader_ = std::make_unique<LoaderThread>();
}

AdapterManager::~AdapterManager() {
  loader_.reset();
}

fs::path AdapterManager::resolve_path(const fs::path& path,
                                      const std::optional<fs::path>& confine_root) const {
  std::error_code ec;
  fs::path canon = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec)
    fail_as(ErrorKind::kNotFound, "adapter path {} cannot be resolved: {}", path.string(), ec.message());
  if (confine_root) {
    fs::path root = fs::canonical(*confine_root, ec);
    if (ec || !io::path_is_within(canon, root))
      fail_as(ErrorKind::kForbidden, "adapter path {} is outside the allowed LoRA root", path.string());
  }
  if (!fs::exists(canon, ec)) fail_as(ErrorKind::kNotFound, "adapter path {} does not exist", path.string());
  if (!fs::is_directory(canon, ec)) fail("adapter path {} is not a folder", path.string());
  return canon;
}

void AdapterManager::register_adapter(const std::string& name, const fs::path& path, bool pinned,
                                      bool replace, const std::optional<fs::path>& confine_root) {
  if (name.empty()) fail("adapter name must not be empty");
  if (!replace) {
    std::lock_guard lk(mu_);
    if (by_name_.count(name)) fail("adapter '{}' already exists", name);
  }
  const fs::path dir = resolve_path(path, confine_root);
  // Full validation, without the lock (disk I/O): parse, check against the base shapes, convert, fit.
  std::shared_ptr<const PackedAdapter> data;
  std::string trained_for;
  try {
    LoraAdapter a = load_adapter(dir, shapes_, confine_root);
    trained_for = a.config.base_model_name_or_path;
    PackedAdapter p = pack_adapter(a, options_.lora_dtype, options_.slot_memory);
    bank_.check_fits(p);  // reads only the bank's immutable shape fields
    data = std::make_shared<const PackedAdapter>(std::move(p));
  } catch (const Error& err) {
    throw Error(fmt::format("adapter '{}': {}", name, err.what()), err.kind());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& err) {  // e.g. a filesystem error while reading: the folder is unusable
    throw Error(fmt::format("adapter '{}': {}", name, err.what()), ErrorKind::kInvalid);
  }
  if (options_.strict_base && !trained_for.empty() && !same_model(trained_for, options_.base_model_name))
    fail("adapter '{}' was trained for base model '{}', but this server runs '{}' (--strict-base)", name,
         trained_for, options_.base_model_name);

  std::lock_guard lk(mu_);
  auto old = by_name_.find(name);
  if (old != by_name_.end() && !replace) fail("adapter '{}' already exists", name);
  const bool old_pinned = old != by_name_.end() && old->second->pinned;
  // A pin may never take the last evictable slot: every other adapter would then wait for a slot forever.
  if (pinned && static_cast<int>(pinned_.size()) - (old_pinned ? 1 : 0) + 1 >= options_.max_loras)
    fail("cannot pin adapter '{}': with {} slot(s) (--max-loras) at most {} adapter(s) can be pinned, so that one "
         "slot stays evictable for the others",
         name, options_.max_loras, options_.max_loras - 1);
  if (old != by_name_.end()) unregister_locked(old);  // only now that the new one is known to be good
  auto e = std::make_shared<Entry>(next_id_++, name, dir, confine_root, pinned, data->max_rank);
  by_name_.emplace(name, e);
  unregistered_counts_.erase(name);  // registered again: its count is live, never dropped
  if (pinned) pinned_.push_back(e);
  // Keep the validated result when a host place is free (a pinned adapter may evict an unpinned host-only
  // one for it; slots are never touched here: that is the engine thread's business).
  if (options_.keep_validated && (n_host_ + n_loading_ < options_.max_cpu_loras ||
                                  (pinned && make_host_room_locked(/*evict_slots=*/false)))) {
    e->host = std::move(data);
    ++n_host_;
    host_lru_.touch(e.get());
  }
}

void AdapterManager::unregister_adapter(const std::string& name) {
  std::lock_guard lk(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail_as(ErrorKind::kNotFound, "adapter '{}' is not registered", name);
  unregister_locked(it);
}

void AdapterManager::unregister_locked(Registry::iterator it) {
  EntryPtr e = it->second;
  by_name_.erase(it);
  e->registered = false;
  // Its request count stays (a name registered again continues it), but only for the most recently
  // unregistered names: a churn of unique names must not grow the map (and the metric) without bound.
  if (requests_by_name_.count(e->name)) {
    unregistered_counts_.touch(e->name);
    if (unregistered_counts_.size() > kKeptUnregisteredCounts) {
      auto oldest = unregistered_counts_.victim([](const std::string&) { return true; });
      unregistered_counts_.erase(*oldest);
      requests_by_name_.erase(*oldest);
    }
  }
  std::erase(pinned_, e);
  if (e->slot >= 0 && slots_[e->slot].holders > 0) return;  // the last release() removes it
  remove_locked(e);                                         // a load in flight is discarded when it finishes
}

bool AdapterManager::is_registered(const std::string& name) const {
  std::lock_guard lk(mu_);
  return by_name_.count(name) != 0;
}

bool AdapterManager::count_request(const std::string& name) {
  std::lock_guard lk(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return false;
  ++requests_by_name_[name];
  return true;
}

std::string AdapterManager::tier_locked(const Entry& e) const {
  if (e.slot >= 0) return "slot";
  if (e.loading) return "loading";
  if (e.host) return "host";
  return "disk";
}

std::vector<AdapterManager::Info> AdapterManager::list() const {
  std::lock_guard lk(mu_);
  std::vector<Info> out;
  for (const auto& [name, e] : by_name_)
    out.push_back({name, e->dir, e->pinned, tier_locked(*e), e->slot, e->rank});
  std::sort(out.begin(), out.end(), [](const Info& a, const Info& b) { return a.name < b.name; });
  return out;
}

std::optional<AdapterManager::Info> AdapterManager::info(const std::string& name) const {
  std::lock_guard lk(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  const Entry& e = *it->second;
  return Info{name, e.dir, e.pinned, tier_locked(e), e.slot, e.rank};
}

// ---- engine thread ----------------------------------------------------------------------------------------

AdapterManager::Acquire AdapterManager::acquire(const std::string& name) {
  const double t0 = now_seconds();
  EntryPtr e;
  std::shared_ptr<const PackedAdapter> copy;
  Acquire r;
  {
    std::lock_guard lk(mu_);
    auto it = by_name_.find(name);
    if (it == by_name_.end())
      return {Status::kUnknown, -1, fmt::format("adapter '{}' is not registered", name)};
    e = it->second;
    r = place_locked(e, /*hold=*/true, &copy);
    r.id = e->id;
    if (!copy) {
      if (r.status == Status::kReady) counters_.load_ms_hit.observe(ms_since(t0));  // a slot hit
      return r;
    }
  }
  r = fill_slot(e, r.slot, std::move(copy));
  r.id = e->id;
  return r;
}

// Decides what acquire()/poll() do for `e`; on a host → slot move it claims the slot (and the hold) and
// returns the data to copy in *copy, which the caller copies after dropping the lock.
AdapterManager::Acquire AdapterManager::place_locked(const EntryPtr& e, bool hold,
                                                     std::shared_ptr<const PackedAdapter>* copy) {
  if (e->host) host_lru_.touch(e.get());
  if (e->slot >= 0) {  // hit
    if (hold) ++slots_[e->slot].holders;
    if (hold) ++counters_.slot_hits;
    slot_lru_.touch(e->slot);
    return {Status::kReady, e->slot, {}};
  }
  if (e->loading) return {Status::kLoading, -1, {}};
  if (!e->failed.empty()) {
    if (Clock::now() - e->failed_at < options_.failed_retry_after) return {Status::kFailed, -1, e->failed};
    e->failed.clear();  // retry from disk
  }
  if (!e->host)
    return start_load_locked(e) ? Acquire{Status::kLoading, -1, {}} : Acquire{Status::kNoSlot, -1, {}};
  const int s = free_slot_locked();
  if (s < 0) return {Status::kNoSlot, -1, {}};
  if (slots_[s].entry) evict_slot_locked(s);
  slots_[s].entry = e;
  slots_[s].holders = hold ? 1 : 0;
  e->slot = s;
  e->fresh_until = {};
  slot_lru_.touch(s);
  *copy = e->host;
  return {Status::kReady, s, {}};
}

// The host → slot copy, on the engine thread without the lock: slot `s` is claimed by `e`, and no token
// reads it (its previous occupant had no holders), so nothing else touches its memory meanwhile.
AdapterManager::Acquire AdapterManager::fill_slot(const EntryPtr& e, int s,
                                                  std::shared_ptr<const PackedAdapter> data) {
  const double t0 = now_seconds();
  std::string error;
  try {
    bank_.load(s, *data);
  } catch (const Error& err) {  // validated at registration and load, so only a changed bank could fail
    error = fmt::format("copying adapter '{}' into slot {} failed: {}", e->name, s, err.what());
  }
  const double ms = ms_since(t0);
  std::lock_guard lk(mu_);
  if (!error.empty()) {
    if (e->slot == s) {
      slots_[s] = {};
      slot_lru_.erase(s);
      e->slot = -1;
    }
    e->failed = error;
    e->failed_at = Clock::now();
    ++counters_.load_failures;
    if (!e->registered) remove_locked(e);
    return {Status::kFailed, -1, error};
  }
  ++counters_.loads_from_host;
  counters_.load_ms_host.observe(ms);
  return {Status::kReady, s, {}};
}

void AdapterManager::release(int slot) {
  std::lock_guard lk(mu_);
  LP_CHECK(slot >= 0 && slot < options_.max_loras, "release of slot {} (max_loras {})", slot,
           options_.max_loras);
  SlotState& st = slots_[slot];
  LP_CHECK(st.entry && st.holders > 0, "release of slot {} that has no holder", slot);
  if (--st.holders == 0 && !st.entry->registered) remove_locked(st.entry);
}

void AdapterManager::poll() {
  struct Fill {
    EntryPtr e;
    int slot;
    std::shared_ptr<const PackedAdapter> data;
  };
  std::vector<Fill> fills;
  {
    std::lock_guard lk(mu_);
    for (const EntryPtr& e : pinned_) {
      if (e->slot >= 0) continue;
      std::shared_ptr<const PackedAdapter> copy;
      Acquire r = place_locked(e, /*hold=*/false, &copy);
      if (copy) fills.push_back({e, r.slot, std::move(copy)});
    }
  }
  for (Fill& f : fills) fill_slot(f.e, f.slot, std::move(f.data));
}

// ---- tiers (mu_ held)
// ---------------------------------------------------------------------------------------

// Takes a host place for `e` and queues its disk → host load; false when the host tier has no place that
// may be freed (every place is in a held or pinned slot, or loading).
bool AdapterManager::start_load_locked(const EntryPtr& e) {
  if (!make_host_room_locked(/*evict_slots=*/true)) return false;
  e->loading = true;
  ++n_loading_;
  loader_->submit([this, e] {
    const double t0 = now_seconds();
    std::shared_ptr<const PackedAdapter> data;
    std::string error;
    try {
      if (options_.on_load) options_.on_load(e->name);
      PackedAdapter p =
          pack_adapter(load_adapter(e->dir, shapes_, e->confine_root), options_.lora_dtype, options_.slot_memory);
      bank_.check_fits(p);  // immutable fields only: safe on this thread
      data = std::make_shared<const PackedAdapter>(std::move(p));
    } catch (const std::exception& err) {
      error = fmt::format("loading adapter '{}' from {} failed: {}", e->name, e->dir.string(), err.what());
    }
    finish_load(e, std::move(data), error, ms_since(t0));
  });
  return true;
}

// Loader thread: publishes a finished load (or its failure) into the tiers.
void AdapterManager::finish_load(const EntryPtr& e, std::shared_ptr<const PackedAdapter> data,
                                 const std::string& error, double ms) {
  if (data)
    log_debug("loaded adapter {} from disk: {:.2f} MiB in {:.0f} ms", e->name, data->bytes() / 1048576.0, ms);
  {
    std::lock_guard lk(mu_);
    e->loading = false;
    --n_loading_;
    if (!e->registered) {
      // unregistered meanwhile: the result is dropped and with it the host place
    } else if (data) {
      e->host = std::move(data);
      e->fresh_until = Clock::now() + options_.fresh_protect;
      ++n_host_;
      host_lru_.touch(e.get());
      ++counters_.loads_from_disk;
      counters_.load_ms_disk.observe(ms);
    } else {
      e->failed = error;
      e->failed_at = Clock::now();
      ++counters_.load_failures;
      log_warn("{}", error);
    }
  }
  loads_done_.notify_all();
}

// Makes sure the host tier has a free place: evicts the least recently used host-only adapter (HOST → DISK)
// that is not fresh (loaded for a waiting request that has not had it in a slot yet, for `fresh_protect`);
// with evict_slots, when every host adapter is in a slot, the least recently used unheld unpinned slot
// (SLOT → HOST → DISK).
bool AdapterManager::make_host_room_locked(bool evict_slots) {
  if (n_host_ + n_loading_ < options_.max_cpu_loras) return true;
  const Clock::time_point now = Clock::now();
  auto victim =
      host_lru_.victim([&](Entry* x) { return x->slot < 0 && !x->pinned && now >= x->fresh_until; });
  if (victim) {
    drop_host_locked(**victim);
    ++counters_.evictions_host;
    return true;
  }
  if (!evict_slots) return false;
  auto s = slot_lru_.victim([&](int i) { return slots_[i].holders == 0 && !slots_[i].entry->pinned; });
  if (!s) return false;
  Entry& x = *slots_[*s].entry;
  evict_slot_locked(*s);
  drop_host_locked(x);
  ++counters_.evictions_host;
  return true;
}

// An empty slot, else the least recently used slot without holders and not pinned; -1 when none.
int AdapterManager::free_slot_locked() {
  for (int i = 0; i < options_.max_loras; ++i)
    if (!slots_[i].entry) return i;
  auto s = slot_lru_.victim([&](int i) { return slots_[i].holders == 0 && !slots_[i].entry->pinned; });
  return s ? *s : -1;
}

// SLOT → HOST. Only the slot's bookkeeping changes: its memory keeps the old contents until the next fill,
// which is harmless because no token refers to a slot without holders.
void AdapterManager::evict_slot_locked(int s) {
  SlotState& st = slots_[s];
  LP_CHECK(st.entry && st.holders == 0 && !st.entry->pinned, "evicting slot {} that is held or pinned", s);
  st.entry->slot = -1;
  st = {};
  slot_lru_.erase(s);
  ++counters_.evictions_slot;
}

// HOST → DISK.
void AdapterManager::drop_host_locked(Entry& e) {
  LP_CHECK(e.host && e.slot < 0, "dropping the host copy of '{}' (slot {})", e.name, e.slot);
  e.host.reset();
  --n_host_;
  host_lru_.erase(&e);
}

// Frees everything an unregistered adapter holds (its slot must have no holders). Takes `e` by value: the
// caller's pointer may be the slot table's own, which this clears.
void AdapterManager::remove_locked(EntryPtr e) {
  if (e->slot >= 0) {
    LP_CHECK(slots_[e->slot].holders == 0, "removing '{}' from a held slot", e->name);
    slots_[e->slot] = {};
    slot_lru_.erase(e->slot);
    e->slot = -1;
  }
  if (e->host) drop_host_locked(*e);
}

// ---- observation
// --------------------------------------------------------------------------------------------

CacheCounters AdapterManager::counters() const {
  std::lock_guard lk(mu_);
  CacheCounters c = counters_;
  for (const SlotState& s : slots_) {
    c.in_slots += s.entry ? 1 : 0;
    c.held_slots += s.holders > 0 ? 1 : 0;
  }
  c.in_host = n_host_;
  c.loading = n_loading_;
  c.registered = static_cast<int>(by_name_.size());
  c.requests.assign(requests_by_name_.begin(), requests_by_name_.end());  // name order (a std::map)
  return c;
}

void AdapterManager::wait_for_loads() const {
  std::unique_lock lk(mu_);
  loads_done_.wait(lk, [&] { return n_loading_ == 0; });
}

AdapterManager::Tiers AdapterManager::tiers() const {
  std::lock_guard lk(mu_);
  Tiers t;
  for (const SlotState& s : slots_)
    t.slots.push_back(s.entry ? SlotInfo{s.entry->name, s.entry->pinned, s.holders} : SlotInfo{});
  for (Entry* e : host_lru_.order()) t.host.push_back(e->name);
  return t;
}

std::vector<std::string> AdapterManager::slot_names() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (const SlotState& s : slots_) out.push_back(s.entry ? s.entry->name : "");
  return out;
}

std::vector<std::string> AdapterManager::host_lru_names() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (Entry* e : host_lru_.order()) out.push_back(e->name);
  return out;
}

std::string AdapterManager::consistency_errors() const {
  std::lock_guard lk(mu_);
  std::string err;
  auto bad = [&](std::string s) { err += s + "\n"; };
  int occupied = 0;
  for (int i = 0; i < options_.max_loras; ++i) {
    const SlotState& s = slots_[i];
    if (!s.entry) {
      if (s.holders != 0) bad(fmt::format("empty slot {} has {} holders", i, s.holders));
      if (slot_lru_.contains(i)) bad(fmt::format("empty slot {} is in the slot LRU", i));
      continue;
    }
    ++occupied;
    const Entry& e = *s.entry;
    if (e.slot != i) bad(fmt::format("slot {} holds '{}', which says slot {}", i, e.name, e.slot));
    if (!e.host) bad(fmt::format("slot {} holds '{}' without a host copy", i, e.name));
    if (s.holders < 0) bad(fmt::format("slot {} has {} holders", i, s.holders));
    if (!e.registered && s.holders == 0)
      bad(fmt::format("unregistered '{}' kept in unheld slot {}", e.name, i));
    if (!slot_lru_.contains(i)) bad(fmt::format("slot {} missing from the slot LRU", i));
    if (e.registered && (by_name_.find(e.name) == by_name_.end() || by_name_.at(e.name).get() != &e))
      bad(fmt::format("slot {} holds '{}', which is not the registered entry", i, e.name));
  }
  if (static_cast<int>(slot_lru_.size()) != occupied) bad("slot LRU size differs from occupied slots");
  int with_host = 0, loading = 0;
  for (const auto& [name, e] : by_name_) {
    if (!e->registered) bad(fmt::format("'{}' in the registry but marked unregistered", name));
    if (e->slot >= 0 && slots_[e->slot].entry != e)
      bad(fmt::format("'{}' says slot {} but is not there", name, e->slot));
    if (e->host && e->loading) bad(fmt::format("'{}' is in the host tier and loading", name));
    if (static_cast<bool>(e->host) != host_lru_.contains(e.get()))
      bad(fmt::format("'{}' host LRU mismatch", name));
    with_host += e->host ? 1 : 0;
    loading += e->loading ? 1 : 0;
  }
  for (const SlotState& s : slots_)  // unregistered adapters still held in a slot
    if (s.entry && !s.entry->registered) ++with_host;
  if (with_host != n_host_)
    bad(fmt::format("host tier count {} but {} adapters have host data", n_host_, with_host));
  if (static_cast<int>(host_lru_.size()) != n_host_) bad("host LRU size differs from the host tier count");
  if (loading > n_loading_) bad(fmt::format("{} adapters loading but n_loading {}", loading, n_loading_));
  if (n_host_ + n_loading_ > options_.max_cpu_loras)
    bad(fmt::format("host tier over capacity: {} + {} loading > {}", n_host_, n_loading_,
                    options_.max_cpu_loras));
  for (const EntryPtr& e : pinned_)
    if (!e->registered || !e->pinned) bad(fmt::format("pinned list holds '{}' wrongly", e->name));
  return err;
}

}  // namespace lp::lora
