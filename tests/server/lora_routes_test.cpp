// Weighted routes (server/lora_routes.h): the flag form and every refusal, the arm a draw picks, and through
// the real HTTP server on the scripted backend (fake_backend.h): the split over 2,000 distinct users and over
// 2,000 requests without `user` within 3 points of the weights, the same user always on the same arm, the
// x-loraplex-adapter header (streaming or not, completions and chat) naming the adapter the engine request
// got, the route counter, /v1/models, load / replace / unload at run time (404 without the flag), an arm's
// adapter that cannot be unloaded (409), and an unregistered arm that fails its request instead of
// re-routing.
#include "server/lora_routes.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "server/api_error.h"
#include "server/http_client.h"
#include "server/metrics.h"
#include "server/server.h"
#include "util/server_fixture.h"

namespace lp::server {
namespace {

using json = nlohmann::json;

// --- The flag form and the shape rules. ---

// The message of the lp::Error that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LoraRouteSpec, ParsesNameArmsAndWeights) {
  LoraRoute r = parse_route_spec("assistant=v2-stable:90,v3-candidate:10");
  EXPECT_EQ(r.name, "assistant");
  ASSERT_EQ(r.arms.size(), 2u);
  EXPECT_EQ(r.arms[0].adapter, "v2-stable");
  EXPECT_EQ(r.arms[0].weight, 90);
  EXPECT_EQ(r.arms[1].adapter, "v3-candidate");
  EXPECT_EQ(r.arms[1].weight, 10);
  EXPECT_EQ(r.total_weight(), 100);
  // Spaces around the parts are dropped; an adapter name may hold ':' (the weight is after the last one).
  LoraRoute s = parse_route_spec(" a = org:x:3 , y:1 ");
  EXPECT_EQ(s.name, "a");
  EXPECT_EQ(s.arms[0].adapter, "org:x");
  EXPECT_EQ(s.arms[0].weight, 3);
  EXPECT_EQ(s.arms[1].adapter, "y");
  EXPECT_EQ(parse_route_spec("one=x:1").arms.size(), 1u);
}

TEST(LoraRouteSpec, RefusesBadSpecsSayingWhy) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"assistant", "expected NAME=ADAPTER:WEIGHT"},
      {"assistant=", "has no arms"},
      {"=a:1", "the route name must not be empty"},
      {"r=a", "arm 'a' of route 'r' has no weight"},
      {"r=a:", "weight '' is not a positive integer"},
      {"r=a:x", "weight 'x' is not a positive integer"},
      {"r=a:1.5", "weight '1.5' is not a positive integer"},
      {"r=a:-3", "weight '-3' is not a positive integer"},
      {"r=a:0", "weight 0 is not an integer in [1, 1000000]"},
      {"r=a:1000001", "weight 1000001 is not an integer in [1, 1000000]"},
      {"r=a:99999999999999999999999", "is not an integer in [1, 1000000]"},
      {"r=a:1,b:2,a:3", "route 'r' names adapter 'a' twice"},
      {"r=:5", "the adapter name of arm 0 of route 'r' must not be empty"},
      {"r=a:1,,b:1", "arm '' of route 'r' has no weight"},
      {"r\x01=a:1", "must not contain control characters"},
      {std::string(256, 'n') + "=a:1", "256 bytes long, more than 255"},
  };
  for (const auto& [spec, want] : cases) {
    std::string got = error_of([&] { parse_route_spec(spec); });
    EXPECT_NE(got.find(want), std::string::npos)
        << "spec '" << spec << "' -> '" << got << "', want '" << want << "'";
  }
  std::string many = "r=";
  for (int i = 0; i < 17; ++i) many += fmt::format("{}a{}:1", i ? "," : "", i);
  EXPECT_NE(error_of([&] { parse_route_spec(many); }).find("more than 16 arms"), std::string::npos);
  many = many.substr(0, many.rfind(','));  // 16 arms: the most
  EXPECT_EQ(parse_route_spec(many).arms.size(), 16u);
}

// --- Picking an arm. ---

