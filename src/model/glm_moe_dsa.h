// GlmMoeDsa: the forward pass of GLM-5 / DeepSeek-V3.2 (MLA attention with the DSA lightning
// indexer, sigmoid-routed MoE with a shared expert), reference path in float32.
// Two modes that must agree: prefill (the expanded MLA form over any number of new tokens) and
// decode (one token, the absorbed MQA form over the latent cache).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "io/model_config.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/rope.h"
#include "util/thread_pool.h"

namespace whittle {

// Which keys a query row attends to: every causally visible key, or the indexer's top-k.
struct KeySelection {
  bool all_visible = true;
  std::vector<int32_t> keys;  // when !all_visible: absolute positions, any order
};

class GlmMoeDsa {
 public:
  GlmMoeDsa(ModelConfig config, ModelWeights weights, ThreadPool& pool);
  // Reads config.json and the safetensors weights of a model folder.
  static GlmMoeDsa load(const std::filesystem::path& dir, ThreadPool& pool);

  const ModelConfig& config() const { return config_; }

  // Runs `tokens` at positions cache.length() ... and appends them to the cache. Returns logits
  // [tokens.size(), vocab] when all_logits, else only the last row [vocab].
  std::vector<float> prefill(std::span<const int32_t> tokens, KvCache& cache,
                             bool all_logits = true);
  // One token with the absorbed attention form. Returns logits [vocab].
  std::vector<float> decode(int32_t token, KvCache& cache);

  // DSA selections of the last call, per layer and query row (for tests and diagnostics).
  const std::vector<std::vector<KeySelection>>& last_selections() const { return selections_; }

 private:
  void embed(std::span<const int32_t> tokens, float* h) const;
  // Both attention forms: writes the attention output [T, hidden] for the normed input `a`.
  void attention(int64_t layer, const float* a, int64_t T, KvCache& cache, bool absorbed,
                 float* out);
  // Scores the indexer keys and selects for each of the T new rows; appends this layer's keys.
  std::vector<KeySelection> index(const IndexerWeights& w, const float* a, const float* q_lat,
                                  int64_t T, int64_t past, LayerCache& lc);
  void mlp(const MlpWeights& w, const float* x, int64_t T, float* out, bool accumulate);
  void moe(const MoeWeights& w, const float* x, int64_t T, float* out);
  std::vector<float> run(std::span<const int32_t> tokens, KvCache& cache, bool all_logits,
                         bool absorbed);

  ModelConfig config_;
  ModelWeights weights_;
  ThreadPool& pool_;
  RopeTable rope_;
  std::vector<std::vector<KeySelection>> selections_;
};

}  // namespace whittle
