// The forward pass in pieces: layer-major over many sequences (one layer's weights acquired at a
// time) against the ordinary token-major forward, batches of several sequences, concurrent
// forwards, the observer, and the weight source releasing a layer's pages.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "io/npy.h"
#include "model/glm_moe_dsa.h"
#include "model/golden_models_test_helpers.h"
#include "model/router.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

// Three sequences of different lengths cut from the golden input; long enough that DSA drops keys.
std::vector<std::vector<int32_t>> three_sequences(const std::vector<int32_t>& ids) {
  const auto n = static_cast<std::ptrdiff_t>(ids.size());
  return {std::vector<int32_t>(ids.begin(), ids.end()),
          std::vector<int32_t>(ids.begin() + 5, ids.begin() + n - 7),
          std::vector<int32_t>(ids.begin() + 11, ids.end())};
}

class Streaming : public ::testing::TestWithParam<std::string> {};

// What a calibration pass does: every sequence through layer L, then L + 1, with only layer L's
// weights acquired; then one decode step per sequence, also layer-major. The same calls as the
// token-major forward in another order: equal bit for bit.
TEST_P(Streaming, LayerMajorOverSequencesEqualsTokenMajorBitForBit) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(kGoldenModels / GetParam(), pool);
  const ModelConfig& c = model.config();
  const std::vector<std::vector<int32_t>> seqs = three_sequences(golden_ids(GetParam()));
  const int32_t next_token = 7;

  std::vector<std::vector<float>> want;
  for (const auto& s : seqs) {
    KvCache cache(c);
    want.push_back(model.prefill(s, cache));
    std::vector<float> d = model.decode(next_token, cache);
    want.back().insert(want.back().end(), d.begin(), d.end());
  }

  std::vector<KvCache> caches(seqs.size(), KvCache(c));
  std::vector<std::vector<float>> got(seqs.size());
  for (bool decode : {false, true}) {
    std::vector<Batch> batches;
    for (size_t i = 0; i < seqs.size(); ++i)
      batches.push_back(model.embed({decode ? SequenceInput{{&next_token, 1}, &caches[i], true}
                                            : SequenceInput{seqs[i], &caches[i], false}}));
    const WeightSource& source = model.weights();
    for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
      const LayerWeights& w = source.acquire(L);
      source.prefetch(L + 1);
      for (Batch& b : batches) model.forward_layer(L, w, b);
      source.release(L);
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
      std::vector<float> logits = model.head(batches[i], /*all_rows=*/true);
      got[i].insert(got[i].end(), logits.begin(), logits.end());
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << "sequence " << i;
    EXPECT_EQ(caches[i].length(), static_cast<int64_t>(seqs[i].size()) + 1);
  }
}

// Several sequences in one batch, prefill and decode mixed: every Linear runs once over all rows.
// OpenBLAS's sgemm rounds differently for different row counts, so this is equal to the
// one-sequence forward within float rounding (6.3e-7 x max |logit| achieved), not bit for bit.
TEST_P(Streaming, OneBatchOfSequencesMatchesEachAlone) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(kGoldenModels / GetParam(), pool);
  const ModelConfig& c = model.config();
  const std::vector<std::vector<int32_t>> seqs = three_sequences(golden_ids(GetParam()));
  const int32_t next_token = 9;

  std::vector<KvCache> alone(seqs.size(), KvCache(c)), together(seqs.size(), KvCache(c));
  std::vector<float> want;
  for (size_t i = 0; i < seqs.size(); ++i) {
    // Sequence 1 is prefilled in two chunks so that the second batch mixes prefill and decode.
    const size_t cut = i == 1 ? seqs[i].size() - 4 : seqs[i].size();
    std::vector<float> logits =
        model.prefill(std::span(seqs[i]).first(cut), alone[i], /*all_logits=*/false);
    want.insert(want.end(), logits.begin(), logits.end());
  }
  std::vector<SequenceInput> first;
  for (size_t i = 0; i < seqs.size(); ++i)
    first.push_back({std::span(seqs[i]).first(i == 1 ? seqs[i].size() - 4 : seqs[i].size()),
                     &together[i], false});
  Batch b = model.embed(first);
  std::vector<float> got = model.forward(b, /*all_rows=*/false);

  // Second step: decode for sequences 0 and 2, the rest of sequence 1's prompt as a prefill.
  const std::span<const int32_t> rest = std::span(seqs[1]).last(4);
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::vector<float> logits =
        i == 1 ? model.prefill(rest, alone[i], false) : model.decode(next_token, alone[i]);
    want.insert(want.end(), logits.begin(), logits.end());
  }
  Batch b2 = model.embed({{{&next_token, 1}, &together[0], true},
                          {rest, &together[1], false},
                          {{&next_token, 1}, &together[2], true}});
  std::vector<float> step = model.forward(b2, false);
  got.insert(got.end(), step.begin(), step.end());

  ASSERT_EQ(got.size(), want.size());
  float worst = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  EXPECT_LE(worst, 1e-5f * scale);
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(together[i].length(), alone[i].length()) << i;
}

INSTANTIATE_TEST_SUITE_P(Golden, Streaming, ::testing::Values("dsa_long", "multi_moe", "grouped"),
                         [](const auto& info) { return info.param; });

