// Norms, softmax and top-k against direct double-precision formulas.
#include "ops/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "util/testing.h"

namespace whittle {
namespace {

TEST(Elementwise, RmsNormMatchesFormula) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d;
  const int n = 67;
  std::vector<float> x(n), w(n), out(n);
  for (int i = 0; i < n; ++i) x[i] = d(rng), w[i] = 1 + 0.1f * d(rng);
  rms_norm(x.data(), w.data(), out.data(), n, 1e-6f);
  double ms = 0;
  for (float v : x) ms += double(v) * v;
  ms /= n;
  for (int i = 0; i < n; ++i) EXPECT_NEAR(out[i], x[i] / std::sqrt(ms + 1e-6) * w[i], 1e-5);
}

TEST(Elementwise, LayerNormMatchesFormula) {
  std::vector<float> x = {1, 2, 3, 4, 10}, w = {1, 2, 1, 0.5, 1}, b = {0, 1, 0, 0, -1}, out(5);
  layer_norm(x.data(), w.data(), b.data(), out.data(), 5, 1e-6f);
  const double mean = 4, var = (9 + 4 + 1 + 0 + 36) / 5.0;
  for (int i = 0; i < 5; ++i)
    EXPECT_NEAR(out[i], (x[i] - mean) / std::sqrt(var + 1e-6) * w[i] + b[i], 1e-5);
}

TEST(Elementwise, SoftmaxIgnoresMinusInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1.0f, -inf, 3.0f, -inf};
  softmax(x.data(), 4);
  EXPECT_FLOAT_EQ(x[1], 0.0f);
  EXPECT_FLOAT_EQ(x[3], 0.0f);
  EXPECT_NEAR(x[0], 1 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_NEAR(x[0] + x[2], 1.0, 1e-6);
}

TEST(Elementwise, TopKOrdersDescendingAndBreaksTiesByIndex) {
  std::vector<float> x = {0.5f, 2.0f, -1.0f, 2.0f, 0.7f};
  EXPECT_EQ(top_k(x.data(), 5, 3), (std::vector<int32_t>{1, 3, 4}));
  EXPECT_EQ(top_k(x.data(), 5, 5), (std::vector<int32_t>{1, 3, 4, 0, 2}));
}

// The DSA indexer keeps one top-k per token: each must hold k entries, not the n it was chosen
// from (a resize(k) kept capacity n: O(T^2) memory over a long prompt).
TEST(Elementwise, TopKKeepsOnlyKEntries) {
  std::vector<float> x(10000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 10007);
  std::vector<int32_t> best = top_k(x.data(), static_cast<int64_t>(x.size()), 16);
  EXPECT_EQ(best.size(), 16u);
  EXPECT_LE(best.capacity(), 16u);
  expect_error([&] { top_k(x.data(), 4, 5); }, {"top-5 of 4"});
}

TEST(Elementwise, SiluMul) {
  std::vector<float> g = {-2.0f, 0.0f, 3.0f}, u = {1.0f, 5.0f, 2.0f};
  silu_mul(g.data(), u.data(), 3);
  EXPECT_NEAR(g[0], -2 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_FLOAT_EQ(g[1], 0.0f);
  EXPECT_NEAR(g[2], 3 / (1 + std::exp(-3.0)) * 2, 1e-5);
}

}  // namespace
}  // namespace whittle
