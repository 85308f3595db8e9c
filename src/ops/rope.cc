#include "ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "io/model_config.h"

namespace whittle {

namespace {
double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}
}  // namespace

RopeTable::RopeTable(const RopeConfig& rope, int64_t dim) : dim_(dim), inv_freq_(dim / 2) {
  // transformers computes base ** (arange(0, dim, 2) / dim) in float32; do the same so that the
  // angles agree to the last bit at long positions.
  for (int64_t i = 0; i < dim / 2; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv_freq_[i] = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
  }
  if (rope.type != "yarn") return;

  // YaRN (transformers' _compute_yarn_parameters): blend interpolated and extrapolated
  // frequencies with a linear ramp between the correction dims of beta_fast and beta_slow.
  const double base = rope.theta, factor = rope.factor;
  const double max_pos = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(max_pos / (rotations * 2 * std::numbers::pi))) / (2 * std::log(base));
  };
  double low = std::max(std::floor(correction_dim(rope.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(rope.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < dim / 2; ++i) {
    float extrapolation = inv_freq_[i];
    float interpolation = extrapolation / static_cast<float>(factor);
    double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    float extrapolation_factor = static_cast<float>(1.0 - ramp);
    inv_freq_[i] = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  attention_scaling_ = static_cast<float>(
      rope.mscale != 0.0 && rope.mscale_all_dim != 0.0
          ? yarn_mscale(factor, rope.mscale) / yarn_mscale(factor, rope.mscale_all_dim)
          : yarn_mscale(factor, 1.0));
}

void RopeTable::rotate_interleaved(float* x, int64_t pos) const {
  for (int64_t i = 0; i < dim_ / 2; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq_[i];
    const float c = std::cos(angle) * attention_scaling_, s = std::sin(angle) * attention_scaling_;
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = b * c + a * s;
  }
}

void RopeTable::rotate_half_split(float* x, int64_t pos) const {
  const int64_t half = dim_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq_[i];
    const float c = std::cos(angle) * attention_scaling_, s = std::sin(angle) * attention_scaling_;
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

}  // namespace whittle
