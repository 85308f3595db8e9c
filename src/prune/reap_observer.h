// REAP calibration statistics (spec reap.md §1.2, §2.3, corrected by reap_vs_code.md): for every
// MoE layer and routed expert, over the calibration tokens routed to it, in float64 — the
// routed-token count, Σ gate·‖expert output‖₂, Σ‖output‖₂, Σ gate and max ‖output‖₂. The gate is
// the weight actually multiplied into the expert's output (the model's true routing: bias-corrected
// and group-limited selection, renormalised unbiased sigmoid × routed_scaling_factor, as
// transformers' GlmMoeDsaMoE and llm-compressor use it); the output is the expert MLP's output
// before that multiply, in float32. Only routed experts run on their rows: the observer sees what
// the forward pass computes anyway.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/model_config.h"
#include "model/glm_moe_dsa.h"
#include "model/router.h"
#include "prune/expert_selection.h"

namespace whittle {

class Progress;

class ReapObserver : public ForwardObserver {
 public:
  explicit ReapObserver(const ModelConfig& config);

  void router(int64_t layer, const Routing& routing) override;
  void expert(int64_t layer, int64_t expert, std::span<const int64_t> rows, const float* input,
              const float* output) override;

  // Per decoder layer (empty for dense layers), per routed expert.
  const std::vector<std::vector<ExpertStats>>& stats() const { return stats_; }
  int64_t tokens_observed(int64_t layer) const { return tokens_[layer]; }

 private:
  int64_t hidden_;
  std::vector<std::vector<ExpertStats>> stats_;
  std::vector<int64_t> tokens_;
  Routing last_;  // chosen experts and weights of the batch whose experts are being reported
  int64_t last_layer_ = -1;
};

// Runs the calibration samples through the model layer-major — every sample through layer L, then
// L + 1, with only layer L's weights acquired from the source — and returns the REAP statistics of
// every MoE layer. The model is not pruned as it goes: each layer sees the unpruned model's
// hidden states (the reference's default). Samples are grouped `batch` at a time into one Batch;
// a layer's KV cache is dropped as soon as the layer is done, so memory is the samples' hidden
// states plus one layer's cache and weights.
std::vector<std::vector<ExpertStats>> collect_reap_stats(
    const GlmMoeDsa& model, std::span<const std::vector<int32_t>> samples, int64_t batch,
    Progress* progress = nullptr);

}  // namespace whittle
