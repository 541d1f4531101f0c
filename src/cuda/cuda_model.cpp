#include "cuda/cuda_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "core/buffer.h"
#include "core/check.h"
#include "cuda/cuda_memory.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"
#include "cuda/scratch.h"
#include "cuda/step_types.h"

namespace lp::cuda {

using model::Proj;

namespace {

// The per-step metadata travels to the device as raw bytes: its structs must be plain.
static_assert(std::is_trivially_copyable_v<AttnSeqDev> && sizeof(AttnSeqDev) == 16);
static_assert(std::is_trivially_copyable_v<LoraTileDev> && sizeof(LoraTileDev) == 16);

constexpr size_t kDevAlign = 256;  // offsets of pieces inside one device allocation (cudaMalloc's alignment)

double gib(double bytes) { return bytes / 1073741824.0; }

// One decoder layer on the device. Matrices row-major [out][in] in their file dtype, q/k/v and gate/up
// concatenated by rows; biases f32 (null when absent).
struct DevLayer {
  const void* qkv = nullptr;      // (q_dim + 2 kv_dim, H)
  const void* o = nullptr;        // (H, q_dim)
  const void* gate_up = nullptr;  // (2 I, H)
  const void* down = nullptr;     // (H, I)
  DType qkv_dtype = DType::kF32, o_dtype = DType::kF32, gu_dtype = DType::kF32, down_dtype = DType::kF32;
  const void* attn_norm = nullptr;  // (H) in norm_dtype
  const void* mlp_norm = nullptr;
  DType norm_dtype = DType::kF32;
  const float* bias_qkv = nullptr;  // (q_dim + 2 kv_dim), zeros where one of the three has none
  const float* bias_o = nullptr;    // (H)
  const float* bias_gu = nullptr;   // (2 I)
  const float* bias_down = nullptr;  // (H)
};

template <class P>
P* at(uint8_t* base, size_t off) {
  return reinterpret_cast<P*>(base + off);
}

// Offsets of the pieces of one step's metadata in the staging buffer (and in its device copy), each 16-byte
// aligned.
struct MetaLayout {
  size_t tokens, positions, slots, seqs, tables, rows;
  size_t entry_row, entry_slot, entry_scale, tiles, token_row, token_begin, token_entry;
  size_t total;
};

}  // namespace

struct CudaModel::Impl {
  int device = 0;
  DeviceInfo info;
  model::ModelConfig config;
  model::ModelWeights weights;  // host views (mapped): shapes, dtypes; the forward reads the device copies

  cudaStream_t compute = nullptr;
  cudaEvent_t upload_done = nullptr;  // the last step's metadata upload (the staging buffer is free after it)
  std::unique_ptr<CudaMemory> memory;
  std::unique_ptr<Gemm> gemm;

  void* weights_dev = nullptr;  // one allocation for every weight
  const void* embed = nullptr;  // (V, H)
  DType embed_dtype = DType::kF32;
  const void* lm_head = nullptr;  // (V, H); == embed when tied
  DType lm_head_dtype = DType::kF32;
  const void* final_norm = nullptr;  // (H)
  DType final_norm_dtype = DType::kF32;
  std::vector<DevLayer> layers;

  model::RopeTable rope_table;  // the CPU model's rotary table, uploaded to cos_dev / sin_dev
  DevBuf cos_dev, sin_dev;

  // Scratch (grown on demand):
  int64_t cap_tokens = 0, cap_rows = 0;
  DevBuf x;       // (T, H) f32 residual stream
  DevBuf act;     // (max(T, R), max(H, q_dim, I)) the next GEMM's input, in its weights' dtype
  DevBuf qkv;     // (T, q_dim + 2 kv_dim) f32
  DevBuf q, k, v;  // (T, q_dim), (T, kv_dim), (T, kv_dim) f32
  DevBuf gu;      // (T, 2 I) f32
  DevBuf gate, up;  // (T, I) f32 each
  DevBuf logits;  // (R, V) f32
  DevBuf lora_v;  // (kMaxLoraTargets, n_entries, max_rank) f32
  DevBuf meta;    // the step's metadata (MetaLayout)
  HostBuf meta_host, logits_host;

  const void* checked_bank = nullptr;  // a slot bank already found in device memory (bank_info)
  // Per-step host state, reused:
  HostLoraPlan plan;
  std::vector<AttnSeqDev> seqs_host;
  std::vector<int32_t> tables_host;
  std::vector<char> covered;

  ~Impl() {
    // Teardown: errors have nowhere to go. Scratch buffers free themselves after this body.
    cudaSetDevice(device);
    if (compute) cudaStreamSynchronize(compute);
    gemm.reset();
    memory.reset();
    if (weights_dev) cudaFree(weights_dev);
    if (upload_done) cudaEventDestroy(upload_done);
    if (compute) cudaStreamDestroy(compute);
  }