// Evenly spaced draws over [0, 2^64) hit each arm exactly in proportion to its weight (when the count of
// draws is a multiple of the total weight), whatever the arms' order.
TEST(LoraRoutePick, EvenlySpacedDrawsSplitExactlyByWeight) {
  const LoraRoute r = parse_route_spec("r=a:50,b:30,c:20");
  const uint64_t n = 1000, step = ~uint64_t{0} / n + 1;  // 2^64 / 1000, rounded up
  std::map<std::string, int> count;
  for (uint64_t i = 0; i < n; ++i) ++count[r.arms[route_pick(r, i * step)].adapter];
  EXPECT_EQ(count["a"], 500);
  EXPECT_EQ(count["b"], 300);
  EXPECT_EQ(count["c"], 200);
  EXPECT_EQ(route_pick(r, 0), 0u);
  EXPECT_EQ(route_pick(r, ~uint64_t{0}), 2u);
  const LoraRoute one = parse_route_spec("r=only:7");
  for (uint64_t d : {uint64_t{0}, uint64_t{1} << 63, ~uint64_t{0}}) EXPECT_EQ(route_pick(one, d), 0u);
}

// The sticky draw covers both names unambiguously: moving bytes between route and user changes it.
TEST(LoraRoutePick, UserDrawEncodesRouteAndUserUnambiguously) {
  EXPECT_EQ(route_user_draw("assistant", "alice"), route_user_draw("assistant", "alice"));
  EXPECT_NE(route_user_draw("ab", "c"), route_user_draw("a", "bc"));
  EXPECT_NE(route_user_draw("assistant", "alice"), route_user_draw("assistant", "bob"));
  EXPECT_NE(route_user_draw("assistant", "alice"), route_user_draw("helper", "alice"));
}

// The fraction of `count`'s total that went to `arm`, in percent.
double percent(const std::map<std::string, int>& count, const std::string& arm) {
  int total = 0;
  for (const auto& [k, v] : count) total += v;
  auto it = count.find(arm);
  return it == count.end() ? 0.0 : 100.0 * it->second / total;
}

TEST(LoraRoutePick, DistinctUsersSplitWithinThreePointsAndStay) {
  LoraRoutes routes;
  for (const char* spec : {"assistant=v2-stable:90,v3-candidate:10", "three=a:50,b:30,c:20"}) {
    const LoraRoute r = parse_route_spec(spec);
    std::map<std::string, int> count;
    std::vector<std::string> first(2000);
    for (int u = 0; u < 2000; ++u) {
      first[u] = routes.pick(r, fmt::format("user-{}", u)).adapter;
      ++count[first[u]];
    }
    for (const RouteArm& a : r.arms)
      EXPECT_NEAR(percent(count, a.adapter), 100.0 * a.weight / r.total_weight(), 3.0)
          << spec << " " << a.adapter;
    for (int rep = 0; rep < 3; ++rep)
      for (int u = 0; u < 2000; u += 7)
        EXPECT_EQ(routes.pick(r, fmt::format("user-{}", u)).adapter, first[u]);
  }
}

TEST(LoraRoutePick, RequestsWithoutUserSpreadByWeight) {
  LoraRoutes routes;
  const LoraRoute r = parse_route_spec("assistant=v2-stable:90,v3-candidate:10");
  std::map<std::string, int> count;
  for (int i = 0; i < 2000; ++i) ++count[routes.pick(r, "").adapter];
  EXPECT_NEAR(percent(count, "v2-stable"), 90.0, 3.0);
  EXPECT_NEAR(percent(count, "v3-candidate"), 10.0, 3.0);
}

// --- The table's checks. ---

