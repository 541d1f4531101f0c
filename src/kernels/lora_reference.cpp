#include <utility>
#include <vector>

#include "core/dtype.h"
#include "kernels/lora_internal.h"

namespace lp::kernels::ref {

namespace {
double load(const void* base, DType dt, int64_t i) {
  float f;
  to_f32(dt, static_cast<const char*>(base) + i * static_cast<int64_t>(dtype_size(dt)), &f, 1);
  return f;
}
}  // namespace

void lora_apply(const float* x, int64_t T, int64_t ldx, const int32_t* slot, const float* scale,
                std::span<const LoraUse> more, const LoraWeights& w, float* y, int64_t ldy) {
  const int64_t in = w.in, out = w.out, mr = w.max_rank;
  std::vector<double> v(mr);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<std::pair<int32_t, float>> stack;
    stack.emplace_back(slot[t], scale ? scale[t] : 1.f);
    for (const LoraUse& u : more)
      if (u.row == t) stack.emplace_back(u.slot, u.scale);
    for (auto [s, m] : stack) {
      if (s < 0 || m == 0.f) continue;
      int r = w.ranks[s];
      if (r == 0) continue;
      for (int j = 0; j < r; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < in; ++k) acc += load(w.a, w.dtype, (s * mr + j) * in + k) * x[t * ldx + k];
        v[j] = acc;
      }
      for (int64_t n = 0; n < out; ++n) {
        double acc = 0;
        for (int j = 0; j < r; ++j) acc += load(w.b, w.dtype, (s * mr + j) * out + n) * v[j];
        y[t * ldy + n] = static_cast<float>(y[t * ldy + n] + static_cast<double>(m) * acc);
      }
    }
  }
}

void lora_apply(const float* x, int64_t T, int64_t ldx, const int32_t* slot, const LoraWeights& w, float* y,
                int64_t ldy) {
  lora_apply(x, T, ldx, slot, nullptr, {}, w, y, ldy);
}

}  // namespace lp::kernels::ref