  void upload_weights(const model::LoadOptions& options);
  void ensure_rope(int64_t n);
  void ensure_scratch(int64_t T, int64_t R);
  void layer_step(const model::Batch& b, kv::KvCache& cache, const model::LoraBankView* lora,
                  const LoraPlanDev& plan_dev, const int32_t* d_positions, const int32_t* d_slots,
                  const AttnSeqDev* d_seqs, const int32_t* d_tables, int l);
  // LoRA of the projections `ps` of layer l (sharing the input x), their outputs at column offsets `col` of
  // y (row stride ldy).
  void add_lora(const model::LoraBankView* lora, const LoraPlanDev& plan_dev, int l,
                std::initializer_list<std::pair<Proj, int64_t>> ps, const void* x, DType x_dtype, int64_t ldx,
                int64_t in, float* y, int64_t ldy);
};

namespace {

// load() refused quantized checkpoints and options before the weights were read: every matrix is dense.
void check_weights_dense(const model::ModelWeights& w) {
  auto dense = [](const kernels::MatView& m) {
    LP_CHECK(m.format == kernels::WeightFormat::kDense && m.row_stride >= m.cols && m.data != nullptr);
  };
  dense(w.embed);
  dense(w.lm_head);
  for (const auto& lw : w.layers)
    for (const auto& m : lw.proj) dense(m);
}

// Copies host → device through pinned staging (the weights come from a file mapping, which is pageable):
// two halves, so filling one overlaps the DMA of the other.
class Uploader {
 public:
  Uploader(cudaStream_t stream, size_t half_bytes) : stream_(stream), half_(half_bytes) {
    staging_.ensure(2 * half_, "weight upload staging");
    for (auto& e : done_) check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "creating an event");
  }
  ~Uploader() {
    cudaStreamSynchronize(stream_);
    for (auto& e : done_)
      if (e) cudaEventDestroy(e);
  }
  // rows × row_bytes from src (row stride src_stride bytes) to dst (packed).
  void rows(void* dst, const void* src, int64_t n_rows, size_t row_bytes, size_t src_stride) {
    auto* d = static_cast<uint8_t*>(dst);
    const auto* s = static_cast<const uint8_t*>(src);
    if (src_stride == row_bytes) {  // contiguous: chunks of the staging half
      bytes(d, s, static_cast<size_t>(n_rows) * row_bytes);
      return;
    }
    for (int64_t r = 0; r < n_rows; ++r) bytes(d + r * row_bytes, s + r * src_stride, row_bytes);
  }
  void bytes(uint8_t* dst, const uint8_t* src, size_t n) {
    for (size_t off = 0; off < n;) {
      const size_t m = std::min(half_, n - off);
      uint8_t* st = staging_.get<uint8_t>() + cur_ * half_;
      check_cuda(cudaEventSynchronize(done_[cur_]), "waiting for a staging buffer");  // its previous DMA is done
      std::memcpy(st, src + off, m);
      check_cuda(cudaMemcpyAsync(dst + off, st, m, cudaMemcpyHostToDevice, stream_), "uploading weights");
      check_cuda(cudaEventRecord(done_[cur_], stream_), "recording an event");
      cur_ ^= 1;
      off += m;
    }
  }
  void finish() { check_cuda(cudaStreamSynchronize(stream_), "uploading weights"); }

 private:
  cudaStream_t stream_;
  size_t half_;
  HostBuf staging_;
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int cur_ = 0;
};

}  // namespace

