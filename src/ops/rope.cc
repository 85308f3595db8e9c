#include "ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "io/model_config.h"

namespace whittle {

RopeTable::RopeTable(const RopeConfig& rope, int64_t dim) : dim_(dim), inv_freq_(dim / 2) {
  // transformers computes base ** (arange(0, dim, 2) / dim) in float32; do the same so that the
  // angles agree to the last bit at long positions.
  std::vector<float> pos_freq(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    pos_freq[i] = std::pow(static_cast<float>(rope.theta), exponent);
    inv_freq_[i] = 1.0f / pos_freq[i];
  }
  if (rope.type != "yarn") return;

  // YaRN, step for step as transformers' _compute_yarn_parameters (float32 tensors, Python-double
  // scalars): blend interpolated and extrapolated frequencies with a linear ramp over the pair
  // index between the correction dims of beta_fast and beta_slow. The ramp runs over dim/2 pairs
  // but the range is clamped to [0, dim - 1], as in transformers.
  const double base = rope.theta, factor = rope.factor;
  const double max_pos = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(dim) * std::log(max_pos / (rotations * 2 * std::numbers::pi))) /
           (2 * std::log(base));
  };
  double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const float low_f = static_cast<float>(low), range_f = static_cast<float>(high - low);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float extrapolation = inv_freq_[i];
    const float interpolation = 1.0f / (static_cast<float>(factor) * pos_freq[i]);
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / range_f, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float a = interpolation * (1.0f - extrapolation_factor),
                b = extrapolation * extrapolation_factor;
    inv_freq_[i] = a + b;
  }
  attention_scaling_ = static_cast<float>(rope.attention_factor());
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