TEST(LoraRouteTable, SetChecksNamesArmsAndDuplicates) {
  LoraRoutes t;
  const std::set<std::string> adapters = {"v2", "v3"};
  const RouteNames names{"base", [&](const std::string& n) { return adapters.count(n) > 0; }};
  auto set = [&](const std::string& spec, bool replace = false) {
    return error_of([&] { t.set(parse_route_spec(spec), names, replace); });
  };
  EXPECT_EQ(set("assistant=v2:90,v3:10"), "");
  EXPECT_NE(set("base=v2:1").find("'base' is the base model's name"), std::string::npos);
  EXPECT_NE(set("v3=v2:1").find("'v3' is already an adapter's name"), std::string::npos);
  EXPECT_NE(set("other=v2:1,v9:1").find("adapter 'v9' (an arm of route 'other') is not registered"),
            std::string::npos);
  try {
    t.set(parse_route_spec("other=v9:1"), names, false);
    ADD_FAILURE() << "an unregistered arm was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_EQ(e.param(), "arms[0].lora_name");
  }
  EXPECT_NE(set("assistant=v3:1").find("route 'assistant' is defined twice"), std::string::npos);
  EXPECT_EQ(t.find("assistant")->arms.size(), 2u);  // unchanged by the refusals
  EXPECT_EQ(set("assistant=v3:1", /*replace=*/true), "");
  ASSERT_EQ(t.find("assistant")->arms.size(), 1u);
  EXPECT_EQ(t.find("assistant")->arms[0].adapter, "v3");
  EXPECT_EQ(t.find("other"), nullptr);
  EXPECT_EQ(set("second=v2:1,v3:2"), "");
  EXPECT_EQ(t.routes_using("v3"), (std::vector<std::string>{"assistant", "second"}));
  EXPECT_EQ(t.routes_using("v2"), (std::vector<std::string>{"second"}));
  EXPECT_TRUE(t.remove("second"));
  EXPECT_FALSE(t.remove("second"));
  EXPECT_TRUE(t.routes_using("v2").empty());
  for (size_t i = t.list().size(); i < kMaxRoutes; ++i) ASSERT_EQ(set(fmt::format("r{}=v2:1", i)), "");
  EXPECT_NE(set("one-too-many=v2:1").find("256 routes already"), std::string::npos);
  EXPECT_EQ(set("assistant=v2:5", /*replace=*/true), "");  // replacing still works at the bound
}

// --- Through the HTTP layer. ---

struct Fixture : test::FakeServer {
  explicit Fixture(bool runtime_updates = true) : FakeServer("lora-routes", options(runtime_updates)) {
    for (const char* a : {"v2-stable", "v3-candidate", "other"})
      backend.register_adapter(a, dir.path() / a, false, false, std::nullopt);
    // As `loraplex serve --lora-route` does once the adapters are registered.
    const RouteNames names{"base", [this](const std::string& n) { return backend.is_registered(n); }};
    server->lora_routes().set(parse_route_spec("assistant=v2-stable:90,v3-candidate:10"), names, false);
  }
  static ServerOptions options(bool runtime_updates) {
    ServerOptions o;
    o.allow_runtime_lora_updating = runtime_updates;
    o.allowed_origins = {"http://app.example"};
    return o;
  }
  HttpClientResponse post(const std::string& path, const json& body) {
    HttpClient c("127.0.0.1", port, 10);
    HttpClientResponse r = c.request("POST", path, body.dump(), {{"Content-Type", "application/json"}});
    EXPECT_TRUE(r.error.empty()) << r.error;
    return r;
  }
  double route_count(const std::string& route, const std::string& adapter) {
    return server->metrics().value("loraplex_route_requests_total", {{"route", route}, {"adapter", adapter}});
  }
};

// A load_lora_route body, and one arm of it (explicit JSON types: a one-element braced list is ambiguous).
json arm(const json& name, const json& weight) {
  return json::object({{"lora_name", name}, {"weight", weight}});
}
json route_body(const json& name, const json& arms) {
  return json::object({{"route_name", name}, {"arms", arms}});
}

json completion(const std::string& model, const std::string& user = "", bool stream = false) {
  json b = {{"model", model}, {"prompt", "hello"}, {"max_tokens", 1}, {"stream", stream}};
  if (!user.empty()) b["user"] = user;
  return b;
}

