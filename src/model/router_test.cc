// The router on its own, on hand-made logits whose answers can be worked out by hand: the
// correction bias chooses but does not weigh, the group limit, renormalisation and the routed
// scaling factor. (The golden tests check it against transformers on real layers.)
#include "model/router.h"

#include <gtest/gtest.h>

#include <cmath>

namespace whittle {
namespace {

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

ModelConfig router_config(int64_t experts, int64_t k, int64_t groups, int64_t topk_group) {
  ModelConfig c;
  c.n_routed_experts = experts;
  c.num_experts_per_tok = k;
  c.n_group = groups;
  c.topk_group = topk_group;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  return c;
}

TEST(Router, BiasChoosesButTheUnbiasedScoresWeigh) {
  const ModelConfig c = router_config(4, 2, 1, 1);
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, -1.0f};
  // Without bias: experts 0 and 1. A bias of +3 on expert 3 puts it in place of expert 1.
  Routing plain = route(logits, 1, std::vector<float>{0, 0, 0, 0}, c);
  EXPECT_EQ(plain.chosen, (std::vector<int32_t>{0, 1}));
  Routing biased = route(logits, 1, std::vector<float>{0, 0, 0, 3}, c);
  EXPECT_EQ(biased.chosen, (std::vector<int32_t>{3, 0}));
  const float s0 = sigmoid(2.0f), s3 = sigmoid(-1.0f);
  EXPECT_FLOAT_EQ(biased.weights[0], s3 / (s0 + s3) * 2.5f);
  EXPECT_FLOAT_EQ(biased.weights[1], s0 / (s0 + s3) * 2.5f);
  EXPECT_EQ(biased.logits, logits);
}

TEST(Router, GroupLimitKeepsOnlyTheBestGroups) {
  // 3 groups of 2; a group scores the sum of its two biased scores; keep 1 group.
  const ModelConfig c = router_config(6, 2, 3, 1);
  // The single best expert (4) sits in group 2, but group 0 has the best pair.
  const std::vector<float> logits = {1.5f, 1.5f, -3.0f, -3.0f, 3.0f, -4.0f};
  Routing r = route(logits, 1, std::vector<float>(6, 0.0f), c);
  EXPECT_EQ(r.chosen, (std::vector<int32_t>{0, 1}));
  ModelConfig no_groups = router_config(6, 2, 1, 1);
  EXPECT_EQ(route(logits, 1, std::vector<float>(6, 0.0f), no_groups).chosen,
            (std::vector<int32_t>{4, 0}));
}

TEST(Router, WithoutRenormalisationTheScoresAreScaledAsTheyAre) {
  ModelConfig c = router_config(3, 1, 1, 1);
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.8;
  Routing r = route({0.5f, -0.5f, 0.0f, 0.2f, 0.1f, 0.3f}, 2, std::vector<float>(3, 0.0f), c);
  EXPECT_EQ(r.chosen, (std::vector<int32_t>{0, 2}));
  EXPECT_FLOAT_EQ(r.weights[0], sigmoid(0.5f) * 1.8f);
  EXPECT_FLOAT_EQ(r.weights[1], sigmoid(0.3f) * 1.8f);
}

}  // namespace
}  // namespace whittle
