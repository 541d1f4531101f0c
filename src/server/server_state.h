// What the route handlers share (internal to server/): options, the attached model pieces, the metrics
// registry and the lifecycle flags. The handlers themselves are free functions over it (handlers.h), so each
// file holds one responsibility: generation (generate_handlers.cpp), models and adapter admin
// (admin_handlers.cpp), the app and its wrapper (server.cpp), metric names (server_metrics.cpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "server/lora_routes.h"
#include "server/dashboard.h"
#include "server/metrics.h"
#include "server/structured_output.h"
#include "server/server.h"

namespace lp::server {

struct ServerState {
  ServerOptions options;
  int64_t created = 0;  // unix seconds at start ("created" of the models)

  // Set once by attach() before `ready` turns true (release/acquire through `ready`), never changed after.
  Backend* backend = nullptr;
  const text::Tokenizer* tokenizer = nullptr;
  const text::ChatTemplate* chat_template = nullptr;
  std::unique_ptr<StructuredOutputs> structured;  // grammars of structured outputs over `tokenizer`
  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};

  MetricsRegistry metrics;
  LoraRoutes lora_routes;  // weighted routes (--lora-route, /v1/load_lora_route)
  Dashboard dashboard;  // the operator dashboard's window (sampled when options.dashboard_sample_s > 0)

  // Generation requests in flight (from parse to the last byte written); wait_idle() waits on it.
  std::mutex idle_mu;
  std::condition_variable idle_cv;
  std::atomic<int> in_flight{0};
};

// RAII count of one in-flight generation request.
class InFlight {
 public:
  explicit InFlight(ServerState& st) : st_(st) { st_.in_flight.fetch_add(1); }
  ~InFlight();
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  ServerState& st_;
};

// Metric families (server_metrics.cpp): declared once at start-up; the collector copies engine stats and
// adapter-manager counters in at scrape time.
void describe_metrics(ServerState& st);

}  // namespace lp::server
