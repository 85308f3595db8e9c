#include "quant/int_quant.h"

#include <algorithm>
#include <cmath>

#include "tensor/dtype.h"
#include "util/error.h"

namespace whittle {

uint16_t full_range_scale(float lo, float hi, float alpha, float beta, int bits) {
  const float a = -lo * beta, b = hi * alpha;
  const float levels = static_cast<float>(1 << (bits - 1));
  const float s = f16_to_f32(f32_to_f16((a > b ? a : -b) / levels));
  // The threshold is applied to the fp16 scale, in fp16: fp16(1e-5) is the subnormal 1.0014e-5.
  static const float kThresh = f16_to_f32(f32_to_f16(1e-5f));
  return f32_to_f16(s < 0.0f ? std::min(s, -kThresh) : std::max(s, kThresh));
}

int quantize_value(float w, float scale, float v, const QuantSpec& spec) {
  const float r = std::nearbyint(w / scale + v);  // the default rounding mode: half to even
  return static_cast<int>(
      std::clamp(r, static_cast<float>(spec.qmin()), static_cast<float>(spec.qmax())));
}

void group_extremes(const float* x, int64_t n, float& lo, float& hi) {
  lo = 0.0f;
  hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
}

float QuantizedLinear::scale(int64_t row, int64_t group) const {
  return f16_to_f32(scales[static_cast<size_t>(row * groups() + group)]);
}

void QuantizedLinear::dequantize_rows(int64_t r0, int64_t r1, float* dst) const {
  const int64_t G = spec.group(cols), ng = groups();
  for (int64_t n = r0; n < r1; ++n)
    for (int64_t g = 0; g < ng; ++g) {
      const float s = scale(n, g);
      for (int64_t k = g * G; k < std::min(cols, (g + 1) * G); ++k)
        dst[(n - r0) * cols + k] = s * static_cast<float>(q[static_cast<size_t>(n * cols + k)]);
    }
}

std::vector<float> QuantizedLinear::dequantize() const {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  dequantize_rows(0, rows, w.data());
  return w;
}

QuantizedLinear quantize_rtn(std::string module, const float* w, int64_t rows, int64_t cols,
                             const QuantSpec& spec) {
  if (spec.bits < 2 || spec.bits > 8) fail("{}: {} bits are not supported", module, spec.bits);
  QuantizedLinear out{std::move(module), rows, cols, spec, {}, {}};
  const int64_t G = spec.group(cols), ng = out.groups();
  out.q.resize(static_cast<size_t>(rows * cols));
  out.scales.resize(static_cast<size_t>(rows * ng));
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t k0 = g * G, k1 = std::min(cols, k0 + G);
      float lo, hi;
      group_extremes(w + n * cols + k0, k1 - k0, lo, hi);
      const uint16_t s16 = full_range_scale(lo, hi, 1.0f, 1.0f, spec.bits);
      out.scales[static_cast<size_t>(n * ng + g)] = s16;
      const float s = f16_to_f32(s16);
      for (int64_t k = k0; k < k1; ++k)
        out.q[static_cast<size_t>(n * cols + k)] =
            static_cast<int8_t>(quantize_value(w[n * cols + k], s, 0.0f, spec));
    }
  return out;
}

}  // namespace whittle
