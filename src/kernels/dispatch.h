// Internal to kernels/: the per-ISA kernel tables and the run-time choice between them.
// Each ISA's file (matmul_avx512.cpp, ops_avx2.cpp, ...) fills one IsaKernels with the row-range /
// single-item entry points; kernels.cpp owns the threading and calls the table. Tests call the *_with()
// functions with every table the CPU supports, so each ISA is checked against the scalar reference.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant.h"

namespace lp::kernels::detail {

enum class Isa : uint8_t { kScalar, kAvx2, kAvx512, kAvx512Bf16 };

// Everything one matmul call needs; the table's matmul_rows computes rows [n0, n1) of y for all T tokens.
struct MatmulArgs {
  const float* x = nullptr;      // (T, K) f32, row stride ldx
  const uint16_t* xb = nullptr;  // (T, ldxb) x rounded to bf16, zero-padded to ldxb; only when wants_bf16_x
  int64_t T = 0;
  int64_t ldx = 0;
  int64_t ldxb = 0;             // multiple of 32
  MatView W;                    // (N, K)
  const float* bias = nullptr;  // (N) or null
  float* y = nullptr;           // (T, N) f32, row stride ldy
  int64_t ldy = 0;
  bool accumulate = false;
  // Where this thread's weight stream likely continues once rows [n0, n1) are read (the next rows it will
  // take, in this call or the next one); null if unknown. Only prefetched.
  const char* pf_next = nullptr;
  // Quantized W: x quantized for it (act_block(W), ld == W.row_stride); null otherwise.
  const QuantActs* qa = nullptr;
};

// Fewer tokens than this take the GEMV path (W streamed once, row after row); more, the register-tiled GEMM.
inline constexpr int64_t kGemmMinTokens = 4;

inline constexpr int kMaxHeadDim = 256;  // attention keeps one head's output in registers

// One query row of one head, for attention_query.
struct AttnQuery {
  const float* q = nullptr;  // (head_dim)
  float* out = nullptr;      // (head_dim)
  const int32_t* block_table = nullptr;
  int32_t n_keys = 0;  // the query attends to positions [0, n_keys)
  int kv_head = 0;
  float scale = 1.f;
  // Software-prefetch the K/V rows (off when an earlier query of the same work item just read them, so
  // they are in cache).
  bool prefetch = true;
};

// Walks key positions 0, 1, 2, ... of one sequence and kv head through its block table, giving each
// position's row offset in PagedKV::k / ::v without a division per key.
class KeyWalker {
 public:
  KeyWalker(const PagedKV& c, const AttnQuery& q)
      : table_(q.block_table),
        block_stride_(static_cast<int64_t>(c.n_kv_heads) * c.block_size * c.head_dim),
        head_offset_(static_cast<int64_t>(q.kv_head) * c.block_size * c.head_dim),
        hd_(c.head_dim),
        bs_(c.block_size) {}
  int64_t offset() const { return table_[block_] * block_stride_ + head_offset_ + slot_ * hd_; }
  void next() {
    if (++slot_ == bs_) slot_ = 0, ++block_;
  }