void CudaModel::Impl::upload_weights(const model::LoadOptions& options) {
  const auto& c = config;
  const int64_t H = c.hidden_size, I = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  const int64_t NQKV = QD + 2 * KD;
  check_weights_dense(weights);
  const bool tied = weights.lm_head.data == weights.embed.data;

  // Plan one allocation: every piece at a 256-byte offset.
  size_t total = 0;
  auto reserve = [&](size_t bytes) {
    const size_t off = total;
    total += round_up(bytes, kDevAlign);
    return off;
  };
  auto mat_bytes = [](const kernels::MatView& m) {
    return static_cast<size_t>(m.rows * m.cols) * dtype_size(m.dtype);
  };
  struct LayerOff {
    size_t qkv, o, gu, down, an, mn, bqkv = SIZE_MAX, bo = SIZE_MAX, bgu = SIZE_MAX, bdown = SIZE_MAX;
  };
  std::vector<LayerOff> lo(c.n_layers);
  const size_t off_embed = reserve(mat_bytes(weights.embed));
  const size_t off_lm = tied ? off_embed : reserve(mat_bytes(weights.lm_head));
  const size_t off_fnorm = reserve(H * dtype_size(weights.final_norm_dtype));
  for (int l = 0; l < c.n_layers; ++l) {
    const model::LayerWeights& lw = weights.layers[l];
    const auto& P = lw.proj;
    auto d = [&](Proj p) { return P[static_cast<int>(p)].dtype; };
    if (d(Proj::kK) != d(Proj::kQ) || d(Proj::kV) != d(Proj::kQ))
      fail("layer {}: q/k/v projections of different dtypes ({}, {}, {}) cannot run as one GEMM", l,
           dtype_name(d(Proj::kQ)), dtype_name(d(Proj::kK)), dtype_name(d(Proj::kV)));
    if (d(Proj::kUp) != d(Proj::kGate))
      fail("layer {}: gate/up projections of different dtypes ({}, {}) cannot run as one GEMM", l,
           dtype_name(d(Proj::kGate)), dtype_name(d(Proj::kUp)));
    LayerOff& o = lo[l];
    o.qkv = reserve(NQKV * H * dtype_size(d(Proj::kQ)));
    o.o = reserve(mat_bytes(P[static_cast<int>(Proj::kO)]));
    o.gu = reserve(2 * I * H * dtype_size(d(Proj::kGate)));
    o.down = reserve(mat_bytes(P[static_cast<int>(Proj::kDown)]));
    o.an = reserve(H * dtype_size(lw.norm_dtype));
    o.mn = reserve(H * dtype_size(lw.norm_dtype));
    auto has = [&](Proj p) { return lw.bias[static_cast<int>(p)] != nullptr; };
    if (has(Proj::kQ) || has(Proj::kK) || has(Proj::kV)) o.bqkv = reserve(NQKV * sizeof(float));
    if (has(Proj::kO)) o.bo = reserve(H * sizeof(float));
    if (has(Proj::kGate) || has(Proj::kUp)) o.bgu = reserve(2 * I * sizeof(float));
    if (has(Proj::kDown)) o.bdown = reserve(H * sizeof(float));
  }

  // Room for the weights, the GEMM workspace and a margin for scratch, cuBLAS and the context.
  constexpr size_t kMargin = size_t{512} << 20;
  size_t free_b = 0, total_b = 0;
  check_cuda(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  if (total + kMargin > free_b)
    fail("the model's weights need {:.2f} GiB of device memory (+ {:.2f} GiB working room); cuda:{} ({}) has "
         "{:.2f} GiB free of {:.2f} GiB",
         gib(total), gib(kMargin), device, info.name, gib(free_b), gib(total_b));
  {
    const cudaError_t e = cudaMalloc(&weights_dev, total);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      weights_dev = nullptr;
      fail("CUDA: cannot allocate {:.2f} GiB of device memory for the weights: {}", gib(total),
           cudaGetErrorString(e));
    }
  }
  auto* base = static_cast<uint8_t*>(weights_dev);
  // Zeros first: the pieces of a concatenated bias that a projection lacks stay zero.
  check_cuda(cudaMemsetAsync(base, 0, total, compute), "zeroing the weights");

  Uploader up(compute, size_t{32} << 20);
  size_t done = 0;
  auto progress = [&](size_t bytes) {
    done += bytes;
    if (options.progress) options.progress("uploading", done, total);
  };
  auto put_mat = [&](size_t off, const kernels::MatView& m) {
    const size_t es = dtype_size(m.dtype);
    up.rows(base + off, m.data, m.rows, static_cast<size_t>(m.cols) * es, static_cast<size_t>(m.row_stride) * es);
    progress(mat_bytes(m));
  };
  auto put_bytes = [&](size_t off, const void* src, size_t bytes) {
    up.bytes(base + off, static_cast<const uint8_t*>(src), bytes);
    progress(bytes);
  };

  put_mat(off_embed, weights.embed);
  if (!tied) put_mat(off_lm, weights.lm_head);
  put_bytes(off_fnorm, weights.final_norm, H * dtype_size(weights.final_norm_dtype));
  embed = base + off_embed;
  embed_dtype = weights.embed.dtype;
  lm_head = base + off_lm;
  lm_head_dtype = weights.lm_head.dtype;
  final_norm = base + off_fnorm;
  final_norm_dtype = weights.final_norm_dtype;

  layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const model::LayerWeights& lw = weights.layers[l];
    const LayerOff& o = lo[l];
    auto W = [&](Proj p) -> const kernels::MatView& { return lw.proj[static_cast<int>(p)]; };
    DevLayer& d = layers[l];
    // [q; k; v] and [gate; up]: stacked rows, so one GEMM writes the three (two) outputs side by side.
    const size_t qkv_es = dtype_size(W(Proj::kQ).dtype), gu_es = dtype_size(W(Proj::kGate).dtype);
    put_mat(o.qkv, W(Proj::kQ));
    put_mat(o.qkv + QD * H * qkv_es, W(Proj::kK));
    put_mat(o.qkv + (QD + KD) * H * qkv_es, W(Proj::kV));
    put_mat(o.o, W(Proj::kO));
    put_mat(o.gu, W(Proj::kGate));
    put_mat(o.gu + I * H * gu_es, W(Proj::kUp));
    put_mat(o.down, W(Proj::kDown));
    put_bytes(o.an, lw.attn_norm, H * dtype_size(lw.norm_dtype));
    put_bytes(o.mn, lw.mlp_norm, H * dtype_size(lw.norm_dtype));
    auto bias = [&](Proj p, size_t off, int64_t n) {
      if (const float* b = lw.bias[static_cast<int>(p)]) put_bytes(off, b, n * sizeof(float));
    };
    if (o.bqkv != SIZE_MAX) {
      bias(Proj::kQ, o.bqkv, QD);
      bias(Proj::kK, o.bqkv + QD * sizeof(float), KD);
      bias(Proj::kV, o.bqkv + (QD + KD) * sizeof(float), KD);
      d.bias_qkv = reinterpret_cast<const float*>(base + o.bqkv);
    }
    if (o.bo != SIZE_MAX) {
      bias(Proj::kO, o.bo, H);
      d.bias_o = reinterpret_cast<const float*>(base + o.bo);
    }
    if (o.bgu != SIZE_MAX) {
      bias(Proj::kGate, o.bgu, I);
      bias(Proj::kUp, o.bgu + I * sizeof(float), I);
      d.bias_gu = reinterpret_cast<const float*>(base + o.bgu);
    }
    if (o.bdown != SIZE_MAX) {
      bias(Proj::kDown, o.bdown, H);
      d.bias_down = reinterpret_cast<const float*>(base + o.bdown);
    }
    d.qkv = base + o.qkv;
    d.o = base + o.o;
    d.gate_up = base + o.gu;
    d.down = base + o.down;
    d.qkv_dtype = W(Proj::kQ).dtype;
    d.o_dtype = W(Proj::kO).dtype;
    d.gu_dtype = W(Proj::kGate).dtype;
    d.down_dtype = W(Proj::kDown).dtype;
    d.attn_norm = base + o.an;
    d.mlp_norm = base + o.mn;
    d.norm_dtype = lw.norm_dtype;
  }
  up.finish();
  if (options.progress) options.progress("uploading", total, total);
}

