// The MoE router of GlmMoeDsa / DeepSeek-V3, on its own so that it can be called, observed and
// tested apart from the experts: sigmoid scores of the fp32 router logits; the correction bias
// decides only which experts are chosen; the DeepSeek group limit (n_group > 1: a group's score is
// the sum of its two best biased scores, experts outside the topk_group best groups cannot be
// chosen); the weights applied are the unbiased scores of the chosen experts, renormalised over
// them (norm_topk_prob, + 1e-20) and multiplied by routed_scaling_factor.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/model_config.h"

namespace whittle {

struct Routing {
  int64_t tokens = 0, experts = 0, k = 0;
  std::vector<float> logits;    // [tokens, experts], the router's output
  std::vector<int32_t> chosen;  // [tokens, k], in the order top-k returns them
  std::vector<float> weights;   // [tokens, k], what multiplies each chosen expert's output
};

// Routes `tokens` rows of router logits [tokens, E]; E is the layer's expert count, the size of
// `correction_bias` (config.n_routed_experts, or fewer in a pruned view of the layer).
Routing route(std::vector<float> logits, int64_t tokens, std::span<const float> correction_bias,
              const ModelConfig& config);
// The same in place: `r.logits` holds the router's output; chosen and weights reuse r's memory.
void route(Routing& r, int64_t tokens, std::span<const float> correction_bias,
           const ModelConfig& config);

}  // namespace whittle