// `n` completions on `model` (users "<prefix><i>", or none when the prefix is empty) from 4 client threads;
// the header of each reply by request index. Every reply must be a 200 naming `model`.
std::vector<std::string> arms_of(Fixture& f, const std::string& model, int n,
                                 const std::string& user_prefix) {
  std::vector<std::string> arm(n);
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&, t] {
      HttpClient c("127.0.0.1", f.port, 10);
      for (int i = t; i < n; i += 4) {
        auto r =
            c.request("POST", "/v1/completions",
                      completion(model, user_prefix.empty() ? "" : user_prefix + std::to_string(i)).dump(),
                      {{"Content-Type", "application/json"}});
        if (r.status != 200 || json::parse(r.body)["model"] != model) {
          ADD_FAILURE() << r.status << " " << r.body;
          continue;
        }
        arm[i] = r.header("x-loraplex-adapter");
      }
    });
  for (auto& t : clients) t.join();
  return arm;
}

TEST(LoraRouteHttp, DistinctUsersSplitByWeightTheEngineGetsTheArmAndTheCounterAgrees) {
  Fixture f;
  const std::vector<std::string> arm = arms_of(f, "assistant", 2000, "user-");
  std::map<std::string, int> count;
  for (const auto& a : arm) ++count[a];
  EXPECT_NEAR(percent(count, "v2-stable"), 90.0, 3.0);
  EXPECT_NEAR(percent(count, "v3-candidate"), 10.0, 3.0);
  EXPECT_EQ(count["v2-stable"] + count["v3-candidate"], 2000) << "every reply names one of the arms";
  // The engine request carried the arm the header names (requests of one prompt and user are told apart by
  // nothing else here, so the multisets are compared).
  std::map<std::string, int> engine;
  for (const auto& r : f.backend.submitted()) ++engine[r.adapter];
  EXPECT_EQ(engine, count);
  EXPECT_EQ(f.route_count("assistant", "v2-stable"), count["v2-stable"]);
  EXPECT_EQ(f.route_count("assistant", "v3-candidate"), count["v3-candidate"]);
  HttpClient c("127.0.0.1", f.port, 10);
  const std::string text = c.request("GET", "/metrics").body;
  EXPECT_NE(text.find(fmt::format(
                "loraplex_route_requests_total{{route=\"assistant\",adapter=\"v3-candidate\"}} {}",
                count["v3-candidate"])),
            std::string::npos);
}

TEST(LoraRouteHttp, SameUserAlwaysGetsTheSameArm) {
  Fixture f;
  // 60 users, each 5 times, interleaved across client threads.
  std::map<std::string, std::set<std::string>> seen;
  std::vector<std::thread> clients;
  std::mutex mu;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&, t] {
      HttpClient c("127.0.0.1", f.port, 10);
      for (int i = t; i < 300; i += 4) {
        const std::string user = "sticky-" + std::to_string(i % 60);
        auto r = c.request("POST", "/v1/completions", completion("assistant", user).dump(),
                           {{"Content-Type", "application/json"}});
        std::lock_guard<std::mutex> lock(mu);
        seen[user].insert(r.header("x-loraplex-adapter"));
      }
    });
  for (auto& t : clients) t.join();
  ASSERT_EQ(seen.size(), 60u);
  std::set<std::string> arms_used;
  for (const auto& [user, arms] : seen) {
    EXPECT_EQ(arms.size(), 1u) << user << " moved between arms";
    arms_used.insert(arms.begin(), arms.end());
  }
  // Stickiness is not "everyone on one arm": with 90/10 and 60 users, both arms are used.
  EXPECT_EQ(arms_used, (std::set<std::string>{"v2-stable", "v3-candidate"}));
}

TEST(LoraRouteHttp, RequestsWithoutUserSpreadByWeight) {
  Fixture f;
  std::map<std::string, int> count;
  for (const auto& a : arms_of(f, "assistant", 2000, "")) ++count[a];
  EXPECT_NEAR(percent(count, "v2-stable"), 90.0, 3.0);
  EXPECT_NEAR(percent(count, "v3-candidate"), 10.0, 3.0);
}

