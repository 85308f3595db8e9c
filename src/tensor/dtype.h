// DType: the element types found in safetensors checkpoints, and conversions of each to float32.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace whittle {

enum class DType { BF16, F16, F32, F64, I32, I64, U8, I8, BOOL, F8_E4M3 };

// Size of one element in bytes.
size_t dtype_size(DType dtype);
// The safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType dtype);
// Parses the safetensors spelling; nullopt for unknown names.
std::optional<DType> parse_dtype(std::string_view name);
bool dtype_is_float(DType dtype);

// A value of type T read from bytes at any alignment (file data is little-endian, as x86 is).
template <typename T>
T load_unaligned(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

inline float bf16_to_f32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float round_to_bf16(float f) {
  return bf16_to_f32(f32_to_bf16(f));
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float f);
// OCP FP8 E4M3 ("e4m3fn": no infinities, 0x7f/0xff are NaN, max 448).
float f8e4m3_to_f32(uint8_t bits);
// The nearest E4M3 value (ties to the even code), saturating at ±448; NaN stays NaN.
uint8_t f32_to_f8e4m3(float f);

// Converts `count` elements of `dtype` at `src` (unaligned bytes allowed) to float32.
// Integer types convert by value. Throws Error for BOOL.
void convert_to_f32(DType dtype, const std::byte* src, size_t count, float* dst);

}  // namespace whittle