 private:
  const int32_t* table_;
  int64_t block_stride_, head_offset_, hd_;
  int bs_, block_ = 0, slot_ = 0;
};

struct IsaKernels {
  Isa isa;
  const char* name;
  // Rows per tile that a matmul_rows range should be a multiple of (for even work split; any split is
  // correct).
  int row_grain;
  // True when matmul_rows reads args.xb (BF16 weights on AVX-512-BF16) instead of args.x.
  bool (*wants_bf16_x)(DType w_dtype);
  // xb[t][k] = bf16(x[t][k]) for k < K, 0 for K <= k < ldxb.
  void (*convert_x_bf16)(const float* x, int64_t T, int64_t ldx, int64_t K, uint16_t* xb, int64_t ldxb);
  void (*matmul_rows)(const MatmulArgs& a, int64_t n0, int64_t n1);
  // Quantized W (a.qa set): rows [n0, n1). Integer products, so every ISA's table gives the same block dots;
  // only the float sum of the scaled blocks may round differently.
  void (*matmul_rows_q)(const MatmulArgs& a, int64_t n0, int64_t n1);
  // Tokens [t0, t1) of x quantized into q, bit for bit what ref::quantize_acts gives.
  void (*quantize_acts)(const float* x, int64_t t0, int64_t t1, int64_t ldx, int64_t K, const QuantActs& q);
  // rmsnorm of tokens [t0, t1).
  void (*rmsnorm_rows)(const float* x, int64_t t0, int64_t t1, int64_t D, const void* w, DType w_dtype,
                       float eps, float* y);
  void (*rope)(float* x, int64_t T, int n_heads, int head_dim, const int32_t* pos, const float* cos_tab,
               const float* sin_tab);
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  void (*softmax)(float* x, int64_t n);
  int64_t (*argmax)(const float* x, int64_t n);  // n >= 1
  // scratch: at least n_keys floats.
  void (*attention_query)(const PagedKV& cache, const AttnQuery& q, float* scratch);
  // dst = n floats of src in dtype t, bit for bit what core/dtype.h's from_f32 gives (round to nearest even,
  // NaN -> its quiet NaN); for kv_write.
  void (*round_to)(DType t, const float* src, void* dst, int64_t n);
  // Sum of n floats read with wide loads (the value only keeps the reads alive).
  // pattern 0: a T0 prefetch 4 KB ahead for 2 of every 8 lines (mostly the hardware prefetcher); pattern 1:
  // every line T1 8 KB ahead (the GEMV's scheme); pattern 2: the same with NTA. Which one reads faster depends
  // on the machine and its state.
  float (*read_sum)(const float* p, size_t n, int pattern);
};

// Folds per-lane (value, first index) pairs of a vector argmax into the scalar loop's answer for the
// elements [0, n_done), then scans the rest: lane l saw indices l, l + W, ..., kept its first strictly
// largest value (index -1: none beat -inf). Shared by the AVX-512 and AVX2 argmax.
inline int64_t argmax_finish(const float* x, int64_t n, int64_t n_done, const float* lane_val,
                             const int32_t* lane_idx, int lanes) {
  float bv = x[0];
  int64_t bi = 0;
  for (int l = 0; l < lanes; ++l) {
    if (lane_idx[l] < 0) continue;
    if (lane_val[l] > bv || (lane_val[l] == bv && lane_idx[l] < bi)) bv = lane_val[l], bi = lane_idx[l];
  }
  for (int64_t i = n_done; i < n; ++i)
    if (x[i] > bv) bv = x[i], bi = i;
  return bi;
}

const IsaKernels& scalar_kernels();
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
const IsaKernels& avx512bf16_kernels();

bool isa_supported(Isa isa);
std::vector<Isa> supported_isas();  // in increasing order of preference
const IsaKernels& kernels_for(Isa isa);
// The table chosen once: the best supported ISA, or a lower one forced by LORAPLEX_ISA=scalar|avx2|avx512.
const IsaKernels& active();

// The public kernels, on an explicit table (the public functions call these with active()).
void matmul_multi_with(const IsaKernels& k, ComputePool& pool, const float* x, int64_t T, int64_t ldx,
                       std::span<const MatmulOut> outs, std::span<const MatView> next = {});
void matmul_with(const IsaKernels& k, ComputePool& pool, const float* x, int64_t T, int64_t ldx,
                 const MatView& W, const float* bias, float* y, int64_t ldy, bool accumulate,
                 std::span<const MatView> next = {});
void rmsnorm_with(const IsaKernels& k, ComputePool& pool, const float* x, int64_t T, int64_t D, const void* w,
                  DType w_dtype, float eps, float* y);
void attention_with(const IsaKernels& k, ComputePool& pool, const float* q, const PagedKV& cache,
                    std::span<const AttnSeq> seqs, int n_heads, float scale, float* out);
void silu_mul_with(const IsaKernels& k, ComputePool& pool, const float* gate, const float* up, float* out,
                   int64_t n);
void kv_write_with(const IsaKernels& k, const PagedKV& cache, const float* k_new, const float* v_new,
                   const int32_t* slot, int64_t T);

}  // namespace lp::kernels::detail

// Entry points compiled per ISA (defined in matmul_<isa>.cpp), gathered into tables by ops_<isa>.cpp.
namespace lp::kernels::avx512 {
void matmul_rows_bf16dot(const detail::MatmulArgs& a, int64_t n0, int64_t n1);  // needs AVX512_BF16
void matmul_rows_fma(const detail::MatmulArgs& a, int64_t n0, int64_t n1);
void convert_x_bf16(const float* x, int64_t T, int64_t ldx, int64_t K, uint16_t* xb, int64_t ldxb);
// Quantized W with x quantized to int8 (matmul_q_avx512.cpp); needs AVX512_VNNI.
void matmul_rows_vnni(const detail::MatmulArgs& a, int64_t n0, int64_t n1);
void quantize_acts(const float* x, int64_t t0, int64_t t1, int64_t ldx, int64_t K, const QuantActs& q);
}  // namespace lp::kernels::avx512
namespace lp::kernels::avx2 {
void matmul_rows_fma(const detail::MatmulArgs& a, int64_t n0, int64_t n1);
}  // namespace lp::kernels::avx2