TEST(LoraRouteHttp, HeaderOnStreamingAndNonStreamingCompletionsAndChat) {
  Fixture f;
  // A one-arm route: the arm is known without asking the code under test.
  ASSERT_EQ(f.post("/v1/load_lora_route", route_body("solo", json::array({arm("other", 3)}))).status, 200);
  const json chat = {{"model", "solo"},
                     {"messages", json::array({json::object({{"role", "user"}, {"content", "hi"}})})},
                     {"max_tokens", 2}};
  for (bool stream : {false, true}) {
    auto r = f.post("/v1/completions", completion("solo", "u", stream));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-loraplex-adapter"), "other") << "stream " << stream;
    EXPECT_NE(r.body.find("\"model\":\"solo\""), std::string::npos)
        << r.body;  // the name the client asked for
    json c = chat;
    c["stream"] = stream;
    r = f.post("/v1/chat/completions", c);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-loraplex-adapter"), "other") << "chat, stream " << stream;
    EXPECT_NE(r.body.find("\"model\":\"solo\""), std::string::npos) << r.body;
    if (stream) {
      EXPECT_NE(r.header("Content-Type").find("text/event-stream"), std::string::npos);
    }
  }
  EXPECT_EQ(f.route_count("solo", "other"), 4);
  // An adapter named directly: its name; the base model: no header.
  auto r = f.post("/v1/completions", completion("v2-stable"));
  EXPECT_EQ(r.header("x-loraplex-adapter"), "v2-stable");
  r = f.post("/v1/completions", completion("base"));
  ASSERT_EQ(r.status, 200);
  EXPECT_FALSE(r.header("x-loraplex-adapter").size()) << r.header("x-loraplex-adapter");
  // A page of an allowed origin may read the header (CORS hides other headers from scripts).
  HttpClient c("127.0.0.1", f.port, 10);
  r = c.request("POST", "/v1/completions", completion("solo", "u").dump(),
                {{"Content-Type", "application/json"}, {"Origin", "http://app.example"}});
  EXPECT_EQ(r.header("x-loraplex-adapter"), "other");
  // (and the replica's name, behind a load balancer)
  EXPECT_EQ(r.header("Access-Control-Expose-Headers"), "x-loraplex-adapter, x-loraplex-replica");
  // /tokenize accepts a route's name as a servable model.
  EXPECT_EQ(f.post("/tokenize", {{"model", "assistant"}, {"prompt", "hello"}}).status, 200);
}

TEST(LoraRouteHttp, ModelsListRoutesWithTheirArms) {
  Fixture f;
  HttpClient c("127.0.0.1", f.port, 10);
  json list = json::parse(c.request("GET", "/v1/models").body);
  const json* route = nullptr;
  std::vector<std::string> ids;
  for (const auto& m : list["data"]) {
    ids.push_back(m["id"]);
    if (m["id"] == "assistant") route = &m;
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"base", "other", "v2-stable", "v3-candidate", "assistant"}));
  ASSERT_NE(route, nullptr);
  EXPECT_EQ((*route)["object"], "model");
  EXPECT_EQ((*route)["owned_by"], "loraplex");
  EXPECT_TRUE((*route)["created"].is_number_integer());
  EXPECT_EQ((*route)["parent"], "base");
  EXPECT_EQ((*route)["loraplex_route"]["arms"],
            json::parse(R"([{"adapter":"v2-stable","weight":90},{"adapter":"v3-candidate","weight":10}])"));
}