// The model keeps no state during a forward: threads sharing one model and one pool, each with
// its own cache, get what a lone thread gets.
TEST(StreamingThreads, ConcurrentForwardsOnOneModelAgreeWithSequentialOnes) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(kGoldenModels / "multi_moe", pool);
  const std::vector<std::vector<int32_t>> seqs = three_sequences(golden_ids("multi_moe"));
  auto run = [&](size_t i) {
    KvCache cache(model.config());
    std::vector<float> logits = model.prefill(seqs[i], cache);
    for (int32_t t : {3, 5, 8}) {
      std::vector<float> d = model.decode(t, cache);
      logits.insert(logits.end(), d.begin(), d.end());
    }
    return logits;
  };
  std::vector<std::vector<float>> want;
  for (size_t i = 0; i < seqs.size(); ++i) want.push_back(run(i));
  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<float>> got(seqs.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < seqs.size(); ++i) threads.emplace_back([&, i] { got[i] = run(i); });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(got[i], want[i]) << "thread " << i;
  }
}

// The observer sees what the forward pass computes and changes nothing: the rows each routed
// expert receives are the ones the router chose, its inputs are those rows of the MoE input, and
// linear_input names every Linear by its Hugging Face module.
TEST(StreamingObserver, SeesRoutingExpertsAndLinearsWithoutChangingTheResult) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(kGoldenModels / "multi_moe", pool);
  const ModelConfig& c = model.config();
  const std::vector<int32_t> ids = golden_ids("multi_moe");
  struct Recorder : ForwardObserver {
    std::map<int64_t, Routing> routing;
    std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> expert_rows;
    std::map<std::string, int64_t> linear_rows;
    std::map<int64_t, std::vector<float>> expert_input;  // layer -> gate_proj inputs, expert 0
    int64_t layers_in = 0, layers_out = 0;
    void layer_input(int64_t, const Batch&, const float*) override { ++layers_in; }
    void layer_output(int64_t, const Batch&, const float*) override { ++layers_out; }
    void linear_input(const Weight& w, const float*, int64_t rows) override {
      linear_rows[w.module()] += rows;
    }
    void router(int64_t layer, const Routing& r) override { routing[layer] = r; }
    void expert(int64_t layer, int64_t e, std::span<const int64_t> rows, const float*,
                const float*) override {
      expert_rows[{layer, e}].assign(rows.begin(), rows.end());
    }
  } seen;
  KvCache plain_cache(c), watched_cache(c);
  EXPECT_EQ(model.prefill(ids, plain_cache), model.prefill(ids, watched_cache, true, &seen));

  const int64_t T = static_cast<int64_t>(ids.size());
  EXPECT_EQ(seen.layers_in, c.num_hidden_layers);
  EXPECT_EQ(seen.layers_out, c.num_hidden_layers);
  ASSERT_EQ(static_cast<int64_t>(seen.routing.size()),
            c.num_hidden_layers - c.first_k_dense_replace);
  for (const auto& [layer, r] : seen.routing) {
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      std::vector<int64_t> chosen_rows;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < r.k; ++j)
          if (r.chosen[t * r.k + j] == e) chosen_rows.push_back(t);
      auto it = seen.expert_rows.find({layer, e});
      EXPECT_EQ(it == seen.expert_rows.end() ? std::vector<int64_t>{} : it->second, chosen_rows)
          << "layer " << layer << " expert " << e;
      const std::string m = fmt::format("model.layers.{}.mlp.experts.{}.", layer, e);
      for (const char* proj : {"gate_proj", "up_proj", "down_proj"})
        EXPECT_EQ(seen.linear_rows[m + proj], static_cast<int64_t>(chosen_rows.size())) << m;
    }
    EXPECT_EQ(seen.linear_rows[fmt::format("model.layers.{}.mlp.gate", layer)], T);
    EXPECT_EQ(seen.linear_rows[fmt::format("model.layers.{}.mlp.shared_experts.down_proj", layer)],
              T);
  }
  for (const char* m :
       {"model.layers.0.self_attn.q_a_proj", "model.layers.0.self_attn.kv_b_proj",
        "model.layers.4.self_attn.indexer.weights_proj", "model.layers.1.mlp.down_proj", "lm_head"})
    EXPECT_EQ(seen.linear_rows[m], T) << m;
}

// Process memory: RssFile in /proc/self/status, in bytes.
int64_t rss_file_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  return -1;
}

// Reading a layer maps its pages into the process; release drops them again, so a layer-major pass
// keeps about one layer resident however large the model.
TEST(WeightSourceTest, ReleaseDropsTheLayersPages) {
  const fs::path dir = fs::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5";
  const ModelConfig config = ModelConfig::load(dir);
  WeightSource source(dir, config);
  const int64_t L = config.num_hidden_layers - 1;  // a MoE layer
  const size_t bytes = source.layer_bytes(L);
  ASSERT_GT(bytes, size_t{4} << 20);
  double sum = 0;  // read every byte of the layer
  source.acquire(L).for_each_linear([&](const Weight& w) {
    for (float x : w.to_f32()) sum += x;
  });
  EXPECT_TRUE(std::isfinite(sum));
  const int64_t touched = rss_file_bytes();
  source.release(L);
  const int64_t released = rss_file_bytes();
  EXPECT_GE(touched - released, static_cast<int64_t>(bytes * 9 / 10))
      << "layer of " << bytes << " bytes; RssFile " << touched << " -> " << released;
}

}  // namespace
}  // namespace whittle
