// Kernel micro-benchmarks on the smol model's shapes (hidden 576, intermediate 1536, vocab 49152, BF16).
// Decode (T = 1, 16) is bandwidth-bound: the weights are rotated through >= 256 MB of copies so every call
// streams W from DRAM, and "bw_frac" is the achieved W read rate over measure_read_bandwidth() from the same
// run. Prefill (T = 256) is compute-bound: "GFLOPs" counts 2*T*N*K per call. The scalar reference on one
// shape is the baseline. Run: build-kernels/kernels_bench --benchmark_repetitions=5
// --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/buffer.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/lora.h"
#include "kernels/quant.h"
#include "kernels/reference.h"

namespace lp::kernels {
namespace {

ComputePool& pool() {
  // LP_BENCH_THREADS=1: one thread, so the CPU-time column is the kernel's own work (when other jobs share
  // the machine, real time is not).
  static ComputePool p(std::getenv("LP_BENCH_THREADS") ? std::atoi(std::getenv("LP_BENCH_THREADS")) : 0);
  return p;
}

double read_bandwidth() {
  static const double bw = measure_read_bandwidth(pool(), size_t{512} << 20, 5);
  return bw;
}

// Copies of an (N, K) BF16 matrix laid end to end, enough of them to exceed the caches when `stream`.
struct WeightSet {
  Buffer<uint16_t> data;
  int64_t N, K, copies;
  WeightSet(int64_t n, int64_t k, bool stream) : N(n), K(k) {
    int64_t per = N * K;
    copies = stream ? std::max<int64_t>(1, ((int64_t{256} << 20) / 2 + per - 1) / per) : 1;
    data.resize(static_cast<size_t>(per * copies));
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> d(-0.05f, 0.05f);
    for (int64_t i = 0; i < per; ++i) data[i] = f32_to_bf16(d(rng));
    // The copies hold the same values at different addresses, so consecutive calls stream different memory.
    for (int64_t c = 1; c < copies; ++c) std::memcpy(data.data() + c * per, data.data(), per * 2);
  }
  MatView view(int64_t c) const { return MatView{data.data() + (c % copies) * N * K, DType::kBF16, N, K, K}; }
};

void BM_Matmul(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1), T = state.range(2);
  const bool stream = T <= 16 && !std::getenv("LP_BENCH_HOT");
  WeightSet w(N, K, stream);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> x(T * K), y(T * N);
  for (auto& v : x) v = d(rng);
  const double bw = read_bandwidth();
  int64_t i = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    matmul(pool(), x.data(), T, K, w.view(i++), nullptr, y.data(), N);
    benchmark::DoNotOptimize(y.data());
  }
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double bytes = static_cast<double>(N * K * 2), flops = 2.0 * T * N * K;
  state.counters["GBps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (stream) state.counters["bw_frac"] = bytes * static_cast<double>(i) / sec / bw;
  state.counters["mem_GBps"] = bw * 1e-9;
  state.SetLabel(isa_name());
}

void SmolShapes(benchmark::internal::Benchmark* b) {
  for (int64_t T : {1, 16, 256})
    for (auto [N, K] : {std::pair<int64_t, int64_t>{576, 576}, {1536, 576}, {576, 1536}, {49152, 576},
                        {2048, 2048}, {8192, 2048}, {2048, 8192}, {256, 2048}})
      b->Args({N, K, T});
}
BENCHMARK(BM_Matmul)->Apply(SmolShapes)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Quantized weights (arg 3: 1 = int8 per row, 2 = int4 in groups of 128, or 64 where 128 does not divide
// K), against BF16 (arg 3 = 0) on the same shapes; bytes count the packed rows plus scales.
void BM_MatmulQuant(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1), T = state.range(2), fmt = state.range(3);
  // LP_BENCH_HOT=1: one copy of W, so small matrices stay in cache and the GEMV's arithmetic is timed alone.
  const bool stream = T <= 16 && !std::getenv("LP_BENCH_HOT");
  WeightSet dense(N, K, false);
  std::vector<QuantMatrix> mats;
  const int64_t Kp = quant_padded_cols(K);
  const int32_t group = Kp % 128 == 0 ? 128 : 64;
  int64_t per = 0;
  do {
    if (fmt == 1) {
      mats.push_back(QuantMatrix::quantize_int8(dense.view(0)));
    } else {
      QuantMatrix m = QuantMatrix::make_q4(N, K, group, DType::kF16);
      std::mt19937 rng(static_cast<unsigned>(mats.size()));
      for (int64_t r = 0; r < N; ++r) {
        for (int64_t c = 0; c < K; ++c) m.set_q4(r, c, static_cast<uint8_t>(rng() % 16));
        for (int64_t g = 0; g < Kp / group; ++g) m.set_group(r, g, f32_to_f16(0.01f), 8);
      }
      mats.push_back(std::move(m));
    }
    per = mats.back().bytes();
  } while (stream && static_cast<int64_t>(mats.size()) * per < (int64_t{256} << 20));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> x(T * K), y(T * N);
  for (auto& v : x) v = d(rng);
  const double bw = read_bandwidth();
  size_t i = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    matmul(pool(), x.data(), T, K, mats[i++ % mats.size()].view(), nullptr, y.data(), N);
    benchmark::DoNotOptimize(y.data());
  }
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double bytes = static_cast<double>(per), flops = 2.0 * T * N * K;
  state.counters["GBps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (stream) state.counters["bw_frac"] = bytes * static_cast<double>(i) / sec / bw;
  state.SetLabel(fmt == 1 ? "int8" : "int4");
}
void QuantShapes(benchmark::internal::Benchmark* b) {
  for (int64_t fmt : {1, 2})
    for (int64_t T : {1, 16, 256})
      for (auto [N, K] : {std::pair<int64_t, int64_t>{1536, 576}, {576, 1536}, {2048, 2048}, {8192, 2048},
                          {2048, 8192}, {256, 2048}})
        b->Args({N, K, T, fmt});
}
BENCHMARK(BM_MatmulQuant)->Apply(QuantShapes)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Baseline: the scalar reference (one thread, double accumulation) on the 576x576 projection.
void BM_MatmulReference(benchmark::State& state) {
  const int64_t N = 576, K = 576, T = state.range(0);
  WeightSet w(N, K, false);
  std::vector<float> x(T * K, 0.5f), y(T * N);
  for (auto _ : state) {
    ref::matmul(x.data(), T, K, w.view(0), nullptr, y.data(), N, false);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GBps"] = benchmark::Counter(N * K * 2e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOPs"] =
      benchmark::Counter(2e-9 * T * N * K, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MatmulReference)->Arg(1)->Arg(16)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Prefill attention of one 256-token sequence, smol heads (9 query heads, 3 KV heads, head_dim 64).
void BM_AttentionPrefill(benchmark::State& state) {
  const int n_heads = 9, n_kv = 3, hd = 64, bs = 16;
  const int32_t L = static_cast<int32_t>(state.range(0));
  const int n_blocks = (L + bs - 1) / bs;
  std::vector<float> k(static_cast<size_t>(n_blocks) * n_kv * bs * hd, 0.1f), v(k.size(), 0.2f);
  std::vector<float> q(static_cast<size_t>(L) * n_heads * hd, 0.3f), out(q.size());
  std::vector<int32_t> table(n_blocks);
  for (int i = 0; i < n_blocks; ++i) table[i] = n_blocks - 1 - i;
  PagedKV cache{k.data(), v.data(), bs, n_kv, hd};
  AttnSeq seq{0, L, L, table.data()};
  for (auto _ : state) {
    attention(pool(), q.data(), cache, std::span<const AttnSeq>(&seq, 1), n_heads, 0.125f, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  // Causal: about L*(L+1)/2 score and value FMAs of head_dim each, per head.
  double flops = 4.0 * n_heads * hd * (static_cast<double>(L) * (L + 1) / 2);
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionPrefill)->Arg(256)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The LoRA part of one smol decode step (30 layers; q/k/v, o, gate/up, down as the model calls them) for 16
// tokens over 8 rank-16 BF16 adapters (token b uses slot b % 8), each layer's slots in memory of their own
// (78 MB in all, so every step streams them from DRAM as the model does). Arg: adapters per token; with 2,
// token b also stacks slot (b + 1) % 8 at scale 0.5 (per-request stacking), so each slot serves twice the
// tokens for the same bytes.
void BM_LoraDecodeStep(benchmark::State& state) {
  const int stack = static_cast<int>(state.range(0));
  constexpr int kLayers = 30, kSlots = 8, kRank = 16, T = 16;
  constexpr int64_t H = 576, I = 1536, KV = 192;
  struct Module {
    int64_t in, out;
    Buffer<uint16_t> a, b;
    std::vector<int32_t> ranks;
    LoraWeights w() const {
      return LoraWeights{a.data(), b.data(), DType::kBF16, kSlots, kRank, in, out, ranks.data()};
    }
  };
  const std::pair<int64_t, int64_t> shapes[] = {{H, H}, {H, KV}, {H, KV}, {H, H}, {H, I}, {H, I}, {I, H}};
  std::vector<std::vector<Module>> layers(kLayers);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  for (auto& l : layers)
    for (auto [in, out] : shapes) {
      Module m{in, out, Buffer<uint16_t>(kSlots * kRank * in), Buffer<uint16_t>(kSlots * kRank * out),
               std::vector<int32_t>(kSlots, kRank)};
      for (size_t i = 0; i < m.a.size(); ++i) m.a[i] = f32_to_bf16(d(rng));
      for (size_t i = 0; i < m.b.size(); ++i) m.b[i] = f32_to_bf16(d(rng));
      l.push_back(std::move(m));
    }
  std::vector<int32_t> slots(T);
  std::vector<LoraUse> more;
  for (int b = 0; b < T; ++b) {
    slots[b] = b % kSlots;
    for (int s = 1; s < stack; ++s) more.push_back({b, (b + s) % kSlots, 0.5f});
  }
  std::vector<float> xh(T * H, 0.1f), xi(T * I, 0.1f), yq(T * H), yk(T * KV), yv(T * KV), yo(T * H), yg(T * I),
      yu(T * I), yd(T * H);
  LoraScratch scratch;
  for (auto _ : state) {
    LoraPlan plan;  // built once per step, as Model::forward does
    lora_plan_build(slots, {}, more, plan);
    for (auto& l : layers) {
      LoraWeights q = l[0].w(), k = l[1].w(), v = l[2].w(), o = l[3].w(), g = l[4].w(), u = l[5].w(), dn = l[6].w();
      LoraTarget qkv[] = {{&q, yq.data(), H}, {&k, yk.data(), KV}, {&v, yv.data(), KV}};
      LoraTarget gu[] = {{&g, yg.data(), I}, {&u, yu.data(), I}};
      lora_apply(pool(), plan, xh.data(), H, qkv, scratch);
      lora_apply(pool(), plan, xh.data(), H, o, yo.data(), H, scratch);
      lora_apply(pool(), plan, xh.data(), H, gu, scratch);
      lora_apply(pool(), plan, xi.data(), I, dn, yd.data(), H, scratch);
    }
    benchmark::DoNotOptimize(yd.data());
  }
  state.SetLabel(isa_name());
}
BENCHMARK(BM_LoraDecodeStep)->Arg(1)->Arg(2)->Arg(3)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace lp::kernels

BENCHMARK_MAIN();
