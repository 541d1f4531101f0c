// Weighted routes: a model name that resolves, per request, to ONE registered adapter (an "arm") by integer
// weight (`--lora-route 'assistant=v2-stable:90,v3-candidate:10'`, POST /v1/load_lora_route). A request with
// a `user` is sticky: a hash of (route, user) picks its arm, so a user stays on one arm while the route is
// unchanged; a request without one is spread by weight with a random draw. The table is thread-safe and owned
// by ServerState; picking an arm from a draw is a pure function (route_pick), so the split is unit-testable.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace lp::server {

struct RouteArm {
  std::string adapter;  // a registered adapter's name
  int64_t weight = 0;   // in [1, kMaxRouteWeight]
};

struct LoraRoute {
  std::string name;
  std::vector<RouteArm> arms;  // 1..kMaxRouteArms, adapters distinct, in the order given
  int64_t total_weight() const;
};

// Bounds: a route table changed at run time is client input like any other (every bound a 400).
inline constexpr size_t kMaxRouteArms = 16;
inline constexpr int64_t kMaxRouteWeight = 1'000'000;
inline constexpr size_t kMaxRouteNameBytes = 255;  // route and arm names, as adapter folder names
inline constexpr size_t kMaxRoutes = 256;

// The flag form "name=adapter:weight,adapter:weight,...": the name up to the first '=', arms split on ',',
// each arm's weight after its last ':'. Throws lp::Error (kInvalid) saying what is wrong (the caller names
// the flag). The result is checked with check_route_shape().
LoraRoute parse_route_spec(std::string_view spec);

// Shape rules independent of what is registered: a name of 1..255 bytes without control characters, 1..16
// arms, each a non-empty name (same rule) with a weight in [1, kMaxRouteWeight], no adapter twice. Throws
// ApiError (kInvalid) naming the field as POST /v1/load_lora_route spells it ("route_name",
// "arms[1].weight").
void check_route_shape(const LoraRoute& r);

// The arm a 64-bit draw selects: the draw scaled to [0, total weight) (its high bits: draw * total / 2^64),
// then the first arm whose cumulative weight exceeds it. A uniform draw selects arm i with probability
// weight_i / total.
size_t route_pick(const LoraRoute& r, uint64_t draw);

// The sticky draw for (route, user): XXH3-64 over the route name's length (8 bytes, little endian), the
// route name and the user, so no two (route, user) pairs share an encoding.
uint64_t route_user_draw(std::string_view route, std::string_view user);

// What a route's names are checked against when it is set.
struct RouteNames {
  std::string base_model_name;                         // the served model's name: not a route's name
  std::function<bool(const std::string&)> is_adapter;  // a registered adapter's name
};

class LoraRoutes {
 public:
  // Adds route `r`, or replaces one of its name when `replace` (atomically: a request sees the old route or
  // the new one, whole). Throws ApiError: kInvalid for a bad shape, a name that is the base model's or an
  // adapter's, a route that exists (without `replace`), or too many routes; kNotFound for an arm that is not
  // a registered adapter.
  void set(LoraRoute r, const RouteNames& names, bool replace);
  bool remove(const std::string& name);                                  // false when there was no such route
  std::shared_ptr<const LoraRoute> find(const std::string& name) const;  // null when none
  std::vector<std::shared_ptr<const LoraRoute>> list() const;            // by name
  // The routes (by name) that have `adapter` as an arm.
  std::vector<std::string> routes_using(const std::string& adapter) const;

  // The arm for one request (a reference into `r`): route_user_draw() when `user` is non-empty, else a
  // random draw from a generator shared by all threads.
  const RouteArm& pick(const LoraRoute& r, std::string_view user);

  // Held by every change that must be checked against the adapter registry and stay true until it is done:
  // setting a route (its arms are registered, its name is no adapter's), unloading an adapter (it is no
  // route's arm) and loading one (its name is no route's), so they cannot interleave and leave a route
  // pointing at nothing. Not held by lookups, nor by the on-demand resolver (a route's name is looked up
  // before any adapter's, so a resolver registration can at worst be shadowed by a route).
  std::unique_lock<std::mutex> lock_admin() { return std::unique_lock<std::mutex>(admin_mu_); }

 private:
  std::mutex admin_mu_;    // see lock_admin(); guards nothing by itself
  mutable std::mutex mu_;  // guards routes_ (the pointers; a LoraRoute is immutable once in the table)
  std::map<std::string, std::shared_ptr<const LoraRoute>> routes_;
  std::mutex rng_mu_;  // guards rng_
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace lp::server
