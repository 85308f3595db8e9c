#include "quant/fake_quant.h"

#include <algorithm>
#include <cmath>

#include "tensor/dtype.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace whittle {

FakeQuant::FakeQuant(std::string module, std::vector<float> w, int64_t rows, int64_t cols,
                     const QuantSpec& spec)
    : module_(std::move(module)),
      N_(rows),
      K_(cols),
      G_(spec.group(cols)),
      groups_(spec.groups(cols)),
      spec_(spec),
      w_(std::move(w)) {
  if (static_cast<int64_t>(w_.size()) != N_ * K_)
    fail("internal: {}: {} weights for [{}, {}]", module_, w_.size(), N_, K_);
  lo_.resize(static_cast<size_t>(N_ * groups_));
  hi_.resize(lo_.size());
  for (int64_t n = 0; n < N_; ++n)
    for (int64_t g = 0; g < groups_; ++g)
      group_extremes(&w_[n * K_ + g * G_], std::min(G_, K_ - g * G_), lo_[n * groups_ + g],
                     hi_[n * groups_ + g]);
  v_.assign(w_.size(), 0.0f);
  alpha_.assign(lo_.size(), 1.0f);
  beta_.assign(lo_.size(), 1.0f);
  q_.resize(w_.size());
  in_range_.resize(w_.size());
}

template <typename Fn>
void FakeQuant::for_each_group(ThreadPool* pool, Fn&& fn) const {
  auto rows = [&](size_t r0, size_t r1) {
    for (size_t n = r0; n < r1; ++n)
      for (int64_t g = 0; g < groups_; ++g)
        fn(static_cast<int64_t>(n), n * groups_ + g, g * G_, std::min(K_, (g + 1) * G_));
  };
  if (pool)
    pool->parallel_for(static_cast<size_t>(N_), rows);
  else
    rows(0, static_cast<size_t>(N_));
}

FakeQuant::Group FakeQuant::group(size_t gi) const {
  const float s = f16_to_f32(full_range_scale(lo_[gi], hi_[gi], alpha_[gi], beta_[gi], spec_.bits));
  const float a = -lo_[gi] * beta_[gi], b = hi_[gi] * alpha_[gi];
  const float levels = static_cast<float>(1 << (spec_.bits - 1));
  if (f16_to_f32(f32_to_f16((a > b ? a : -b) / levels)) != s) return {s, 0.0f, 0.0f};
  const float sign = a > b ? 1.0f : -1.0f;
  const float share_a = a > b ? 1.0f : (a == b ? 0.5f : 0.0f);
  return {s, sign * share_a / levels, sign * (1.0f - share_a) / levels};
}

void FakeQuant::forward(float* out, ThreadPool* pool) {
  for (float& x : alpha_) x = std::clamp(x, 0.0f, 1.0f);
  for (float& x : beta_) x = std::clamp(x, 0.0f, 1.0f);
  for_each_group(pool, [&](int64_t n, size_t gi, int64_t k0, int64_t k1) {
    const float s = group(gi).s;
    for (int64_t k = k0; k < k1; ++k) {
      const size_t i = static_cast<size_t>(n * K_ + k);
      const float r = std::nearbyint(w_[i] / s + v_[i]);
      // torch.clamp passes the gradient only strictly inside its bounds (measured with torch
      // 2.15: at exactly qmin or qmax it is 0; autoround_vs_code.md says both ends pass).
      in_range_[i] = r > spec_.qmin() && r < spec_.qmax();
      const float q =
          std::clamp(r, static_cast<float>(spec_.qmin()), static_cast<float>(spec_.qmax()));
      q_[i] = static_cast<int8_t>(q);
      out[i] = s * q;
    }
  });
}

void FakeQuant::gradients(const float* dw, float* dv, float* dalpha, float* dbeta,
                          ThreadPool* pool) const {
  for_each_group(pool, [&](int64_t n, size_t gi, int64_t k0, int64_t k1) {
    const Group gr = group(gi);
    // ∂L/∂s has two paths, W~ = s·q directly and q through W/s; torch casts each one's group sum to
    // the scale's fp16 and adds them in fp16. They nearly cancel (q ≈ W/s), so the roundings
    // decide the low bits of the result: emulated here, in the same order.
    float direct = 0.0f, through_q = 0.0f;
    for (int64_t k = k0; k < k1; ++k) {
      const size_t i = static_cast<size_t>(n * K_ + k);
      const float m = in_range_[i] ? 1.0f : 0.0f;
      const float dq = dw[i] * gr.s * m;
      direct += dw[i] * static_cast<float>(q_[i]);
      through_q += -dq * w_[i] / (gr.s * gr.s);
      dv[i] = dq;
    }
    const float ds =
        f16_to_f32(f32_to_f16(f16_to_f32(f32_to_f16(direct)) + f16_to_f32(f32_to_f16(through_q))));
    dbeta[gi] = ds * gr.dsda * -lo_[gi];
    dalpha[gi] = ds * gr.dsdb * hi_[gi];
  });
}

void FakeQuant::sign_step(const float* dw, float lr, float minmax_lr, ThreadPool* pool) {
  dv_.resize(v_.size());
  dalpha_.resize(alpha_.size());
  dbeta_.resize(beta_.size());
  gradients(dw, dv_.data(), dalpha_.data(), dbeta_.data(), pool);
  auto sign = [](float x) { return static_cast<float>((x > 0) - (x < 0)); };
  for (size_t i = 0; i < v_.size(); ++i) v_[i] -= lr * sign(dv_[i]);
  for (size_t i = 0; i < alpha_.size(); ++i) {
    alpha_[i] = std::clamp(alpha_[i] - minmax_lr * sign(dalpha_[i]), 0.0f, 1.0f);
    beta_[i] = std::clamp(beta_[i] - minmax_lr * sign(dbeta_[i]), 0.0f, 1.0f);
  }
}

QuantizedLinear FakeQuant::quantized() const {
  QuantizedLinear out{module_, N_, K_, spec_, {}, {}};
  out.q.resize(w_.size());
  out.scales.resize(lo_.size());
  for_each_group(nullptr, [&](int64_t n, size_t gi, int64_t k0, int64_t k1) {
    const float a = std::clamp(alpha_[gi], 0.0f, 1.0f), b = std::clamp(beta_[gi], 0.0f, 1.0f);
    const uint16_t s16 = full_range_scale(lo_[gi], hi_[gi], a, b, spec_.bits);
    out.scales[gi] = s16;
    for (int64_t k = k0; k < k1; ++k) {
      const size_t i = static_cast<size_t>(n * K_ + k);
      out.q[i] = static_cast<int8_t>(quantize_value(w_[i], f16_to_f32(s16), v_[i], spec_));
    }
  });
  return out;
}

}  // namespace whittle
