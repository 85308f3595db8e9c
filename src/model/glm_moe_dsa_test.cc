// The forward pass against transformers: every folder under tests/golden/models/ holds a tiny
// random GlmMoeDsaForCausalLM checkpoint, input ids and the logits transformers computed
// (tools/oracle/make_model_goldens.py). Prefill, token-by-token decode (absorbed MLA over the
// latent cache) and chunked prefill must all reproduce them.
#include "model/glm_moe_dsa.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "io/npy.h"
#include "model/demo_model_test_fixture.h"
#include "serve/sampler.h"
#include "util/atomic_file.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kGoldenModels = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/models";

std::vector<std::string> golden_models() {
  std::vector<std::string> names;
  if (fs::is_directory(kGoldenModels))
    for (const auto& e : fs::directory_iterator(kGoldenModels))
      if (fs::exists(e.path() / "logits.npy")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A golden folder holds a checkpoint, or names one in `model_dir.txt` (the bundled model, whose
// weights live in models/). `positions.npy`, when present, says which positions' logits are stored.
struct Golden {
  fs::path model;
  std::vector<int32_t> ids;
  std::vector<int64_t> positions;  // position of each stored row
  std::vector<float> logits;       // [positions.size(), V]
  int64_t T = 0, V = 0;
};

Golden read_golden(const fs::path& dir) {
  Golden g;
  g.model = dir;
  if (fs::exists(dir / "model_dir.txt")) {
    std::string rel = read_file(dir / "model_dir.txt");
    rel.erase(rel.find_last_not_of(" \n") + 1);
    g.model = fs::path(WHITTLE_SOURCE_DIR) / rel;
  }
  for (int64_t id : read_npy_i64(dir / "input_ids.npy")) g.ids.push_back(static_cast<int32_t>(id));
  g.T = static_cast<int64_t>(g.ids.size());
  std::vector<int64_t> shape;
  g.logits = read_npy_f32(dir / "logits.npy", &shape);
  EXPECT_EQ(shape.size(), 2u);
  g.V = shape[1];
  if (fs::exists(dir / "positions.npy")) {
    g.positions = read_npy_i64(dir / "positions.npy");
  } else {
    for (int64_t t = 0; t < g.T; ++t) g.positions.push_back(t);
  }
  EXPECT_EQ(shape[0], static_cast<int64_t>(g.positions.size()));
  return g;
}

// The criterion: max |delta| <= 1e-3 x the largest golden logit magnitude, and the same
// arg-max at every stored position. `got` holds the logits of positions [first, first + rows).
void expect_matches(const Golden& g, const std::vector<float>& got, int64_t first, int64_t rows,
                    const std::string& what) {
  ASSERT_EQ(got.size(), static_cast<size_t>(rows * g.V)) << what;
  float max_abs = 0.0f;
  for (float x : g.logits) max_abs = std::max(max_abs, std::fabs(x));
  for (size_t r = 0; r < g.positions.size(); ++r) {
    const int64_t pos = g.positions[r];
    if (pos < first || pos >= first + rows) continue;
    const float* want = &g.logits[r * g.V];
    const float* have = &got[(pos - first) * g.V];
    float worst = 0.0f;
    for (int64_t v = 0; v < g.V; ++v) worst = std::max(worst, std::fabs(want[v] - have[v]));
    EXPECT_LE(worst, 1e-3f * max_abs) << what << ": position " << pos;
    EXPECT_EQ(argmax({want, static_cast<size_t>(g.V)}), argmax({have, static_cast<size_t>(g.V)}))
        << what << ": arg-max differs at position " << pos;
  }
}

class GoldenModel : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kGoldenModels / GetParam(); }
};

TEST_P(GoldenModel, PrefillMatchesTransformers) {
  ThreadPool pool(2);
  Golden g = read_golden(dir());
  GlmMoeDsa model = GlmMoeDsa::load(g.model, pool);
  ASSERT_EQ(g.V, model.config().vocab_size);
  KvCache cache(model.config());
  expect_matches(g, model.prefill(g.ids, cache), 0, g.T, "prefill");
  EXPECT_EQ(cache.length(), g.T);
}

TEST_P(GoldenModel, DecodeWithCacheMatchesPrefill) {
  ThreadPool pool(2);
  Golden g = read_golden(dir());
  GlmMoeDsa model = GlmMoeDsa::load(g.model, pool);
  KvCache cache(model.config());
  std::vector<float> all;
  for (int32_t id : g.ids) {
    std::vector<float> row = model.decode(id, cache);
    all.insert(all.end(), row.begin(), row.end());
  }
  expect_matches(g, all, 0, g.T, "decode");
  // The cache holds only latent + k_pe + indexer key per token and layer.
  const ModelConfig& c = model.config();
  size_t per_token = 0;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L)
    per_token += c.kv_lora_rank + c.qk_rope_head_dim + (c.indexer_full[L] ? c.index_head_dim : 0);
  EXPECT_EQ(cache.bytes(), per_token * g.T * sizeof(float));
}

TEST_P(GoldenModel, ChunkedPrefillMatches) {
  ThreadPool pool(2);
  Golden g = read_golden(dir());
  GlmMoeDsa model = GlmMoeDsa::load(g.model, pool);
  KvCache cache(model.config());
  const int64_t split = g.T / 3;
  std::span<const int32_t> ids(g.ids);
  expect_matches(g, model.prefill(ids.first(split), cache), 0, split, "chunk 1");
  expect_matches(g, model.prefill(ids.subspan(split), cache), split, g.T - split, "chunk 2");
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenModel, ::testing::ValuesIn(golden_models()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenModel);

TEST(GlmMoeDsa, RefusesPositionsPastTheContext) {
  ThreadPool pool(1);
  Golden g = read_golden(kGoldenModels / "dsa_long");
  GlmMoeDsa model = load_model_with_context(g.model, 10, pool);
  KvCache cache(model.config());
  std::span<const int32_t> ids(g.ids);
  expect_error([&] { model.prefill(ids.first(11), cache); }, {"11 token(s)", "context of 10"});
  EXPECT_EQ(cache.length(), 0);
  model.prefill(ids.first(9), cache);
  model.decode(ids[9], cache);  // position 9: the last one
  expect_error([&] { model.decode(ids[10], cache); },
               {"after 10 cached", "max_position_embeddings"});
}

// DSA keeps one selection per query row and layer: each must hold index_topk keys, whatever the
// number of visible keys it was chosen from (memory O(T * k), not O(T^2)).
TEST(GlmMoeDsa, SelectionsHoldOnlyTopKKeys) {
  ThreadPool pool(1);
  Golden g = read_golden(kGoldenModels / "dsa_long");
  GlmMoeDsa model = GlmMoeDsa::load(g.model, pool);
  KvCache cache(model.config());
  model.prefill(g.ids, cache);
  const size_t k = static_cast<size_t>(model.config().index_topk);
  size_t sparse = 0;
  for (const auto& layer : model.last_selections())
    for (const KeySelection& sel : layer) {
      if (sel.all_visible) continue;
      ++sparse;
      EXPECT_EQ(sel.keys.size(), k);
      EXPECT_LE(sel.keys.capacity(), k);
    }
  EXPECT_GT(sparse, 0u);
}

TEST(GoldenModels, ArePresent) {
  EXPECT_GE(golden_models().size(), 3u) << kGoldenModels;
}

}  // namespace
}  // namespace whittle
