// Tests of the dtype conversions against torch (tests/golden/dtype/, from
// tools/oracle/make_io_golden.py): every float16 and float8_e4m3fn bit pattern to float32, and
// float32 to bfloat16/float16 rounding on edge cases (ties, subnormals, overflow) and random bit
// patterns. NaN outputs are compared as "is NaN" only: torch's own NaN bits differ between its
// scalar and vectorized paths (0x7fc0 vs 0xffff for bfloat16), so no bit pattern is the reference.
#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>

#include "io/npy.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" / "dtype";

bool same_value(float got, float want) {
  if (std::isnan(want)) return std::isnan(got);
  return std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(want);  // -0.0 is not 0.0
}

TEST(DtypeVsTorch, EveryF16PatternToF32) {
  std::vector<float> want = read_npy_f32(kGolden / "f16_to_f32.npy");
  ASSERT_EQ(want.size(), 65536u);
  int bad = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    float got = f16_to_f32(static_cast<uint16_t>(bits));
    if (!same_value(got, want[bits]) && ++bad <= 10)
      ADD_FAILURE() << "f16 0x" << std::hex << bits << ": " << got << " != torch " << want[bits];
  }
  EXPECT_EQ(bad, 0);
}

// Encoding to E4M3 is checked against the (torch-checked) decoder: the code chosen is the
// nearest of all 254 finite values, ties to the even code, saturating at ±448.
TEST(Dtype, F32ToF8E4M3IsTheNearestCode) {
  std::vector<float> values;
  for (int b = 0; b < 256; ++b)
    if ((b & 0x7f) != 0x7f) values.push_back(f8e4m3_to_f32(static_cast<uint8_t>(b)));
  auto check = [&](float f) {
    const uint8_t got = f32_to_f8e4m3(f);
    const float v = f8e4m3_to_f32(got);
    const float clamped = std::clamp(f, -448.0f, 448.0f);
    for (int b = 0; b < 256; ++b) {
      if ((b & 0x7f) == 0x7f) continue;
      const float other = f8e4m3_to_f32(static_cast<uint8_t>(b));
      const float d_got = std::fabs(v - clamped), d_other = std::fabs(other - clamped);
      ASSERT_LE(d_got, d_other) << f << " -> 0x" << std::hex << int{got} << ", nearer 0x" << b;
      if (d_got == d_other && other != v) {
        ASSERT_EQ(got & 1, 0) << f << ": a tie goes to even";
      }
    }
    if (f != 0.0f) {
      ASSERT_EQ(std::signbit(v), std::signbit(f)) << f;
    }
  };
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    check(values[i]);
    check((values[i] + values[i + 1]) / 2);  // midpoints (ties) between neighbouring codes
  }
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> exponent(-12.0f, 10.0f);
  for (int i = 0; i < 20000; ++i) check((i % 2 ? -1.0f : 1.0f) * std::exp2(exponent(gen)));
  check(1e9f);
  check(-500.0f);
  EXPECT_EQ(f32_to_f8e4m3(std::nanf("")) & 0x7f, 0x7f);
}

TEST(DtypeVsTorch, EveryF8E4M3PatternToF32) {
  std::vector<float> want = read_npy_f32(kGolden / "f8e4m3_to_f32.npy");
  ASSERT_EQ(want.size(), 256u);
  std::vector<float> converted(256);
  std::vector<std::byte> all(256);
  for (int b = 0; b < 256; ++b) all[b] = static_cast<std::byte>(b);
  convert_to_f32(DType::F8_E4M3, all.data(), 256, converted.data());
  for (int b = 0; b < 256; ++b) {
    EXPECT_TRUE(same_value(f8e4m3_to_f32(static_cast<uint8_t>(b)), want[b]))
        << "fp8 0x" << std::hex << b;
    EXPECT_TRUE(same_value(converted[b], want[b])) << "convert_to_f32, fp8 0x" << std::hex << b;
  }
}

TEST(DtypeVsTorch, F32RoundsToBf16AndF16AsTorchDoes) {
  std::vector<int64_t> shape;
  std::vector<int32_t> table = read_npy_i32(kGolden / "f32_rounding.npy", &shape);
  ASSERT_EQ(shape.size(), 2u);
  ASSERT_EQ(shape[1], 3);
  ASSERT_GT(shape[0], 3000);
  int bad_bf16 = 0, bad_f16 = 0;
  for (int64_t r = 0; r < shape[0]; ++r) {
    const uint32_t in = static_cast<uint32_t>(table[3 * r]);
    const float x = std::bit_cast<float>(in);
    const uint16_t want_bf16 = static_cast<uint16_t>(table[3 * r + 1]);
    const uint16_t want_f16 = static_cast<uint16_t>(table[3 * r + 2]);
    const uint16_t got_bf16 = f32_to_bf16(x), got_f16 = f32_to_f16(x);
    const bool bf16_ok = std::isnan(x) ? std::isnan(bf16_to_f32(got_bf16)) : got_bf16 == want_bf16;
    const bool f16_ok = std::isnan(x) ? std::isnan(f16_to_f32(got_f16)) : got_f16 == want_f16;
    if (!bf16_ok && ++bad_bf16 <= 10)
      ADD_FAILURE() << std::hex << "f32 0x" << in << " -> bf16 0x" << got_bf16 << ", torch 0x"
                    << want_bf16;
    if (!f16_ok && ++bad_f16 <= 10)
      ADD_FAILURE() << std::hex << "f32 0x" << in << " -> f16 0x" << got_f16 << ", torch 0x"
                    << want_f16;
    // bf16 -> f32 is exact: the rounded value must read back as torch's bf16 value.
    if (!std::isnan(x)) {
      EXPECT_EQ(std::bit_cast<uint32_t>(bf16_to_f32(got_bf16)), uint32_t{want_bf16} << 16);
    }
  }
  EXPECT_EQ(bad_bf16, 0);
  EXPECT_EQ(bad_f16, 0);
}

TEST(Dtype, NamesAndSizesRoundTrip) {
  for (DType d : {DType::BF16, DType::F16, DType::F32, DType::F64, DType::I32, DType::I64,
                  DType::U8, DType::I8, DType::BOOL, DType::F8_E4M3}) {
    EXPECT_EQ(parse_dtype(dtype_name(d)), d);
    EXPECT_GT(dtype_size(d), 0u);
  }
  EXPECT_FALSE(parse_dtype("F8_E5M2_"));
  EXPECT_FALSE(parse_dtype("f32"));
}

}  // namespace
}  // namespace whittle
