// FakeQuant: one Linear's weight with AutoRound's trainable quantization parameters (spec
// autoround_gptq.md §1.5, autoround_vs_code.md D1-D4, D10, D11, §3.2): a rounding offset V per
// weight (init 0) and clip factors α (max side) and β (min side) per group (init 1, kept in
// [0, 1]); the group extremes lo/hi come from the original weight.
//   W~ = s·clamp(round(W/s + V), qmin, qmax),  s = int_quant.h's full_range_scale(lo, hi, α, β)
// The gradient treats round as the identity (straight-through) and passes only where round(r)
// lies strictly inside (qmin, qmax), as torch.clamp's backward does:
//   ∂W~/∂V = s·m,   ∂W~/∂s = q − m·W/s   (m = 1 strictly inside the grid)
//   ∂L/∂s of a group summed, then rounded to fp16 (the scale is an fp16 tensor in auto-round's
//   graph, so autograd casts its gradient: tiny values flush to 0)
//   s = sign·max(a, b)/2^(bits-1), a = −lo·β, b = hi·α: the larger side gets the gradient, both get
//   half at a tie (torch.max), none when the ±fp16(1e-5) threshold holds s.
// Checked against auto-round's own quant_tensor_sym under torch autograd
// (tests/golden/fake_quant).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quant/int_quant.h"

namespace whittle {

class ThreadPool;

class FakeQuant {
 public:
  FakeQuant(std::string module, std::vector<float> w, int64_t rows, int64_t cols,
            const QuantSpec& spec);

  int64_t rows() const { return N_; }
  int64_t cols() const { return K_; }
  int64_t groups() const { return groups_; }
  const std::string& module() const { return module_; }
  std::vector<float>& v() { return v_; }          // [rows, cols]
  std::vector<float>& alpha() { return alpha_; }  // [rows, groups]
  std::vector<float>& beta() { return beta_; }    // [rows, groups]

  // W~ [rows, cols] with the current parameters (α and β clamped to [0, 1] first); keeps the codes
  // and scales that gradients() needs.
  void forward(float* out, ThreadPool* pool = nullptr);
  // ∂L/∂V, ∂L/∂α, ∂L/∂β from ∂L/∂W~ at the last forward().
  void gradients(const float* dw, float* dv, float* dalpha, float* dbeta,
                 ThreadPool* pool = nullptr) const;
  // SignSGD at the last forward(): p -= lr·sign(∂L/∂p) (sign(0) = 0), α and β clamped to [0, 1].
  void sign_step(const float* dw, float lr, float minmax_lr, ThreadPool* pool = nullptr);
  // The codes and fp16 scales of the current parameters.
  QuantizedLinear quantized() const;

 private:
  struct Group {
    float s, dsda, dsdb;  // scale, ∂s/∂a, ∂s/∂b
  };
  Group group(size_t gi) const;
  // Calls fn(row, group index, k0, k1) for every group, rows split over the pool.
  template <typename Fn>
  void for_each_group(ThreadPool* pool, Fn&& fn) const;

  std::string module_;
  int64_t N_, K_, G_, groups_;
  QuantSpec spec_;
  std::vector<float> w_, lo_, hi_, v_, alpha_, beta_;
  std::vector<int8_t> q_;                   // codes at the last forward
  std::vector<uint8_t> in_range_;           // round(r) inside the grid at the last forward
  std::vector<float> dv_, dalpha_, dbeta_;  // sign_step's scratch
};

}  // namespace whittle
