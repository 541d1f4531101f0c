// The metric families /metrics exposes, and the scrape-time collector that copies engine stats and the
// adapter manager's counters into the registry. Three groups:
//   - loraplex_* serving metrics: latency histograms (recorded by the HTTP handlers as they stream), running /
//     waiting requests, KV-cache usage, token counters, finished requests by reason, HTTP replies by code;
//   - loraplex_lora_* adapter-cache metrics, from lora::AdapterManager::counters();
//   - the vLLM-compatible gauges the Kubernetes Gateway API Inference Extension reads (same names, labels and
//     semantics as vLLM: kv_cache_usage_perc is a fraction in [0, 1]; lora_requests_info's value is the unix
//     time of the scrape and its labels carry comma-joined adapter names);
//   - vLLM V1's request metrics under its names, with its buckets and the `model_name` label (vLLM also adds
//     `engine`, which a single-engine server leaves out, as the gauges above do): latency histograms,
//     token / preemption / prefix-cache counters and request_success_total by finished_reason. The same
//     observations feed the loraplex_* series, so the two agree;
//   - vllm:lora_* adapter metrics under the names multi-LoRA serving guides give (vLLM itself exports none of
//     them): the loraplex_lora_* counters again, with `model_name` added.
#include <fmt/format.h>

#include "core/check.h"
#include "server/backend.h"
#include "server/openai_response.h"
#include "server/server_state.h"

namespace lp::server {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string o;
  for (size_t i = 0; i < v.size(); ++i) o += (i ? "," : "") + v[i];
  return o;
}

// Mirrors a cumulative lora::Histogram into the registry (whose families hold per-bucket counts).
void set_histogram(MetricsRegistry& m, const std::string& name, const Labels& labels, const lora::Histogram& h) {
  m.set_histogram(name, labels, h.buckets, h.count, h.sum);
}

// The KV cache's fixed shape. vllm:cache_config_info carries it in labels, as vLLM's
// CacheConfig.metrics_info() does (booleans "True"/"False" as Python's str()); dashboards and gateways read
// block_size and num_gpu_blocks from it. cache_dtype is what the cache holds ("bf16" also under
// --kv-cache-dtype auto, where vLLM would print "auto"): the resolved type is what a reader needs.
void set_cache_config(MetricsRegistry& m, const sched::KvCacheInfo& kv) {
  m.set("loraplex_kv_cache_capacity_tokens", {}, static_cast<double>(kv.capacity_tokens));
  m.set("vllm:cache_config_info",
        {{"block_size", std::to_string(kv.block_size)},
         {"cache_dtype", kv.cache_dtype_label},
         {"enable_prefix_caching", kv.prefix_caching ? "True" : "False"},
         {"num_gpu_blocks", std::to_string(kv.num_blocks)}},
        1);
}

// The vllm:lora_* families: the adapter-cache counters under the guides' names. A load comes from a source
// tier (disk: disk -> host memory; host: host memory -> an adapter slot; hit: already in a slot, the
// duration histogram only) and an eviction leaves a tier (slot,
// host), as in the loraplex_* series; "active" adapters are the ones in a slot, ready for a batch (the
// host tier is loraplex_lora_adapters_active{tier="host"}).
void set_lora_vllm(MetricsRegistry& m, const std::string& model_name, const lora::CacheCounters& c) {
  auto with = [&](const char* k, const std::string& v) { return Labels{{"model_name", model_name}, {k, v}}; };
  m.set("vllm:lora_adapter_load_total", with("source", "disk"), static_cast<double>(c.loads_from_disk));
  m.set("vllm:lora_adapter_load_total", with("source", "host"), static_cast<double>(c.loads_from_host));
  set_histogram(m, "vllm:lora_adapter_load_duration_ms", with("source", "disk"), c.load_ms_disk);
  set_histogram(m, "vllm:lora_adapter_load_duration_ms", with("source", "host"), c.load_ms_host);
  set_histogram(m, "vllm:lora_adapter_load_duration_ms", with("source", "hit"), c.load_ms_hit);
  m.set("vllm:lora_adapter_evict_total", with("tier", "slot"), static_cast<double>(c.evictions_slot));
  m.set("vllm:lora_adapter_evict_total", with("tier", "host"), static_cast<double>(c.evictions_host));
  m.set("vllm:lora_adapters_active", {{"model_name", model_name}}, c.in_slots);
  m.clear("vllm:lora_requests_by_adapter");
  for (const auto& [name, n] : c.requests)
    m.set("vllm:lora_requests_by_adapter", with("adapter", name), static_cast<double>(n));
}

