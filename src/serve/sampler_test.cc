// Sampling: greedy is arg-max, filters keep exactly the tokens they should, a seed reproduces a
// sequence, and frequencies follow the softmax.
#include "serve/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
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

// The textbook sampler: sort every id by logit, cut by top-k, softmax, cut by top-p, renormalise,
// draw with the same uniform as Sampler (the generator's top 53 bits).
int32_t full_sort_sample(std::span<const float> logits, const SamplingParams& p,
                         std::mt19937_64& rng) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (p.top_k > 0) ids.resize(std::min<size_t>(ids.size(), static_cast<size_t>(p.top_k)));
  const double mx = logits[ids[0]];
  std::vector<double> w(logits.size(), 0.0);
  for (int32_t id : ids) w[id] = std::exp((logits[id] - mx) * (1.0 / p.temperature));
  double total = 0.0;  // summed as Sampler sums: over the top-k in order, else in id order
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < logits.size())
    for (int32_t id : ids) total += w[id];
  else
    for (double x : w) total += x;
  size_t n = ids.size();
  double limit = 1.0;
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (n = 0; n < ids.size() && mass < p.top_p;) mass += w[ids[n++]] / total;
    limit = mass;
  }
  const double r = static_cast<double>(rng() >> 11) * 0x1.0p-53 * limit;
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i)
    if (r < (acc += w[ids[i]] / total)) return ids[i];
  return ids[n - 1];
}

TEST(Sampler, EqualsTheFullSortOnAGlmSizedVocabulary) {
  // 154,880 logits with ties and a long flat tail, so that top-p 0.95 and the plain draw need
  // thousands of candidates: the prefix grown by selection must pick what a full sort picks.
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(154880);
  for (float& x : logits) x = std::round(normal(gen) * 8.0f) / 8.0f;
  for (const SamplingParams& base :
       {SamplingParams{.temperature = 0.8f, .top_p = 0.95f}, SamplingParams{.temperature = 1.0f},
        SamplingParams{.temperature = 0.7f, .top_k = 50, .top_p = 0.9f},
        SamplingParams{.temperature = 2.0f, .top_k = 1000}}) {
    SamplingParams p = base;
    p.seed = 11;
    Sampler s(p);
    std::mt19937_64 rng(p.seed);
    for (int i = 0; i < 40; ++i)
      ASSERT_EQ(s.sample(logits), full_sort_sample(logits, p, rng))
          << "draw " << i << ", temperature " << p.temperature << ", top-k " << p.top_k
          << ", top-p " << p.top_p;
  }
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
