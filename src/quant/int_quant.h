// Integer weight quantization, full-range symmetric (auto-round's default `int_sym`, spec
// autoround_gptq.md §0.2, §1.5, corrected by autoround_vs_code.md D1, D2, D4): per group of
// `group_size` inputs of one output row,
//   lo = min(min W_g, 0), hi = max(max W_g, 0), a = -lo·β, b = hi·α        (α, β clip factors)
//   s  = fp16((a > b ? a : -b) / 2^(bits-1))   ties go negative; the larger extreme maps to qmin
//   s  = s < 0 ? min(s, -fp16(1e-5)) : max(s, fp16(1e-5))                 (±0 become +1.0014e-5)
//   q  = clamp(round_half_even(W / s + V), qmin, qmax),  W~ = s·q
// in float32 arithmetic on exactly representable operands (bf16 weights, fp16 scales), as torch
// computes it. About half of all scales are negative; nothing may take |s|. s·q is exact in
// float32 (an 11-bit scale times a code of at most 4 bits), so a QuantizedLinear dequantizes
// exactly to what the GPTQ reader (tensor/weight.h) computes from its packed form.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace whittle {

struct QuantSpec {
  int bits = 4;
  int64_t group_size = 128;  // inputs per group; -1: the whole row is one group

  int qmin() const { return -(1 << (bits - 1)); }
  int qmax() const { return (1 << (bits - 1)) - 1; }
  // Inputs per group of a row of `cols` inputs (a row shorter than a group is one group).
  int64_t group(int64_t cols) const {
    return group_size < 0 || group_size > cols ? cols : group_size;
  }
  int64_t groups(int64_t cols) const { return (cols + group(cols) - 1) / group(cols); }
};

// fp16 (bits) of one group's scale from the group's extremes `lo` <= 0 <= `hi` (min(min W, 0) and
// max(max W, 0)) and clip factors alpha (on hi) and beta (on lo) in [0, 1].
uint16_t full_range_scale(float lo, float hi, float alpha, float beta, int bits);

// clamp(round_half_even(w / scale + v), qmin, qmax).
int quantize_value(float w, float scale, float v, const QuantSpec& spec);

// One Linear's integer codes and fp16 scales: W~[n, k] = scales[n, k / group] · q[n, k].
struct QuantizedLinear {
  std::string module;  // the Hugging Face module name
  int64_t rows = 0, cols = 0;
  QuantSpec spec;
  std::vector<int8_t> q;         // [rows, cols], each in [qmin, qmax]
  std::vector<uint16_t> scales;  // fp16 bits [rows, groups], any sign

  int64_t groups() const { return spec.groups(cols); }
  float scale(int64_t row, int64_t group) const;
  // Rows [r0, r1) of W~ into dst [(r1 - r0), cols]; exact.
  void dequantize_rows(int64_t r0, int64_t r1, float* dst) const;
  std::vector<float> dequantize() const;
};

// Round to nearest with the full-range symmetric scales (α = β = 1, V = 0): auto-round's
// `iters=0, disable_opt_rtn=True`. `w` is row-major [rows, cols] float32.
QuantizedLinear quantize_rtn(std::string module, const float* w, int64_t rows, int64_t cols,
                             const QuantSpec& spec);

// min(min x, 0) and max(max x, 0) of n values.
void group_extremes(const float* x, int64_t n, float& lo, float& hi);

}  // namespace whittle