void collect(ServerState& st, MetricsRegistry& m) {
  if (!st.ready.load(std::memory_order_acquire)) return;
  Backend& b = *st.backend;
  sched::EngineStats s = b.stats();
  const Labels model = {{"model_name", st.options.served_model_name}};
  m.set("loraplex_num_requests_running", {}, s.running);
  m.set("loraplex_num_requests_waiting", {}, s.waiting);
  m.set("loraplex_kv_cache_usage_perc", {}, s.kv_usage);
  m.set("loraplex_kv_cache_blocks_total", {}, static_cast<double>(s.kv_cache.num_blocks));
  m.set("loraplex_prompt_tokens_total", {}, static_cast<double>(s.prompt_tokens_total));
  m.set("loraplex_generation_tokens_total", {}, static_cast<double>(s.generation_tokens_total));
  m.set("loraplex_num_preemptions_total", {}, static_cast<double>(s.preemptions_total));
  m.set("loraplex_prefix_cache_hit_tokens_total", {}, static_cast<double>(s.prefix_cache_hit_tokens));
  m.set("loraplex_prefix_cache_queried_tokens_total", {}, static_cast<double>(s.prefix_cache_queried_tokens));
  m.set("loraplex_http_in_flight_requests", {}, st.in_flight.load());
  m.set("vllm:prompt_tokens_total", model, static_cast<double>(s.prompt_tokens_total));
  m.set("vllm:generation_tokens_total", model, static_cast<double>(s.generation_tokens_total));
  m.set("vllm:num_preemptions_total", model, static_cast<double>(s.preemptions_total));
  m.set("vllm:prefix_cache_queries_total", model, static_cast<double>(s.prefix_cache_queried_tokens));
  m.set("vllm:prefix_cache_hits_total", model, static_cast<double>(s.prefix_cache_hit_tokens));
  m.set("vllm:num_requests_running", model, s.running);
  m.set("vllm:num_requests_waiting", model, s.waiting);
  m.set("vllm:kv_cache_usage_perc", model, s.kv_usage);
  set_cache_config(m, s.kv_cache);
  m.clear("vllm:lora_requests_info");
  m.set("vllm:lora_requests_info",
        {{"max_lora", std::to_string(s.max_loras)},
         {"running_lora_adapters", join(s.running_adapters)},
         {"waiting_lora_adapters", join(s.waiting_adapters)}},
        static_cast<double>(unix_now()));

  auto c = b.lora_counters();
  if (!c) return;
  m.set("loraplex_lora_adapter_load_total", {{"source", "disk"}}, static_cast<double>(c->loads_from_disk));
  m.set("loraplex_lora_adapter_load_total", {{"source", "host"}}, static_cast<double>(c->loads_from_host));
  set_histogram(m, "loraplex_lora_adapter_load_duration_ms", {{"source", "disk"}}, c->load_ms_disk);
  set_histogram(m, "loraplex_lora_adapter_load_duration_ms", {{"source", "host"}}, c->load_ms_host);
  set_histogram(m, "loraplex_lora_adapter_load_duration_ms", {{"source", "hit"}}, c->load_ms_hit);
  m.set("loraplex_lora_adapter_evict_total", {{"tier", "slot"}}, static_cast<double>(c->evictions_slot));
  m.set("loraplex_lora_adapter_evict_total", {{"tier", "host"}}, static_cast<double>(c->evictions_host));
  m.set("loraplex_lora_adapter_load_failures_total", {}, static_cast<double>(c->load_failures));
  m.set("loraplex_lora_adapters_active", {{"tier", "slot"}}, c->in_slots);
  m.set("loraplex_lora_adapters_active", {{"tier", "host"}}, c->in_host);
  m.set("loraplex_lora_adapters_active", {{"tier", "loading"}}, c->loading);
  m.set("loraplex_lora_adapters_active", {{"tier", "registered"}}, c->registered);
  m.set("loraplex_lora_slots_held", {}, c->held_slots);
  // Monotonic: the manager keeps each name's count across unregistering (for the recently unregistered
  // names), so no series ever goes down; names it dropped leave the family.
  m.clear("loraplex_lora_requests_total");
  for (const auto& [name, n] : c->requests)
    m.set("loraplex_lora_requests_total", {{"adapter", name}}, static_cast<double>(n));
  set_lora_vllm(m, st.options.served_model_name, *c);
}

}  // namespace

