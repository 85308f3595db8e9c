#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/elementwise.h"
#include "util/error.h"

namespace whittle {

Routing route(std::vector<float> logits, int64_t tokens, std::span<const float> correction_bias,
              const ModelConfig& c) {
  Routing r;
  r.logits = std::move(logits);
  route(r, tokens, correction_bias, c);
  return r;
}

void route(Routing& r, int64_t tokens, std::span<const float> correction_bias,
           const ModelConfig& c) {
  // The layer's own expert count (a pruned view of a layer has fewer than the config says).
  const int64_t E = static_cast<int64_t>(correction_bias.size()), K = c.num_experts_per_tok;
  if (static_cast<int64_t>(r.logits.size()) != tokens * E || E % c.n_group != 0 ||
      (c.n_group > 1 && E / c.n_group < 2) || K > E)
    fail("internal: routing {} logits for {} tokens of {} experts in {} groups, top-{}",
         r.logits.size(), tokens, E, c.n_group, K);
  const int64_t per_group = E / c.n_group;
  r.tokens = tokens;
  r.experts = E;
  r.k = K;
  r.chosen.clear();
  r.weights.clear();
  // Reused from call to call: decode routes every MoE layer of every token.
  thread_local std::vector<float> score, choice, group_score;
  thread_local std::vector<int32_t> best, chosen;
  score.resize(static_cast<size_t>(E));
  choice.resize(static_cast<size_t>(E));
  group_score.resize(static_cast<size_t>(c.n_group));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* lg = &r.logits[t * E];
    for (int64_t e = 0; e < E; ++e) {
      score[e] = 1.0f / (1.0f + std::exp(-lg[e]));
      choice[e] = score[e] + correction_bias[e];
    }
    if (c.n_group > 1) {
      for (int64_t g = 0; g < c.n_group; ++g) {
        top_k(&choice[g * per_group], per_group, 2, best);
        group_score[g] = choice[g * per_group + best[0]] + choice[g * per_group + best[1]];
      }
      top_k(group_score.data(), c.n_group, c.topk_group, best);
      for (int64_t e = 0; e < E; ++e)
        if (std::find(best.begin(), best.end(), e / per_group) == best.end())
          choice[e] = -std::numeric_limits<float>::infinity();
    }
    top_k(choice.data(), E, K, chosen);
    double sum = 0.0;
    for (int32_t e : chosen) sum += score[e];
    for (int32_t e : chosen) {
      float weight = score[e];
      if (c.norm_topk_prob) weight = static_cast<float>(weight / (sum + 1e-20));
      r.chosen.push_back(e);
      r.weights.push_back(weight * static_cast<float>(c.routed_scaling_factor));
    }
  }
}

}  // namespace whittle
