// REAP statistics against the outside: the routing (which experts, which weights) from the
// transformers golden of tests/golden/models (router_experts.npy / router_weights.npy), and each
// expert's output norm recomputed here from the expert's weights with the reference linear (double
// accumulation) on the rows routed to it.
#include "prune/reap_observer.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "io/npy.h"
#include "model/golden_models_test_helpers.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "prune/checkpoint_surgery.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

// Each routed expert's input rows, as the forward pass hands them over.
struct ExpertInputs : ForwardObserver {
  int64_t hidden;
  std::map<std::pair<int64_t, int64_t>, std::vector<float>> rows;   // (layer, expert) -> [n, H]
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> ids;  // their token positions
  explicit ExpertInputs(int64_t h) : hidden(h) {}
  void expert(int64_t layer, int64_t e, std::span<const int64_t> r, const float* input,
              const float*) override {
    auto& v = rows[{layer, e}];
    v.insert(v.end(), input, input + static_cast<int64_t>(r.size()) * hidden);
    ids[{layer, e}].insert(ids[{layer, e}].end(), r.begin(), r.end());
  }
};

// SwiGLU with the reference linear: down(silu(gate x) * up x).
std::vector<float> expert_output(const MlpWeights& w, const std::vector<float>& x, int64_t n) {
  const int64_t I = w.gate_proj.rows(), H = w.down_proj.rows();
  std::vector<float> g(static_cast<size_t>(n * I)), u(g.size()), y(static_cast<size_t>(n * H));
  linear_reference(w.gate_proj, x.data(), n, g.data());
  linear_reference(w.up_proj, x.data(), n, u.data());
  silu_mul(g.data(), u.data(), n * I);
  linear_reference(w.down_proj, g.data(), n, y.data());
  return y;
}

class ReapStats : public ::testing::TestWithParam<std::string> {};

TEST_P(ReapStats, MatchTheGoldenRoutingAndRecomputedExpertNorms) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(kGoldenModels / GetParam(), pool);
  const ModelConfig& c = model.config();
  const std::vector<int32_t> ids = golden_ids(GetParam());
  const std::vector<std::vector<int32_t>> samples = {ids};
  const auto stats = collect_reap_stats(model, samples, 1);

  // Routing from transformers: counts exact, gate sums to float rounding. Achieved relative errors:
  // gate sums 6.7e-8, norms 8.3e-8, gate-weighted norms 1.0e-7; bounds 2e-6.
  std::vector<int64_t> shape;
  const std::vector<int32_t> experts =
      read_npy_i32(kGoldenModels / GetParam() / "router_experts.npy", &shape);
  const std::vector<float> weights =
      read_npy_f32(kGoldenModels / GetParam() / "router_weights.npy");
  const int64_t T = shape[1], K = shape[2];
  std::vector<int64_t> moe_layers;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L)
    if (c.layer_is_moe[L]) moe_layers.push_back(L);
  ASSERT_EQ(static_cast<int64_t>(moe_layers.size()), shape[0]);

  // Expert outputs recomputed from the weights on the rows routed to each expert.
  ExpertInputs inputs(c.hidden_size);
  KvCache cache(c);
  model.prefill(ids, cache, true, &inputs);

  for (size_t m = 0; m < moe_layers.size(); ++m) {
    const int64_t L = moe_layers[m];
    ASSERT_EQ(static_cast<int64_t>(stats[L].size()), c.n_routed_experts);
    std::vector<double> count(static_cast<size_t>(c.n_routed_experts)), gate(count.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < K; ++j) {
        const size_t i = static_cast<size_t>((static_cast<int64_t>(m) * T + t) * K + j);
        count[experts[i]] += 1;
        gate[experts[i]] += weights[i];
      }
    const MoeWeights& moe = *model.weights().weights().layers[L].moe;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      SCOPED_TRACE(fmt::format("layer {} expert {}", L, e));
      const ExpertStats& s = stats[L][e];
      EXPECT_EQ(s.count, count[e]);
      EXPECT_NEAR(s.sum_gate, gate[e], 2e-6 * std::max(1.0, gate[e]));
      auto it = inputs.rows.find({L, e});
      if (count[e] == 0) {
        EXPECT_EQ(it, inputs.rows.end());
        EXPECT_EQ(s.sum_norm, 0.0);
        continue;
      }
      ASSERT_NE(it, inputs.rows.end());
      const int64_t n = static_cast<int64_t>(count[e]);
      const std::vector<float> y = expert_output(moe.experts[e], it->second, n);
      // The golden weight of expert e at each routed position.
      auto golden_gate = [&](int64_t t) {
        for (int64_t j = 0; j < K; ++j) {
          const size_t i = static_cast<size_t>((static_cast<int64_t>(m) * T + t) * K + j);
          if (experts[i] == e) return double{weights[i]};
        }
        ADD_FAILURE() << "position " << t << " is not routed to expert " << e;
        return 0.0;
      };
      double sum_norm = 0, max_norm = 0, sum_gate_norm = 0;
      for (int64_t r = 0; r < n; ++r) {
        double sq = 0;
        for (int64_t h = 0; h < c.hidden_size; ++h)
          sq += double{y[r * c.hidden_size + h]} * y[r * c.hidden_size + h];
        sum_norm += std::sqrt(sq);
        max_norm = std::max(max_norm, std::sqrt(sq));
        sum_gate_norm += golden_gate(inputs.ids[{L, e}][r]) * std::sqrt(sq);
      }
      EXPECT_NEAR(s.sum_norm, sum_norm, 2e-6 * sum_norm);
      EXPECT_NEAR(s.max_norm, max_norm, 2e-6 * max_norm);
      EXPECT_NEAR(s.sum_gate_norm, sum_gate_norm, 2e-6 * sum_gate_norm);
    }
  }
}

