#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "core/check.h"

namespace lp {
namespace {

TEST(DType, ParseDtypeFlag) {
  EXPECT_EQ(parse_dtype_flag("bf16", DType::kF32, "--x"), DType::kBF16);
  EXPECT_EQ(parse_dtype_flag("bfloat16", DType::kF32, "--x"), DType::kBF16);
  EXPECT_EQ(parse_dtype_flag("f16", DType::kF32, "--x"), DType::kF16);
  EXPECT_EQ(parse_dtype_flag("float32", DType::kBF16, "--x"), DType::kF32);
  EXPECT_EQ(parse_dtype_flag("auto", DType::kF16, "--x"), DType::kF16);
  try {
    parse_dtype_flag("fp8", DType::kBF16, "--kv-cache-dtype");
    ADD_FAILURE() << "fp8 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown --kv-cache-dtype 'fp8'"), std::string::npos) << e.what();
  }
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly half way between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (float f : {0.0f, -2.5f, 3.140625f, 1e30f, -1e-30f})
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(f)), bf16_to_f32(f32_to_bf16(bf16_to_f32(f32_to_bf16(f)))));
}

TEST(DType, F16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(70000.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie -> even
}

}  // namespace
}  // namespace lp
