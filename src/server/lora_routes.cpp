#include "server/lora_routes.h"

#define XXH_INLINE_ALL  // header-only use of Debian's libxxhash-dev: nothing to link
#include <xxhash.h>

#include <charconv>
#include <set>

#include "core/check.h"
#include "server/api_error.h"

namespace lp::server {

namespace {

// Names go into /v1/models, metric labels and (arms) a response header: no control characters, bounded.
void check_name(const std::string& name, const std::string& what, const std::string& param) {
  if (name.empty()) fail_param(param, "{} must not be empty", what);
  if (name.size() > kMaxRouteNameBytes)
    fail_param(param, "{} is {} bytes long, more than {}", what, name.size(), kMaxRouteNameBytes);
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) fail_param(param, "{} must not contain control characters", what);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

int64_t LoraRoute::total_weight() const {
  int64_t t = 0;
  for (const auto& a : arms) t += a.weight;
  return t;
}

LoraRoute parse_route_spec(std::string_view spec) {
  const size_t eq = spec.find('=');
  if (eq == std::string_view::npos) fail("expected NAME=ADAPTER:WEIGHT[,ADAPTER:WEIGHT...], got '{}'", spec);
  LoraRoute r;
  r.name = std::string(trim(spec.substr(0, eq)));
  std::string_view rest = spec.substr(eq + 1);
  if (trim(rest).empty())
    fail("route '{}' has no arms (expected NAME=ADAPTER:WEIGHT[,ADAPTER:WEIGHT...])", r.name);
  while (true) {
    const size_t comma = rest.find(',');
    std::string_view arm = trim(rest.substr(0, comma));
    const size_t colon = arm.rfind(':');
    if (colon == std::string_view::npos)
      fail("arm '{}' of route '{}' has no weight (expected ADAPTER:WEIGHT)", arm, r.name);
    RouteArm a;
    a.adapter = std::string(trim(arm.substr(0, colon)));
    std::string_view w = trim(arm.substr(colon + 1));
    auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), a.weight);
    if (w.empty() || w.front() == '-' || w.front() == '+' || end != w.data() + w.size())
      fail("arm '{}' of route '{}': weight '{}' is not a positive integer", a.adapter, r.name, w);
    if (ec == std::errc::result_out_of_range) a.weight = kMaxRouteWeight + 1;  // check_route_shape says why
    r.arms.push_back(std::move(a));
    if (r.arms.size() > kMaxRouteArms) break;  // check_route_shape refuses it; stop reading
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  check_route_shape(r);
  return r;
}

void check_route_shape(const LoraRoute& r) {
  check_name(r.name, "the route name", "route_name");
  if (r.arms.empty()) fail_param("arms", "route '{}' needs at least one arm", r.name);
  if (r.arms.size() > kMaxRouteArms)
    fail_param("arms", "route '{}' has more than {} arms", r.name, kMaxRouteArms);
  std::set<std::string> seen;
  for (size_t i = 0; i < r.arms.size(); ++i) {
    const RouteArm& a = r.arms[i];
    check_name(a.adapter, fmt::format("the adapter name of arm {} of route '{}'", i, r.name),
               fmt::format("arms[{}].lora_name", i));
    if (a.weight < 1 || a.weight > kMaxRouteWeight)
      fail_param(fmt::format("arms[{}].weight", i),
                 "arm '{}' of route '{}': weight {} is not an integer in [1, {}]", a.adapter, r.name,
                 a.weight, kMaxRouteWeight);
    if (!seen.insert(a.adapter).second)
      fail_param(fmt::format("arms[{}].lora_name", i), "route '{}' names adapter '{}' twice", r.name,
                 a.adapter);
  }
}

size_t route_pick(const LoraRoute& r, uint64_t draw) {
  const int64_t total = r.total_weight();
  LP_CHECK(!r.arms.empty() && total > 0, "route_pick on a route without arms");
  // The high 64 bits of draw * total: uniform draws map to [0, total) with a bias below total / 2^64.
  const auto x =
      static_cast<int64_t>((static_cast<unsigned __int128>(draw) * static_cast<uint64_t>(total)) >> 64);
  int64_t cumulative = 0;
  for (size_t i = 0; i < r.arms.size(); ++i) {
    cumulative += r.arms[i].weight;
    if (x < cumulative) return i;
  }
  LP_CHECK(false, "route_pick: draw {} beyond the total weight {}", x, total);
  return 0;
}

uint64_t route_user_draw(std::string_view route, std::string_view user) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  unsigned char len[8];
  uint64_t n = route.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  XXH3_64bits_update(&state, len, sizeof len);
  XXH3_64bits_update(&state, route.data(), route.size());
  XXH3_64bits_update(&state, user.data(), user.size());
  return XXH3_64bits_digest(&state);
}

void LoraRoutes::set(LoraRoute r, const RouteNames& names, bool replace) {
  check_route_shape(r);
  if (r.name == names.base_model_name)
    fail_param("route_name", "'{}' is the base model's name; choose another route name", r.name);
  if (names.is_adapter && names.is_adapter(r.name))
    fail_param("route_name", "'{}' is already an adapter's name; choose another route name", r.name);
  for (size_t i = 0; i < r.arms.size(); ++i)
    if (!names.is_adapter || !names.is_adapter(r.arms[i].adapter))
      throw ApiError(fmt::format("adapter '{}' (an arm of route '{}') is not registered; load it first",
                                 r.arms[i].adapter, r.name),
                     ErrorKind::kNotFound, fmt::format("arms[{}].lora_name", i));
  auto route = std::make_shared<const LoraRoute>(std::move(r));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routes_.find(route->name);
  if (it != routes_.end()) {
    if (!replace) fail_param("route_name", "route '{}' is defined twice", route->name);
    it->second = std::move(route);
    return;
  }
  if (routes_.size() >= kMaxRoutes)
    fail_param("route_name", "there are {} routes already, the most a server keeps; unload one first",
               kMaxRoutes);
  routes_.emplace(route->name, std::move(route));
}

bool LoraRoutes::remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  return routes_.erase(name) > 0;
}

std::shared_ptr<const LoraRoute> LoraRoutes::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routes_.find(name);
  return it == routes_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const LoraRoute>> LoraRoutes::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const LoraRoute>> out;
  for (const auto& [name, r] : routes_) out.push_back(r);
  return out;
}

std::vector<std::string> LoraRoutes::routes_using(const std::string& adapter) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, r] : routes_)
    for (const auto& a : r->arms)
      if (a.adapter == adapter) out.push_back(name);
  return out;
}

const RouteArm& LoraRoutes::pick(const LoraRoute& r, std::string_view user) {
  uint64_t draw = 0;
  if (!user.empty()) {
    draw = route_user_draw(r.name, user);
  } else {
    std::lock_guard<std::mutex> lock(rng_mu_);
    draw = rng_();
  }
  return r.arms[route_pick(r, draw)];
}

}  // namespace lp::server