TEST(LoraRouteHttp, LoadReplaceAndUnloadAtRunTime) {
  Fixture f;
  auto r = f.post("/v1/load_lora_route", route_body("beta", json::array({arm("other", 1)})));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA route 'beta' added successfully.");
  for (const auto& a : arms_of(f, "beta", 20, "u")) EXPECT_EQ(a, "other");
  // Replaced: every user moves to the new arm at once.
  r = f.post("/v1/load_lora_route", route_body("beta", json::array({arm("v3-candidate", 5)})));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA route 'beta' replaced successfully.");
  for (const auto& a : arms_of(f, "beta", 20, "u")) EXPECT_EQ(a, "v3-candidate");
  HttpClient c("127.0.0.1", f.port, 10);
  EXPECT_NE(c.request("GET", "/v1/models")
                .body.find(R"("loraplex_route":{"arms":[{"adapter":"v3-candidate","weight":5}]})"),
            std::string::npos);
  r = f.post("/v1/unload_lora_route", {{"route_name", "beta"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "Success: LoRA route 'beta' removed successfully.");
  r = f.post("/v1/completions", completion("beta", "u1"));
  EXPECT_EQ(r.status, 404) << r.body;
  r = f.post("/v1/unload_lora_route", {{"route_name", "beta"}});
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_NE(r.body.find("The lora route 'beta' cannot be found."), std::string::npos);
  EXPECT_EQ(c.request("GET", "/v1/models").body.find("\"beta\""), std::string::npos);
}

TEST(LoraRouteHttp, RouteEndpointsNeedTheRuntimeUpdatingFlag) {
  Fixture f(/*runtime_updates=*/false);
  EXPECT_EQ(f.post("/v1/load_lora_route", route_body("x", json::array({arm("other", 1)}))).status, 404);
  EXPECT_EQ(f.post("/v1/unload_lora_route", {{"route_name", "assistant"}}).status, 404);
  EXPECT_EQ(f.post("/v1/completions", completion("assistant", "u")).status,
            200);  // the start-up route serves
}

TEST(LoraRouteHttp, AnArmsAdapterCannotBeUnloaded) {
  Fixture f;
  ASSERT_EQ(f.post("/v1/load_lora_route", route_body("second", json::array({arm("v3-candidate", 1)}))).status,
            200);
  auto r = f.post("/v1/unload_lora_adapter", {{"lora_name", "v3-candidate"}});
  EXPECT_EQ(r.status, 409) << r.body;
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["type"], "ConflictError");
  EXPECT_EQ(e["param"], "lora_name");
  EXPECT_NE(e["message"].get<std::string>().find("'v3-candidate' is an arm of route 'assistant', 'second'"),
            std::string::npos)
      << e["message"];
  EXPECT_TRUE(f.backend.is_registered("v3-candidate"));
  // Once no route names it, it unloads; an adapter in no route unloads as before.
  ASSERT_EQ(f.post("/v1/unload_lora_route", {{"route_name", "second"}}).status, 200);
  ASSERT_EQ(f.post("/v1/load_lora_route", route_body("assistant", json::array({arm("v2-stable", 1)}))).status,
            200);
  EXPECT_EQ(f.post("/v1/unload_lora_adapter", {{"lora_name", "v3-candidate"}}).status, 200);
  EXPECT_EQ(f.post("/v1/unload_lora_adapter", {{"lora_name", "other"}}).status, 200);
  // An adapter may not take a route's name.
  r = f.post("/v1/load_lora_adapter", {{"lora_name", "assistant"}, {"lora_path", f.dir.path().string()}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("'assistant' is a route's name"), std::string::npos) << r.body;
}

// Defensive: if a chosen arm is gone anyway (here: unregistered behind the server's back), its requests fail
// naming route and adapter; none of them is served by the other arm.
TEST(LoraRouteHttp, AnUnregisteredArmFailsItsRequestsInsteadOfRerouting) {
  Fixture f;
  f.backend.unregister_adapter("v3-candidate");
  int failed = 0, served = 0;
  HttpClient c("127.0.0.1", f.port, 10);
  for (int u = 0; u < 200; ++u) {
    auto r = c.request("POST", "/v1/completions", completion("assistant", "user-" + std::to_string(u)).dump(),
                       {{"Content-Type", "application/json"}});
    if (r.status == 200) {
      EXPECT_EQ(r.header("x-loraplex-adapter"), "v2-stable");
      ++served;
      continue;
    }
    ++failed;
    EXPECT_EQ(r.status, 404) << r.body;
    json e = json::parse(r.body)["error"];
    EXPECT_EQ(e["code"], "route_arm_not_found");
    EXPECT_NE(e["message"].get<std::string>().find("route 'assistant' chose adapter 'v3-candidate'"),
              std::string::npos)
        << e["message"];
  }
  EXPECT_GT(failed, 0);  // 10% of 200 users
  EXPECT_GT(served, 0);
  EXPECT_EQ(static_cast<int>(f.backend.submitted().size()), served);  // the failed ones reached no engine
  EXPECT_EQ(f.route_count("assistant", "v2-stable"), served);
  EXPECT_EQ(f.route_count("assistant", "v3-candidate"), 0);
}

TEST(LoraRouteHttp, InvalidRouteBodiesAreRefusedNamingTheField) {
  Fixture f;
  struct Case {
    json body;
    int status;
    std::string param, message;
  };
  auto one = [](const json& a) { return json::array({a}); };
  json seventeen = json::array();
  for (int i = 0; i < 17; ++i) seventeen.push_back(arm("other", 1));
  const std::vector<Case> cases = {
      {json::object({{"arms", one(arm("other", 1))}}), 400, "route_name",
       "Both 'route_name' and 'arms' must be provided."},
      {json::object({{"route_name", "r"}}), 400, "arms", "Both 'route_name' and 'arms' must be provided."},
      {route_body(5, one(arm("other", 1))), 400, "route_name", ""},
      {route_body("r", "other:1"), 400, "arms", "must be a list"},
      {route_body("r", json::array()), 400, "arms", "route 'r' needs at least one arm"},
      {route_body("r", seventeen), 400, "arms", "more than 16 arms"},
      {route_body("r", one("other")), 400, "arms[0]", "must be an object"},
      {route_body("r", one(arm("other", 0))), 400, "arms[0].weight", "weight 0 is not an integer in"},
      {route_body("r", one(arm("other", -2))), 400, "arms[0].weight", "weight -2"},
      {route_body("r", one(arm("other", 1.5))), 400, "arms[0].weight", "must be a positive integer"},
      {route_body("r", one(arm("other", "5"))), 400, "arms[0].weight", "must be a positive integer"},
      {route_body("r", json::array({arm("other", 1), json::object({{"lora_name", "v2-stable"}})})), 400,
       "arms[1].weight", "must be a positive integer"},
      {route_body("r", one(arm("other", 1000001))), 400, "arms[0].weight", "[1, 1000000]"},
      {route_body("r", one(arm("other", uint64_t{1} << 63))), 400, "arms[0].weight", "[1, 1000000]"},
      {route_body("r", json::array({arm("other", 1), arm("other", 2)})), 400, "arms[1].lora_name",
       "names adapter 'other' twice"},
      {route_body("r", one(arm("", 1))), 400, "arms[0].lora_name", "must not be empty"},
      {route_body("r", one(json::object({{"lora_name", "other"}, {"weight", 1}, {"scale", 2}}))), 400,
       "arms[0].scale", "unknown field 'scale'"},
      {route_body("r", json::array({arm("other", 1), arm("missing", 1)})), 404, "arms[1].lora_name",
       "adapter 'missing' (an arm of route 'r') is not registered"},
      {route_body("base", one(arm("other", 1))), 400, "route_name", "'base' is the base model's name"},
      {route_body("other", one(arm("v2-stable", 1))), 400, "route_name",
       "'other' is already an adapter's name"},
      {route_body("r\n", one(arm("other", 1))), 400, "route_name", "control characters"},
  };
  for (const auto& c : cases) {
    auto r = f.post("/v1/load_lora_route", c.body);
    EXPECT_EQ(r.status, c.status) << c.body.dump() << " -> " << r.body;
    json e = json::parse(r.body)["error"];
    EXPECT_EQ(e["param"], c.param) << c.body.dump() << " -> " << r.body;
    EXPECT_NE(e["message"].get<std::string>().find(c.message), std::string::npos)
        << c.body.dump() << " -> " << r.body;
  }
  // Nothing of it reached the table.
  HttpClient c("127.0.0.1", f.port, 10);
  EXPECT_EQ(c.request("GET", "/v1/models").body.find("\"r\""), std::string::npos);
  auto r = f.post("/v1/unload_lora_route", json::object());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "route_name");
}

}  // namespace
}  // namespace lp::server
