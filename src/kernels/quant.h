// Quantized weight matrices (WeightFormat kQ8 / kQ4, see kernels.h) and the int8 activations the integer
// matmul multiplies them with. Packing runs once, at load; the kernels only read the packed layout.
// Why integer products: a decode step is bandwidth-bound, and int4 weights stream 4x fewer bytes than BF16,
// so the arithmetic per byte must be 4x cheaper too. Widening nibbles to BF16 for vdpbf16ps costs several
// instructions per 32 weights; vpdpbusd multiplies 64 unpacked bytes by 64 int8 activations in one.
#pragma once

#include <cstdint>
#include <utility>

#include "core/buffer.h"
#include "kernels/kernels.h"

namespace lp::kernels {

inline constexpr int64_t kQuantColAlign = 64;  // quantized rows are padded to a multiple of this

// cols rounded up to kQuantColAlign: the row_stride of a quantized matrix.
inline int64_t quant_padded_cols(int64_t cols) {
  return static_cast<int64_t>(round_up(static_cast<size_t>(cols), kQuantColAlign));
}

// Where column c of a kQ4 row is: its byte within the row and the shift of its nibble (see WeightFormat).
inline std::pair<int64_t, int> q4_position(int64_t c) {
  const int64_t j = c % 64;
  return {c / 64 * 32 + j % 32, j < 32 ? 0 : 4};
}

// Bytes a (rows, cols) matrix takes in a quantized format, scales and zero points included:
//   kQ8: rows x Kp + 4 x rows;   kQ4: rows x Kp / 2 + 3 x rows x (Kp / group);   Kp = quant_padded_cols(cols)
// (what mat_bytes gives for such a view, from the shape alone: for plans).
int64_t quant_matrix_bytes(WeightFormat format, int64_t rows, int64_t cols, int64_t group = 0);

// Columns per activation block for a quantized W: 128, or 64 when a kQ4 group is an odd multiple of 64
// (a block never straddles two groups). The last block of a row may be 64 columns shorter.
int act_block(const MatView& W);

// A quantized matrix that owns its storage; view() is what the kernels take.
class QuantMatrix {
 public:
  QuantMatrix() = default;
  QuantMatrix(QuantMatrix&&) noexcept = default;
  QuantMatrix& operator=(QuantMatrix&&) noexcept = default;

  // int8, weight-only, symmetric per output row (the rule the tests reproduce independently):
  //   scale_r = max_k |W[r][k]| / 127 in f32 (1 for a zero row);
  //   q = round-half-to-even(W[r][k] / scale_r) clamped to [-127, 127].
  static QuantMatrix quantize_int8(const MatView& dense);

  // A kQ4 matrix of zero nibbles, zero points and scales, to be filled with set_q4 / set_group.
  // group: a multiple of 64 that divides quant_padded_cols(cols). `from`: the dtype reported in view().
  static QuantMatrix make_q4(int64_t rows, int64_t cols, int32_t group, DType from);
  void set_q4(int64_t r, int64_t c, uint8_t nib);                                  // nib in 0..15
  // Row r at once: nibs[c] for c < cols (each in 0..15), the padding zero. The bulk form of set_q4.
  void set_q4_row(int64_t r, const uint8_t* nibs);
  void set_group(int64_t r, int64_t g, uint16_t scale_f16, uint8_t zero);          // zero in 0..15
  uint8_t q4_at(int64_t r, int64_t c) const;

  const MatView& view() const { return view_; }
  // Bytes of storage (packed rows, scales, zero points): what a matmul streams.
  size_t bytes() const;

 private:
  Buffer<uint8_t> data_;        // (rows, row_bytes)
  Buffer<float> row_scale_;     // kQ8: (rows)
  Buffer<uint16_t> gscale_;     // kQ4: (rows, n_groups) f16
  Buffer<uint8_t> gzero_;       // kQ4: (rows, n_groups)
  MatView view_;
};

// x quantized for the integer kernels, per token and per block of `block` columns:
//   amax = max_{k in block} |x[k]|;  scale = amax / 127;  inv = amax > 0 ? 127 / amax : 0 (both f32)
//   xq[k] = clamp(round-half-to-even(x[k] * inv), -127, 127);   columns K <= k < ld are 0
//   lane_sum[l] = sum of xq[k] over the block's k with (k % 64) / 4 == l   (the 16 i32 lanes of vpdpbusd)
struct QuantActs {
  int8_t* xq = nullptr;         // (T, ld), ld a multiple of 64
  float* scale = nullptr;       // (T, n_blocks)
  int32_t* lane_sum = nullptr;  // (T, n_blocks, 16)
  int64_t ld = 0;
  int64_t n_blocks = 0;
  int block = 0;
};

// Scratch for QuantActs of up to T tokens of K columns; reused across calls.
struct QuantActsBuffer {
  Buffer<int8_t> xq;
  Buffer<float> scale;
  Buffer<int32_t> lane_sum;
  // Sizes the buffers and returns the (not yet filled) view.
  QuantActs prepare(int64_t T, int64_t K, int block);
};

}  // namespace lp::kernels
