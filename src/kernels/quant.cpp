#include "kernels/quant.h"

#include <cmath>

#include "core/check.h"

namespace lp::kernels {

int64_t row_bytes(const MatView& W) {
  switch (W.format) {
    case WeightFormat::kDense:
      return W.row_stride * static_cast<int64_t>(dtype_size(W.dtype));
    case WeightFormat::kQ8:
      return W.row_stride;
    case WeightFormat::kQ4:
      return W.row_stride / 2;
  }
  return 0;
}

int64_t quant_matrix_bytes(WeightFormat f, int64_t rows, int64_t cols, int64_t group) {
  const int64_t kp = quant_padded_cols(cols);
  switch (f) {
    case WeightFormat::kQ8:
      return rows * kp + 4 * rows;
    case WeightFormat::kQ4:
      LP_CHECK(group > 0 && kp % group == 0, "int4 group {} does not divide {} columns", group, kp);
      return rows * kp / 2 + 3 * rows * (kp / group);
    case WeightFormat::kDense:
      break;
  }
  LP_CHECK(false, "quant_matrix_bytes: not a quantized format");
  return 0;
}

int64_t mat_bytes(const MatView& W) {
  if (W.format == WeightFormat::kDense) return W.rows * row_bytes(W);
  return quant_matrix_bytes(W.format, W.rows, W.cols, W.group);
}

int act_block(const MatView& W) {
  if (W.format == WeightFormat::kQ4 && W.group % 128 != 0) return 64;
  return 128;
}

QuantMatrix QuantMatrix::quantize_int8(const MatView& d) {
  LP_CHECK(d.format == WeightFormat::kDense, "quantize_int8: the matrix is already quantized");
  QuantMatrix m;
  const int64_t R = d.rows, K = d.cols, Kp = quant_padded_cols(K);
  m.data_.resize(static_cast<size_t>(R * Kp));
  m.row_scale_.resize(static_cast<size_t>(std::max<int64_t>(R, 1)));
  std::vector<float> row(static_cast<size_t>(K));
  const size_t esize = dtype_size(d.dtype);
  for (int64_t r = 0; r < R; ++r) {
    to_f32(d.dtype, static_cast<const char*>(d.data) + r * d.row_stride * esize, row.data(), K);
    float amax = 0.f;
    for (float v : row) amax = std::max(amax, std::fabs(v));
    const float scale = amax > 0.f ? amax / 127.f : 1.f;
    m.row_scale_[r] = scale;
    uint8_t* q = m.data_.data() + r * Kp;
    for (int64_t k = 0; k < K; ++k) {
      const float v = std::nearbyint(row[k] / scale);  // the default rounding mode: half to even
      q[k] = static_cast<uint8_t>(static_cast<int>(std::clamp(v, -127.f, 127.f)) + 128);
    }
    for (int64_t k = K; k < Kp; ++k) q[k] = 128;
  }
  m.view_ = MatView{m.data_.data(), d.dtype, R, K, Kp};
  m.view_.format = WeightFormat::kQ8;
  m.view_.row_scale = m.row_scale_.data();
  return m;
}

QuantMatrix QuantMatrix::make_q4(int64_t rows, int64_t cols, int32_t group, DType from) {
  const int64_t Kp = quant_padded_cols(cols);
  LP_CHECK(rows >= 0 && cols > 0 && group > 0 && group % 64 == 0 && Kp % group == 0,
           "make_q4: group {} for {} columns", group, cols);
  QuantMatrix m;
  const int64_t ng = Kp / group;
  m.data_.resize(static_cast<size_t>(rows * Kp / 2));
  m.data_.zero();
  m.gscale_.resize(static_cast<size_t>(std::max<int64_t>(rows * ng, 1)));
  m.gscale_.zero();
  m.gzero_.resize(static_cast<size_t>(std::max<int64_t>(rows * ng, 1)));
  m.gzero_.zero();
  m.view_ = MatView{m.data_.data(), from, rows, cols, Kp};
  m.view_.format = WeightFormat::kQ4;
  m.view_.group = group;
  m.view_.group_scale = m.gscale_.data();
  m.view_.group_zero = m.gzero_.data();
  return m;
}

void QuantMatrix::set_q4(int64_t r, int64_t c, uint8_t nib) {
  LP_CHECK(view_.format == WeightFormat::kQ4 && r >= 0 && r < view_.rows && c >= 0 && c < view_.cols &&
               nib < 16,
           "set_q4({}, {}, {})", r, c, nib);
  auto [b, sh] = q4_position(c);
  uint8_t& byte = data_[r * (view_.row_stride / 2) + b];
  byte = static_cast<uint8_t>((byte & ~(0xF << sh)) | (nib << sh));
}

void QuantMatrix::set_q4_row(int64_t r, const uint8_t* nibs) {
  LP_CHECK(view_.format == WeightFormat::kQ4 && r >= 0 && r < view_.rows, "set_q4_row({})", r);
  const int64_t K = view_.cols;
  uint8_t* row = data_.data() + r * (view_.row_stride / 2);
  uint8_t bad = 0;
  for (int64_t c0 = 0; c0 < view_.row_stride; c0 += 64) {
    for (int64_t j = 0; j < 32; ++j) {
      const uint8_t lo = c0 + j < K ? nibs[c0 + j] : 0, hi = c0 + 32 + j < K ? nibs[c0 + 32 + j] : 0;
      bad |= lo | hi;
      row[c0 / 2 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
  LP_CHECK(bad < 16, "set_q4_row({}): a value above 15", r);
}

uint8_t QuantMatrix::q4_at(int64_t r, int64_t c) const {
  auto [b, sh] = q4_position(c);
  return (data_[r * (view_.row_stride / 2) + b] >> sh) & 0xF;
}

void QuantMatrix::set_group(int64_t r, int64_t g, uint16_t scale_f16, uint8_t zero) {
  const int64_t ng = view_.row_stride / view_.group;
  LP_CHECK(view_.format == WeightFormat::kQ4 && r >= 0 && r < view_.rows && g >= 0 && g < ng && zero < 16,
           "set_group({}, {})", r, g);
  gscale_[r * ng + g] = scale_f16;
  gzero_[r * ng + g] = zero;
}

size_t QuantMatrix::bytes() const {
  return static_cast<size_t>(mat_bytes(view_));
}

QuantActs QuantActsBuffer::prepare(int64_t T, int64_t K, int block) {
  QuantActs a;
  a.block = block;
  a.ld = quant_padded_cols(std::max<int64_t>(K, 1));
  a.n_blocks = (a.ld + block - 1) / block;
  const size_t nxq = static_cast<size_t>(T * a.ld), ns = static_cast<size_t>(T * a.n_blocks);
  if (xq.size() < nxq) xq.resize(nxq);
  if (scale.size() < ns) scale.resize(ns);
  if (lane_sum.size() < ns * 16) lane_sum.resize(ns * 16);
  a.xq = xq.data();
  a.scale = scale.data();
  a.lane_sum = lane_sum.data();
  return a;
}

}  // namespace lp::kernels
