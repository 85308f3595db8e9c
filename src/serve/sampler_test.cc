// Sampling: greedy is arg-max, filters keep exactly the tokens they should, a seed reproduces a
// sequence, and frequencies follow the softmax.
#include "serve/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "util/error.h"

namespace whittle {
namespace {

TEST(Sampler, GreedyIsArgmax) {
  Sampler s({.temperature = 0.0f});
  std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f};
  EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, TopKOneIsGreedy) {
  Sampler s({.temperature = 5.0f, .top_k = 1, .seed = 9});
  std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, TopPKeepsTheNucleusOnly) {
  // p = softmax([ln 6, ln 3, ln 1]) = [0.6, 0.3, 0.1]; top_p 0.8 keeps ids 0 and 1.
  std::vector<float> logits = {std::log(6.0f), std::log(3.0f), std::log(1.0f)};
  Sampler s({.temperature = 1.0f, .top_p = 0.8f, .seed = 1});
  std::map<int, int> counts;
  for (int i = 0; i < 6000; ++i) counts[s.sample(logits)]++;
  EXPECT_EQ(counts[2], 0);
  EXPECT_NEAR(counts[0] / 6000.0, 2.0 / 3.0, 0.03);
}

TEST(Sampler, FrequenciesFollowSoftmaxAndSeedReproduces) {
  std::vector<float> logits = {0.0f, std::log(3.0f)};
  Sampler a({.temperature = 1.0f, .seed = 42}), b({.temperature = 1.0f, .seed = 42});
  int ones = 0;
  for (int i = 0; i < 8000; ++i) {
    int x = a.sample(logits);
    EXPECT_EQ(x, b.sample(logits));
    ones += x;
  }
  EXPECT_NEAR(ones / 8000.0, 0.75, 0.02);
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler({.top_p = 0.0f}), Error);
  EXPECT_THROW(Sampler({.top_k = -1}), Error);
  EXPECT_THROW(Sampler({.top_p = 1.5f}), Error);
  // NaN passes every "<= 0 || > 1" test; it must be refused, not sampled with.
  EXPECT_THROW(Sampler({.top_p = std::nanf("")}), Error);
  EXPECT_THROW(Sampler({.temperature = std::nanf("")}), Error);
  EXPECT_THROW(Sampler({.temperature = INFINITY}), Error);
  EXPECT_NO_THROW(Sampler({.temperature = 0.0f}));
}

}  // namespace
}  // namespace whittle
