// AutoRound (SignRound) for one decoder layer (spec autoround_gptq.md §0-§1.6, corrected by
// autoround_vs_code.md): every planned Linear W of the layer gets a rounding offset V per weight
// and clip factors α (max side), β (min side) per group; the layer's output with the fake-quantized
// weights W~(V, α, β) (int_quant.h's formula, round with a straight-through gradient) on the
// already-quantized chain's inputs is fit to the full-precision layer's output on full-precision
// inputs by SignSGD on the mean squared error (×1000), lr = 1/iters decaying linearly to 0 (step i
// uses lr·(1 − i/iters)), 8 samples per step drawn by a seeded shuffled cycle, α and β clamped
// to [0, 1] before every forward, the parameters of the lowest mini-batch loss kept (measured
// before each step; iteration 0 is RTN). Gradients come from the hand-written backward of the
// whole layer (quant/block_grad.h), in float32.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"
#include "model/weights.h"
#include "quant/int_quant.h"
#include "quant/quant_plan.h"
#include "quant/sample_store.h"
#include "util/thread_pool.h"

namespace whittle {

class Progress;

// The step size of SignSGD step `it` (0-based) of `iters`: lr·(1 − it/iters), torch's LinearLR from
// 1 to 0 stepped after every step, so the last step uses lr/iters, not 0.
inline float autoround_step_lr(double lr, int64_t it, int64_t iters) {
  return static_cast<float>(lr * (1.0 - static_cast<double>(it) / static_cast<double>(iters)));
}

struct AutoRoundOptions {
  int64_t iters = 200;
  double lr = 0.0;         // 0: 1 / iters (auto-round's default)
  double minmax_lr = 0.0;  // 0: lr
  int64_t batch = 8;       // samples per step
  uint64_t seed = 42;
};

struct LayerTuning {
  double rtn_loss = 0.0;   // mini-batch loss of iteration 0 (V = 0, α = β = 1)
  double best_loss = 0.0;  // the lowest mini-batch loss, whose parameters are kept
  int64_t best_iter = 0;
  double full_rtn_loss = 0.0, full_best_loss = 0.0;  // over every sample, before and after
  double seconds = 0.0;
};

// Tunes the Linears of `plan` marked quantize, of decoder layer `layer` with weights `w`, and
// returns their codes and scales (in plan order). Sample i of `inputs` and of `targets` is its
// [T, hidden] layer input (the quantized chain) and full-precision output.
std::vector<QuantizedLinear> autoround_layer(const ModelConfig& config, int64_t layer,
                                             const LayerWeights& w,
                                             const std::vector<LinearPlan>& plan,
                                             const SampleStore& inputs, const SampleStore& targets,
                                             const QuantSpec& spec, const AutoRoundOptions& opts,
                                             ThreadPool& pool, Progress* progress,
                                             LayerTuning* stats);

}  // namespace whittle
