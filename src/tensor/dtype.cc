#include "tensor/dtype.h"

#include <array>
#include <bit>
#include <cmath>

#include "util/error.h"

namespace whittle {

namespace {
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
  bool is_float;
};
constexpr std::array<DTypeInfo, 10> kDTypes = {{
    {DType::BF16, "BF16", 2, true},
    {DType::F16, "F16", 2, true},
    {DType::F32, "F32", 4, true},
    {DType::F64, "F64", 8, true},
    {DType::I32, "I32", 4, false},
    {DType::I64, "I64", 8, false},
    {DType::U8, "U8", 1, false},
    {DType::I8, "I8", 1, false},
    {DType::BOOL, "BOOL", 1, false},
    {DType::F8_E4M3, "F8_E4M3", 1, true},
}};

const DTypeInfo& info(DType dtype) {
  for (const auto& i : kDTypes)
    if (i.dtype == dtype) return i;
  fail("internal: unknown dtype {}", static_cast<int>(dtype));
}
}  // namespace

size_t dtype_size(DType dtype) {
  return info(dtype).size;
}
std::string_view dtype_name(DType dtype) {
  return info(dtype).name;
}
bool dtype_is_float(DType dtype) {
  return info(dtype).is_float;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& i : kDTypes)
    if (i.name == name) return i.dtype;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(static_cast<float>(mant), -24);
      return sign ? -f : f;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;  // overflow (incl. rounding up to 65536) -> inf
  if (a < 0x38800000u) {                       // subnormal or zero in f16
    float v = std::bit_cast<float>(a);
    // round to nearest even multiple of 2^-24
    float scaled = std::nearbyint(v * 16777216.0f);
    return sign | static_cast<uint16_t>(scaled);
  }
  uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

float f8e4m3_to_f32(uint8_t b) {
  uint32_t sign = b & 0x80u;
  uint32_t exp = (b >> 3) & 0xf;
  uint32_t mant = b & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
  } else {
    v = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, static_cast<int>(exp) - 7);
  }
  return sign ? -v : v;
}

uint8_t f32_to_f8e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return 0x7f;
  const float a = std::fabs(f);
  uint32_t code;
  if (a < 0x1p-6f) {
    // Subnormals (and zero): steps of 2^-9; a count of 8 is the smallest normal, code 0x08.
    code = static_cast<uint32_t>(std::nearbyint(a * 0x1p9f));
  } else {
    int e;
    std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
    // Three mantissa bits: steps of 2^(e-4). q in [8, 16]; 16 carries into the next binade.
    const uint32_t q = static_cast<uint32_t>(std::nearbyint(std::ldexp(a, 4 - e)));
    code = ((static_cast<uint32_t>(e - 1 + 7)) << 3) + (q - 8);
  }
  return static_cast<uint8_t>(sign | std::min<uint32_t>(code, 0x7e));
}

void convert_to_f32(DType dtype, const std::byte* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::BF16:
      for (size_t i = 0; i < count; ++i)
        dst[i] = bf16_to_f32(load_unaligned<uint16_t>(src + 2 * i));
      return;
    case DType::F16:
      for (size_t i = 0; i < count; ++i) dst[i] = f16_to_f32(load_unaligned<uint16_t>(src + 2 * i));
      return;
    case DType::F32:
      // memcpy with a null pointer is undefined even for 0 bytes, and an empty std::vector's data()
      // may be null (found by fuzz/safetensors_fuzz.cc on a [0, 4] tensor).
      if (count > 0) std::memcpy(dst, src, count * 4);
      return;
    case DType::F64:
      for (size_t i = 0; i < count; ++i)
        dst[i] = static_cast<float>(load_unaligned<double>(src + 8 * i));
      return;
    case DType::I32:
      for (size_t i = 0; i < count; ++i)
        dst[i] = static_cast<float>(load_unaligned<int32_t>(src + 4 * i));
      return;
    case DType::I64:
      for (size_t i = 0; i < count; ++i)
        dst[i] = static_cast<float>(load_unaligned<int64_t>(src + 8 * i));
      return;
    case DType::U8:
      for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(static_cast<uint8_t>(src[i]));
      return;
    case DType::I8:
      for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[i]));
      return;
    case DType::F8_E4M3:
      for (size_t i = 0; i < count; ++i) dst[i] = f8e4m3_to_f32(static_cast<uint8_t>(src[i]));
      return;
    case DType::BOOL:
      break;
  }
  fail("cannot convert {} to F32", dtype_name(dtype));
}

}  // namespace whittle
