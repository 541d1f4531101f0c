// Element types of tensors in files and memory, and scalar conversions.
// BF16/F16 are stored as raw uint16_t; activations and accumulation are always float.
// Conversions here are the scalar reference; kernels/ has the vectorized ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace lp {

enum class DType : uint8_t { kF32, kF16, kBF16 };

inline size_t dtype_size(DType t) {
  return t == DType::kF32 ? 4 : 2;
}
std::string_view dtype_name(DType t);  // "F32", "F16", "BF16" (safetensors spelling)

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, overflow to inf

// Calls f(std::integral_constant<DType, t>{}) for the run-time dtype t: the one switch from a dtype value
// to code templated on it (per-ISA kernels call `visit_dtype(t, [&](auto d) { return k<d.value>(...); })`).
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kBF16:
      return f(std::integral_constant<DType, DType::kBF16>{});
    case DType::kF16:
      return f(std::integral_constant<DType, DType::kF16>{});
    case DType::kF32:
      break;
  }
  return f(std::integral_constant<DType, DType::kF32>{});
}

// A dtype command-line value: "bf16" / "bfloat16", "f16" / "float16", "f32" / "float32", or "auto" (gives
// `auto_dtype`). Anything else throws lp::Error naming `flag` and the accepted values.
DType parse_dtype_flag(std::string_view value, DType auto_dtype, std::string_view flag);

// Converts n elements of type `t` at `src` to float (src and dst need no alignment).
void to_f32(DType t, const void* src, float* dst, size_t n);
// Converts n floats to type `t` at `dst`.
void from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace lp