// Grouping samples into batches changes how many rows each Linear sees, not what is counted.
TEST_P(ReapStats, BatchingDoesNotChangeTheStatistics) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(kGoldenModels / GetParam(), pool);
  const std::vector<int32_t> ids = golden_ids(GetParam());
  std::vector<std::vector<int32_t>> samples;
  for (size_t start : {0, 3, 9, 17}) samples.emplace_back(ids.begin() + start, ids.end());
  const auto one = collect_reap_stats(model, samples, 1);
  const auto three = collect_reap_stats(model, samples, 3);
  ASSERT_EQ(one.size(), three.size());
  for (size_t L = 0; L < one.size(); ++L)
    for (size_t e = 0; e < one[L].size(); ++e) {
      EXPECT_EQ(one[L][e].count, three[L][e].count) << L << " " << e;
      EXPECT_NEAR(one[L][e].sum_gate_norm, three[L][e].sum_gate_norm,
                  1e-5 * std::max(1.0, one[L][e].sum_gate_norm));
    }
}

// keep_experts (what --sequential runs) is the layer of the pruned checkpoint: the first expert of
// every group dropped, the view over the unpruned weights and the checkpoint written by
// write_pruned_checkpoint give the same hidden states, bit for bit.
TEST_P(ReapStats, KeptExpertsViewRunsLikeThePrunedCheckpoint) {
  ScratchDir tmp;
  ThreadPool pool(2);
  const fs::path in = kGoldenModels / GetParam(), out = tmp.path() / "pruned";
  GlmMoeDsa model = GlmMoeDsa::load(in, pool);
  const ModelConfig& c = model.config();
  const int64_t per_group = c.n_routed_experts / c.n_group;
  std::vector<int32_t> kept;
  for (int32_t e = 0; e < c.n_routed_experts; ++e)
    if (e % per_group != 0) kept.push_back(e);
  ExpertKeep keep;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L)
    keep.kept_per_layer.push_back(c.layer_is_moe[L] ? kept : std::vector<int32_t>{});
  write_pruned_checkpoint(in, out, c, keep, {});
  GlmMoeDsa pruned = GlmMoeDsa::load(out, pool);

  const std::vector<int32_t> ids = golden_ids(GetParam());
  KvCache cache_a(c), cache_b(pruned.config());
  Batch a = model.embed({{ids, &cache_a, false}}), b = pruned.embed({{ids, &cache_b, false}});
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    LayerWeights view = model.weights().weights().layers[static_cast<size_t>(L)];
    if (view.moe) view.moe = keep_experts(*view.moe, kept);
    model.forward_layer(L, view, a);
    pruned.forward_layer(L, b);
  }
  EXPECT_EQ(a.hidden, b.hidden);
  // And dropping experts changes the output (the comparison can fail).
  KvCache cache_c(c);
  Batch full = model.embed({{ids, &cache_c, false}});
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) model.forward_layer(L, full);
  EXPECT_NE(full.hidden, a.hidden);
}

INSTANTIATE_TEST_SUITE_P(Golden, ReapStats, ::testing::Values("dsa_long", "multi_moe", "grouped"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace whittle