// The CPU model's rotary table (model::RopeTable: the same values and growth), uploaded whole whenever it
// grows.
void CudaModel::Impl::ensure_rope(int64_t n) {
  if (!rope_table.grow(config, n)) return;
  const size_t bytes = rope_table.cos.size() * sizeof(float);
  cos_dev.ensure(bytes, compute, "the rotary tables");
  sin_dev.ensure(bytes, compute, "the rotary tables");
  check_cuda(cudaMemcpyAsync(cos_dev.get(), rope_table.cos.data(), bytes, cudaMemcpyHostToDevice, compute), "rope upload");
  check_cuda(cudaMemcpyAsync(sin_dev.get(), rope_table.sin.data(), bytes, cudaMemcpyHostToDevice, compute), "rope upload");
  check_cuda(cudaStreamSynchronize(compute), "rope upload");  // the host vectors may move when they grow next
}

void CudaModel::Impl::ensure_scratch(int64_t T, int64_t R) {
  const auto& c = config;
  const int64_t H = c.hidden_size, I = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  const size_t f = sizeof(float);
  if (T > cap_tokens) {
    const int64_t n = static_cast<int64_t>(round_up(static_cast<size_t>(T), 64));  // fewer regrowths
    x.ensure(n * H * f, compute, "the residual stream");
    qkv.ensure(n * (QD + 2 * KD) * f, compute, "q/k/v");
    q.ensure(n * QD * f, compute, "q");
    k.ensure(n * KD * f, compute, "k");
    v.ensure(n * KD * f, compute, "v");
    gu.ensure(n * 2 * I * f, compute, "gate/up");
    gate.ensure(n * I * f, compute, "gate");
    up.ensure(n * I * f, compute, "up");
    cap_tokens = n;
  }
  // act holds any GEMM input: (T, H), (T, q_dim), (T, I) or the (R, H) rows of the final norm; 4 bytes
  // per element whatever the dtype.
  const int64_t rows = std::max(T, R);
  act.ensure(static_cast<size_t>(rows) * std::max<int64_t>({H, QD, I}) * f, compute, "GEMM inputs");
  if (R > cap_rows) {
    const int64_t n = static_cast<int64_t>(round_up(static_cast<size_t>(R), 16));
    logits.ensure(static_cast<size_t>(n) * c.vocab_size * f, compute, "logits");
    logits_host.ensure(static_cast<size_t>(n) * c.vocab_size * f, "logits");
    cap_rows = n;
  }
}

void CudaModel::Impl::add_lora(const model::LoraBankView* lora, const LoraPlanDev& plan_dev, int l,
                               std::initializer_list<std::pair<Proj, int64_t>> ps, const void* xin,
                               DType x_dtype, int64_t ldx, int64_t in, float* y, int64_t ldy) {
  if (lora == nullptr || plan_dev.n_entries == 0) return;
  std::array<LoraTargetDev, kMaxLoraTargets> t{};
  size_t n = 0;
  DType w_dtype = DType::kF32;
  int max_rank = 0;
  for (auto [p, col] : ps) {
    const kernels::LoraWeights* w = lora->get(l, p);
    if (w == nullptr) continue;  // no slot memory for this module: no adapter can change it
    LP_CHECK(n < t.size());
    LP_CHECK(w->in == in && col + w->out <= ldy && w->b != nullptr && w->ranks != nullptr,
             "LoRA {} of layer {}: in {} out {} vs the projection's in {} (column {} of {})", model::proj_name(p),
             l, w->in, w->out, in, col, ldy);
    LP_CHECK(n == 0 || (w->dtype == w_dtype && w->max_rank == max_rank));
    w_dtype = w->dtype;
    max_rank = w->max_rank;
    t[n++] = LoraTargetDev{w->a, w->b, w->ranks, w->out, y + col, ldy};
  }
  if (n == 0) return;
  LP_CHECK(max_rank > 0 && static_cast<int64_t>(max_rank) * plan_dev.n_entries * kMaxLoraTargets * 4 <=
                               static_cast<int64_t>(lora_v.cap()));
  lora_shrink(plan_dev, xin, x_dtype, ldx, in, std::span<const LoraTargetDev>(t.data(), n), w_dtype, max_rank,
              lora_v.get<float>(), compute);
  lora_expand(plan_dev, std::span<const LoraTargetDev>(t.data(), n), w_dtype, max_rank, lora_v.get<float>(),
              compute);
}

