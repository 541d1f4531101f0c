#include "core/dtype.h"

#include <cmath>

#include "core/check.h"

namespace lp {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

DType parse_dtype_flag(std::string_view value, DType auto_dtype, std::string_view flag) {
  if (value == "bf16" || value == "bfloat16") return DType::kBF16;
  if (value == "f16" || value == "float16") return DType::kF16;
  if (value == "f32" || value == "float32") return DType::kF32;
  if (value == "auto") return auto_dtype;
  fail("unknown {} '{}' (bf16, f16, f32, auto = the base model's torch_dtype)", flag, value);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        man <<= 1;
        ++e;
      } while (!(man & 0x400u));
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520 -> inf
  if (abs < 0x38800000u) {                        // below smallest normal half: subnormal or zero
    float a;
    std::memcpy(&a, &abs, 4);
    // Subnormal half has spacing 2^-24; nearbyint rounds half to even in the default mode.
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | static_cast<uint16_t>((mant_round - 0x38000000u) >> 13);
}

namespace {
// Element i of a uint16 buffer with no alignment promise (tensors in a safetensors file need not be
// aligned); the memcpy compiles to a plain load.
inline uint16_t load_u16(const void* p, size_t i) {
  uint16_t v;
  std::memcpy(&v, static_cast<const char*>(p) + 2 * i, 2);
  return v;
}
inline void store_u16(void* p, size_t i, uint16_t v) {
  std::memcpy(static_cast<char*>(p) + 2 * i, &v, 2);
}
}  // namespace

void to_f32(DType t, const void* src, float* dst, size_t n) {
  if (n == 0) return;  // src/dst may be null for empty tensors
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src, i));
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src, i));
      return;
  }
}

void from_f32(DType t, const float* src, void* dst, size_t n) {
  if (n == 0) return;
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) store_u16(dst, i, f32_to_bf16(src[i]));
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) store_u16(dst, i, f32_to_f16(src[i]));
      return;
  }
}

}  // namespace lp