void describe_metrics(ServerState& st) {
  MetricsRegistry& m = st.metrics;
  using T = MetricType;
  m.describe("loraplex_time_to_first_token_seconds", T::kHistogram,
             "Time from request arrival to its first generated token, as streamed.", ttft_buckets());
  m.describe("loraplex_inter_token_latency_seconds", T::kHistogram,
             "Time between consecutive generated tokens of a request, as streamed.", itl_buckets());
  m.describe("loraplex_e2e_request_latency_seconds", T::kHistogram,
             "Time from request arrival to its last token.", e2e_buckets());
  m.describe("loraplex_request_success_total", T::kCounter, "Finished generations by finish reason.");
  m.describe("loraplex_request_aborted_total", T::kCounter,
             "Generation requests (streaming or not) aborted because the client went away.");
  m.describe("loraplex_http_requests_total", T::kCounter, "HTTP replies by status code.");
  m.describe("loraplex_http_in_flight_requests", T::kGauge, "Generation requests the HTTP layer is answering.");
  m.describe("loraplex_num_requests_running", T::kGauge, "Requests in the engine's running batch.");
  m.describe("loraplex_num_requests_waiting", T::kGauge, "Requests waiting to be scheduled.");
  m.describe("loraplex_kv_cache_usage_perc", T::kGauge, "Fraction of KV-cache blocks in use (1 = full).");
  m.describe("loraplex_kv_cache_blocks_total", T::kGauge, "KV-cache blocks.");
  m.describe("loraplex_prompt_tokens_total", T::kCounter, "Prompt tokens processed.");
  m.describe("loraplex_generation_tokens_total", T::kCounter, "Tokens generated.");
  m.describe("loraplex_num_preemptions_total", T::kCounter, "Requests preempted (KV cache full).");
  m.describe("loraplex_prefix_cache_hit_tokens_total", T::kCounter, "Prompt tokens found in the prefix cache.");
  m.describe("loraplex_prefix_cache_queried_tokens_total", T::kCounter, "Prompt tokens looked up in the prefix cache.");
  m.describe("loraplex_lora_adapter_load_total", T::kCounter,
             "Adapter loads by source tier (disk: disk to host; host: host to slot).");
  m.describe("loraplex_lora_adapter_load_duration_ms", T::kHistogram, "Adapter load time by source tier.",
             lora::load_ms_bounds());
  m.describe("loraplex_lora_adapter_evict_total", T::kCounter, "Adapter evictions by the tier left (slot, host).");
  m.describe("loraplex_lora_adapter_load_failures_total", T::kCounter, "Adapter loads from disk that failed.");
  m.describe("loraplex_lora_adapters_active", T::kGauge,
             "Adapters per tier now (slot, host (inclusive of slot), loading, registered).");
  m.describe("loraplex_lora_slots_held", T::kGauge, "Adapter slots held by running requests.");
  m.describe("loraplex_lora_requests_total", T::kCounter, "Engine requests per registered adapter.");
  m.describe("loraplex_route_requests_total", T::kCounter,
             "Generation calls per weighted route (--lora-route) and the adapter (arm) it chose.");
  m.describe("vllm:num_requests_running", T::kGauge, "Number of requests in model execution batches.");
  m.describe("vllm:num_requests_waiting", T::kGauge, "Number of requests waiting to be processed.");
  m.describe("vllm:kv_cache_usage_perc", T::kGauge, "KV-cache usage. 1 means 100 percent usage.");
  m.describe("vllm:lora_requests_info", T::kGauge, "Running stats on lora requests.");
  m.describe("vllm:cache_config_info", T::kGauge, "Information of the LLMEngine CacheConfig");
  m.describe("loraplex_kv_cache_capacity_tokens", T::kGauge,
             "KV-cache capacity in tokens (blocks x block size).");
  // vLLM V1's request metrics (vllm/v1/metrics/loggers.py): names, help text and buckets as there.
  m.describe("vllm:time_to_first_token_seconds", T::kHistogram, "Histogram of time to first token in seconds.",
             ttft_buckets());
  m.describe("vllm:time_per_output_token_seconds", T::kHistogram,
             "Histogram of time per output token in seconds.", itl_buckets());
  m.describe("vllm:inter_token_latency_seconds", T::kHistogram, "Histogram of inter-token latency in seconds.",
             itl_buckets());
  m.describe("vllm:e2e_request_latency_seconds", T::kHistogram, "Histogram of e2e request latency in seconds.",
             e2e_buckets());
  m.describe("vllm:request_queue_time_seconds", T::kHistogram,
             "Histogram of time spent in WAITING phase for request.", e2e_buckets());
  m.describe("vllm:prompt_tokens_total", T::kCounter, "Number of prefill tokens processed.");
  m.describe("vllm:generation_tokens_total", T::kCounter, "Number of generation tokens processed.");
  m.describe("vllm:request_success_total", T::kCounter, "Count of successfully processed requests.");
  m.describe("vllm:num_preemptions_total", T::kCounter, "Cumulative number of preemption from the engine.");
  m.describe("vllm:prefix_cache_queries_total", T::kCounter,
             "Prefix cache queries, in terms of number of queried tokens.");
  m.describe("vllm:prefix_cache_hits_total", T::kCounter, "Prefix cache hits, in terms of number of cached tokens.");
  // As vLLM, every finished_reason it knows is exposed from the start (at 0), so rate() sees the series
  // before the first request of each kind. A request whose client left is counted in
  // loraplex_request_aborted_total, not here.
  for (const char* why : {"stop", "length", "abort"})
    m.add("vllm:request_success_total", {{"model_name", st.options.served_model_name}, {"finished_reason", why}}, 0);
  m.describe("vllm:lora_adapter_load_total", T::kCounter,
             "Adapter loads by source tier (disk: disk to host memory; host: host memory to an adapter slot).");
  m.describe("vllm:lora_adapter_evict_total", T::kCounter, "Adapter evictions by the tier left (slot, host).");
  m.describe("vllm:lora_adapter_load_duration_ms", T::kHistogram, "Adapter load time in ms by source tier.",
             lora::load_ms_bounds());
  m.describe("vllm:lora_adapters_active", T::kGauge, "Adapters in an adapter slot now, ready to serve a batch.");
  m.describe("vllm:lora_requests_by_adapter", T::kCounter, "Engine requests per registered adapter.");
  m.add_collector([&st](MetricsRegistry& reg) { collect(st, reg); });
  describe_dashboard_metrics(st);  // the dashboard's hints (dashboard.cpp)
}

}  // namespace lp::server