// Columns [col, col + w) of the (T, ld) f32 matrix src into the packed (T, w) matrix dst.
static void split_columns(float* dst, const float* src, int64_t ld, int64_t col, int64_t w, int64_t T,
                          cudaStream_t s) {
  check_cuda(cudaMemcpy2DAsync(dst, w * sizeof(float), src + col, ld * sizeof(float), w * sizeof(float), T,
                       cudaMemcpyDeviceToDevice, s),
     "splitting a fused projection output");
}

void CudaModel::Impl::layer_step(const model::Batch& b, kv::KvCache& cache, const model::LoraBankView* lora,
                                 const LoraPlanDev& pd, const int32_t* d_positions, const int32_t* d_slots,
                                 const AttnSeqDev* d_seqs, const int32_t* d_tables, int l) {
  const auto& c = config;
  const int64_t T = b.size(), H = c.hidden_size, I = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  const int64_t NQKV = QD + 2 * KD;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const DevLayer& d = layers[l];
  float* X = x.get<float>();
  void* A = act.get();
  float* QKV = qkv.get<float>();
  float* Q = q.get<float>();
  float* K = k.get<float>();
  float* V = v.get<float>();
  float* GU = gu.get<float>();
  float* G = gate.get<float>();
  float* U = up.get<float>();

  // Attention: x += o(attention(rope(q), rope(k), v)) of the normed x, q/k/v from ONE GEMM of [q; k; v].
  rmsnorm(X, nullptr, T, H, d.attn_norm, d.norm_dtype, eps, A, d.qkv_dtype, compute);
  gemm->run(A, H, d.qkv, d.qkv_dtype, QKV, NQKV, T, NQKV, H, /*accumulate=*/false, compute);
  if (d.bias_qkv) add_bias(QKV, T, NQKV, NQKV, d.bias_qkv, compute);
  add_lora(lora, pd, l, {{Proj::kQ, 0}, {Proj::kK, QD}, {Proj::kV, QD + KD}}, A, d.qkv_dtype, H, H, QKV, NQKV);
  // rope, kv_write and attention take packed rows: the fused output is split by strided copies.
  split_columns(Q, QKV, NQKV, 0, QD, T, compute);
  split_columns(K, QKV, NQKV, QD, KD, T, compute);
  split_columns(V, QKV, NQKV, QD + KD, KD, T, compute);
  rope(Q, T, c.n_heads, c.head_dim, d_positions, cos_dev.get<float>(), sin_dev.get<float>(), compute);
  rope(K, T, c.n_kv_heads, c.head_dim, d_positions, cos_dev.get<float>(), sin_dev.get<float>(), compute);
  const kv::KvShape& ks = cache.shape();
  const PagedKvDev kv{cache.k(l), cache.v(l), ks.dtype, ks.block_size, c.n_kv_heads, c.head_dim};
  kv_write(kv, K, V, d_slots, T, compute);
  attention(kv, Q, seqs_host, d_seqs, d_tables, c.n_heads, 1.0f / std::sqrt(static_cast<float>(c.head_dim)), A,
            d.o_dtype, compute);
  // Residual add fused into the output projection: x += attn · Woᵀ (+ bias) (+ LoRA).
  gemm->run(A, QD, d.o, d.o_dtype, X, H, T, H, QD, /*accumulate=*/true, compute);
  if (d.bias_o) add_bias(X, T, H, H, d.bias_o, compute);
  add_lora(lora, pd, l, {{Proj::kO, 0}}, A, d.o_dtype, QD, QD, X, H);

  // MLP: x += down(silu(gate) * up) of the normed x, gate/up from ONE GEMM of [gate; up].
  rmsnorm(X, nullptr, T, H, d.mlp_norm, d.norm_dtype, eps, A, d.gu_dtype, compute);
  gemm->run(A, H, d.gate_up, d.gu_dtype, GU, 2 * I, T, 2 * I, H, /*accumulate=*/false, compute);
  if (d.bias_gu) add_bias(GU, T, 2 * I, 2 * I, d.bias_gu, compute);
  add_lora(lora, pd, l, {{Proj::kGate, 0}, {Proj::kUp, I}}, A, d.gu_dtype, H, H, GU, 2 * I);
  split_columns(G, GU, 2 * I, 0, I, T, compute);
  split_columns(U, GU, 2 * I, I, I, T, compute);
  silu_mul(G, U, A, d.down_dtype, T * I, compute);
  gemm->run(A, I, d.down, d.down_dtype, X, H, T, H, I, /*accumulate=*/true, compute);
  if (d.bias_down) add_bias(X, T, H, H, d.bias_down, compute);
  add_lora(lora, pd, l, {{Proj::kDown, 0}}, A, d.down_dtype, I, I, X, H);
}

