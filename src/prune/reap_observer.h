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
#include <functional>
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

// Picks the experts a layer keeps (ascending original indices) from its statistics.
using KeepExperts =
    std::function<std::vector<int32_t>(int64_t layer, const std::vector<ExpertStats>&)>;

// Runs the calibration samples through the model layer-major — every sample through layer L, then
// L + 1, with only layer L's weights acquired from the source — and returns the REAP statistics of
// every MoE layer. Samples are grouped `batch` at a time into one Batch; a layer's KV cache is
// dropped as soon as the layer is done, so memory is the samples' hidden states plus one layer's
// cache and weights.
//
// Without `prune_as_you_go`, each layer sees the unpruned model's hidden states (the reference's
// default and the paper's). With it (llm-compressor's sequential pipeline), a MoE layer is observed
// on the outputs of the layers before it already pruned: after layer L's statistics are gathered,
// `prune_as_you_go(L, stats)` picks its survivors and layer L runs again with only those experts
// (router rows and correction bias sliced, as the pruned checkpoint will have them) to produce
// layer L + 1's input. That costs a second pass over each MoE layer.
std::vector<std::vector<ExpertStats>> collect_reap_stats(
    const GlmMoeDsa& model, std::span<const std::vector<int32_t>> samples, int64_t batch,
    Progress* progress = nullptr, const KeepExperts& prune_as_you_go = nullptr);

// The layer as the pruned checkpoint has it: only the `kept` experts (ascending original indices),
// renumbered, with the router's rows and the correction bias sliced to match. Views of `w`'s
// expert weights; the sliced router is a small fp32 copy.
MoeWeights keep_experts(const MoeWeights& w, std::span<const int32_t> kept);

}  // namespace whittle