std::unique_ptr<CudaModel> CudaModel::load(const std::filesystem::path& dir, const model::LoadOptions& options,
                                           int device_index) {
  auto impl = std::make_unique<Impl>();
  std::string why;
  if (!probe_device(device_index, &impl->info, &why)) fail("--device cuda: {}", why);
  impl->device = device_index;
  check_cuda(cudaSetDevice(device_index), "cudaSetDevice");
  impl->config = model::ModelConfig::from_dir(dir);
  if (!impl->config.quant.method.empty() || options.quantization != model::Quantization::kNone)
    fail("--device cuda runs dense F32/BF16/F16 weights; int8/int4 are CPU-only for now");
  LP_CHECK(impl->config.max_model_len > 0);
  // Mapped: the file pages are read once, by the upload, and the host keeps no second copy.
  model::LoadOptions o = options;
  o.placement = model::WeightPlacement::kMapped;
  impl->weights = model::ModelWeights::load(dir, impl->config, o);
  check_cuda(cudaStreamCreateWithFlags(&impl->compute, cudaStreamNonBlocking), "creating the compute stream");
  check_cuda(cudaEventCreateWithFlags(&impl->upload_done, cudaEventDisableTiming), "creating an event");
  impl->memory = std::make_unique<CudaMemory>(device_index);
  impl->gemm = std::make_unique<Gemm>();
  impl->upload_weights(options);
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

CudaModel::CudaModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaModel::~CudaModel() = default;

std::string CudaModel::describe() const {
  const DeviceInfo& i = impl_->info;
  return fmt::format("cuda:{} {} (sm_{}{}, {} SMs, {:.0f} GiB)", i.index, i.name, i.cc_major, i.cc_minor,
                     i.multiprocessors, gib(static_cast<double>(i.total_bytes)));
}

const model::ModelConfig& CudaModel::config() const { return impl_->config; }
const model::ModelWeights& CudaModel::weights() const { return impl_->weights; }
const DeviceInfo& CudaModel::info() const { return impl_->info; }
DeviceMemory* CudaModel::slot_memory() { return impl_->memory.get(); }

std::unique_ptr<kv::KvCache> CudaModel::make_kv_cache(const kv::KvShape& shape, int num_blocks) {
  check_cuda(cudaSetDevice(impl_->device), "cudaSetDevice");
  return std::make_unique<kv::KvCache>(shape, num_blocks, *impl_->memory);
}

void CudaModel::synchronize() {
  check_cuda(cudaSetDevice(impl_->device), "cudaSetDevice");
  check_cuda(cudaStreamSynchronize(impl_->compute), "waiting for the compute stream");
  impl_->memory->synchronize_copies();
}

namespace {

// What the forward needs to know of the slot bank, with its invariants checked: every adapted module shares
// one dtype, slot count and max rank, and the slots are in device memory.
struct BankInfo {
  bool any = false;
  DType dtype = DType::kF32;
  int max_loras = 0;
  int max_rank = 0;
};

// `checked` remembers the last bank found in device memory, so the driver is asked once per bank, not per step.
BankInfo bank_info(const model::LoraBankView& view, const void*& checked) {
  BankInfo bi;
  for (const auto& layer : view.layers)
    for (const kernels::LoraWeights& w : layer) {
      if (w.a == nullptr) continue;
      if (!bi.any) {
        bi = {true, w.dtype, w.max_loras, w.max_rank};
        if (w.a != checked) {
          cudaPointerAttributes attr{};
          check_cuda(cudaPointerGetAttributes(&attr, w.a), "cudaPointerGetAttributes");
          LP_CHECK(attr.type == cudaMemoryTypeDevice,
                   "the LoRA slot bank is not in device memory (build it on CudaModel::slot_memory())");
          checked = w.a;
        }
      }
      LP_CHECK(w.dtype == bi.dtype && w.max_loras == bi.max_loras && w.max_rank == bi.max_rank);
    }
  return bi;
}

}  // namespace

void CudaModel::forward(ComputePool&, const model::Batch& b, kv::KvCache& cache, float* logits,
                        const model::LoraBankView* lora) {
  Impl& m = *impl_;
  const auto& c = m.config;
  const int64_t T = b.size(), H = c.hidden_size, V = c.vocab_size;
  const int64_t R = static_cast<int64_t>(b.logit_rows.size());
  check_cuda(cudaSetDevice(m.device), "cudaSetDevice");  // the engine thread is not the one that loaded the model

  // The CPU model's checks, and then every index a kernel follows: device code cannot check them.
  LP_CHECK(T > 0, "empty batch");
  LP_CHECK(T <= INT32_MAX && R <= INT32_MAX);
  const kv::KvShape& ks = cache.shape();
  LP_CHECK(ks.n_layers == c.n_layers && ks.n_kv_heads == c.n_kv_heads && ks.head_dim == c.head_dim,
           "KV cache shape ({} layers, {} kv heads, head_dim {}) is not this model's", ks.n_layers,
           ks.n_kv_heads, ks.head_dim);
  LP_CHECK(cache.on_device(), "the KV cache is in host memory (make it with CudaModel::make_kv_cache)");
  LP_CHECK(b.positions.size() == b.tokens.size() && b.slots.size() == b.tokens.size());
  const int64_t n_slots = static_cast<int64_t>(cache.num_blocks()) * ks.block_size;
  int64_t max_pos = 0;
  for (int64_t t = 0; t < T; ++t) {
    LP_CHECK(b.tokens[t] >= 0 && b.tokens[t] < c.vocab_size, "token id {} out of range", b.tokens[t]);
    LP_CHECK(b.positions[t] >= 0 && b.positions[t] < c.max_model_len, "position {} out of range",
             b.positions[t]);
    LP_CHECK(b.slots[t] >= 0 && b.slots[t] < n_slots, "KV slot {} out of range ({} slots)", b.slots[t], n_slots);
    max_pos = std::max<int64_t>(max_pos, b.positions[t]);
  }
  for (int32_t row : b.logit_rows) LP_CHECK(row >= 0 && row < T, "logit row {} out of range", row);
  m.seqs_host.clear();
  m.tables_host.clear();
  m.covered.assign(static_cast<size_t>(T), 0);
  for (const kernels::AttnSeq& s : b.seqs) {
    LP_CHECK(s.q_len > 0 && s.q_begin >= 0 && s.q_begin + static_cast<int64_t>(s.q_len) <= T &&
                 s.ctx_len >= s.q_len && s.block_table != nullptr,
             "sequence rows [{}, +{}) ctx {} in a batch of {}", s.q_begin, s.q_len, s.ctx_len, T);
    for (int32_t r = s.q_begin; r < s.q_begin + s.q_len; ++r) {
      LP_CHECK(!m.covered[r], "row {} in two sequences", r);  // attention would write it twice
      m.covered[r] = 1;
    }
    m.seqs_host.push_back({s.q_begin, s.q_len, s.ctx_len, static_cast<int32_t>(m.tables_host.size())});
    const int64_t nb = (static_cast<int64_t>(s.ctx_len) + ks.block_size - 1) / ks.block_size;
    for (int64_t i = 0; i < nb; ++i) {
      LP_CHECK(s.block_table[i] >= 0 && s.block_table[i] < cache.num_blocks(), "block {} out of range",
               s.block_table[i]);
      m.tables_host.push_back(s.block_table[i]);
    }
  }

  // LoRA: the plan over all tokens, built on the host (cuda/step_types.h).
  m.plan = HostLoraPlan{};
  BankInfo bank;
  if (lora != nullptr && !b.lora_slots.empty()) {
    LP_CHECK(b.lora_slots.size() == b.tokens.size() && static_cast<int>(lora->layers.size()) == c.n_layers);
    bank = bank_info(*lora, m.checked_bank);
    if (bank.any) {
      for (int32_t s : b.lora_slots) LP_CHECK(s >= -1 && s < bank.max_loras, "adapter slot {} out of range", s);
      for (const kernels::LoraUse& u : b.lora_more)
        LP_CHECK(u.row >= 0 && u.row < T && u.slot >= -1 && u.slot < bank.max_loras,
                 "stacked adapter (row {}, slot {}) out of range", u.row, u.slot);
      build_lora_plan(b.lora_slots, b.lora_scales, b.lora_more, m.plan);
    }
  }
  const model::LoraBankView* step_lora = bank.any && !m.plan.empty() ? lora : nullptr;
  const int64_t E = static_cast<int64_t>(m.plan.entry_row.size());
  {
    const HostLoraPlan& p = m.plan;
    LP_CHECK(p.entry_slot.size() == p.entry_row.size() && p.entry_scale.size() == p.entry_row.size() &&
                 p.token_entry.size() == p.entry_row.size() &&
                 (E == 0 || p.token_begin.size() == p.token_row.size() + 1),
             "inconsistent LoRA plan");
  }

  m.ensure_scratch(T, R);
  m.ensure_rope(max_pos + 1);
  if (step_lora)
    m.lora_v.ensure(static_cast<size_t>(kMaxLoraTargets) * E * bank.max_rank * sizeof(float), m.compute,
                    "LoRA intermediates");

  // One upload of everything the kernels index with, through the pinned staging buffer.
  MetaLayout L{};
  {
    size_t off = 0;
    auto sec = [&](size_t bytes) {
      const size_t o = off;
      off += round_up(bytes, 16);
      return o;
    };
    const HostLoraPlan& p = m.plan;
    L.tokens = sec(T * sizeof(int32_t));
    L.positions = sec(T * sizeof(int32_t));
    L.slots = sec(T * sizeof(int32_t));
    L.seqs = sec(m.seqs_host.size() * sizeof(AttnSeqDev));
    L.tables = sec(m.tables_host.size() * sizeof(int32_t));
    L.rows = sec(R * sizeof(int32_t));
    L.entry_row = sec(p.entry_row.size() * sizeof(int32_t));
    L.entry_slot = sec(p.entry_slot.size() * sizeof(int32_t));
    L.entry_scale = sec(p.entry_scale.size() * sizeof(float));
    L.tiles = sec(p.tiles.size() * sizeof(LoraTileDev));
    L.token_row = sec(p.token_row.size() * sizeof(int32_t));
    L.token_begin = sec(p.token_begin.size() * sizeof(int32_t));
    L.token_entry = sec(p.token_entry.size() * sizeof(int32_t));
    L.total = off;
  }
  // The previous step's upload may still be reading the staging buffer.
  check_cuda(cudaEventSynchronize(m.upload_done), "waiting for the previous step's upload");
  m.meta_host.ensure(L.total, "step metadata");
  m.meta.ensure(L.total, m.compute, "step metadata");
  {
    auto* h = m.meta_host.get<uint8_t>();
    auto put = [&](size_t off, const auto& vec) {
      const size_t bytes = vec.size() * sizeof(vec[0]);
      if (bytes > 0) std::memcpy(h + off, vec.data(), bytes);
    };
    put(L.tokens, b.tokens);
    put(L.positions, b.positions);
    put(L.slots, b.slots);
    put(L.seqs, m.seqs_host);
    put(L.tables, m.tables_host);
    put(L.rows, b.logit_rows);
    put(L.entry_row, m.plan.entry_row);
    put(L.entry_slot, m.plan.entry_slot);
    put(L.entry_scale, m.plan.entry_scale);
    put(L.tiles, m.plan.tiles);
    put(L.token_row, m.plan.token_row);
    put(L.token_begin, m.plan.token_begin);
    put(L.token_entry, m.plan.token_entry);
  }
  check_cuda(cudaMemcpyAsync(m.meta.get(), m.meta_host.get(), L.total, cudaMemcpyHostToDevice, m.compute),
     "uploading the step's metadata");
  check_cuda(cudaEventRecord(m.upload_done, m.compute), "recording the upload event");
  auto* md = m.meta.get<uint8_t>();
  const int32_t* d_tokens = at<const int32_t>(md, L.tokens);
  const int32_t* d_positions = at<const int32_t>(md, L.positions);
  const int32_t* d_slots = at<const int32_t>(md, L.slots);
  const AttnSeqDev* d_seqs = at<const AttnSeqDev>(md, L.seqs);
  const int32_t* d_tables = at<const int32_t>(md, L.tables);
  const int32_t* d_rows = at<const int32_t>(md, L.rows);
  LoraPlanDev pd;
  if (step_lora) {
    pd.entry_row = at<const int32_t>(md, L.entry_row);
    pd.entry_slot = at<const int32_t>(md, L.entry_slot);
    pd.entry_scale = at<const float>(md, L.entry_scale);
    pd.tiles = at<const LoraTileDev>(md, L.tiles);
    pd.n_entries = static_cast<int32_t>(E);
    pd.n_tiles = static_cast<int32_t>(m.plan.tiles.size());
    pd.token_row = at<const int32_t>(md, L.token_row);
    pd.token_begin = at<const int32_t>(md, L.token_begin);
    pd.token_entry = at<const int32_t>(md, L.token_entry);
    pd.n_tokens = static_cast<int32_t>(m.plan.token_row.size());
    pd.max_stack = m.plan.max_stack;
  }

  // The step: it first waits (on the device) for every slot copy enqueued before it.
  m.memory->before_step(m.compute);
  embed(m.embed, m.embed_dtype, H, d_tokens, T, m.x.get<float>(), m.compute);
  for (int l = 0; l < c.n_layers; ++l)
    m.layer_step(b, cache, step_lora, pd, d_positions, d_slots, d_seqs, d_tables, l);
  m.memory->after_step(m.compute);  // the slots and the KV cache are read no more: later copies may start
  if (R == 0) return;
  // Only the rows that sample: gathered by the final norm, then lm_head, then back to the host.
  rmsnorm(m.x.get<float>(), d_rows, R, H, m.final_norm, m.final_norm_dtype, static_cast<float>(c.rms_norm_eps),
          m.act.get(), m.lm_head_dtype, m.compute);
  m.gemm->run(m.act.get(), H, m.lm_head, m.lm_head_dtype, m.logits.get<float>(), V, R, V, H,
              /*accumulate=*/false, m.compute);
  const size_t bytes = static_cast<size_t>(R * V) * sizeof(float);
  check_cuda(cudaMemcpyAsync(m.logits_host.get(), m.logits.get(), bytes, cudaMemcpyDeviceToHost, m.compute),
     "copying the logits to the host");
  check_cuda(cudaStreamSynchronize(m.compute), "the forward step");
  std::memcpy(logits, m.logits_host.get(), bytes);
}

}  // namespace lp::cuda
