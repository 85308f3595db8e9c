// The decode cache of a GlmMoeDsa model: per layer and per token only what the spec says must be
// kept — the normalised MLA latent (kv_lora_rank), the rotated shared rope key (qk_rope_head_dim)
// and the DSA indexer key (index_head_dim) — 576 + 128 values per token per layer for GLM-5,
// ~57x less than caching expanded per-head K and V as transformers does.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"

namespace whittle {

struct LayerCache {
  int64_t length = 0;         // tokens this layer holds
  std::vector<float> latent;  // [length, kv_lora_rank]
  std::vector<float> k_pe;    // [length, qk_rope_head_dim], rotated at its own position
  std::vector<float>
      index_keys;  // [length, index_head_dim], LayerNorm'd and rotated; empty on shared layers
};

class KvCache {
 public:
  explicit KvCache(const ModelConfig& config)
      : layers(static_cast<size_t>(config.num_hidden_layers)) {}

  // Tokens that have been through every layer. Each layer appends its own (a layer-major pass
  // fills layer 0 for every sequence before layer 1), so the last layer's count is the cache's.
  int64_t length() const { return layers.empty() ? 0 : layers.back().length; }
  // False while a forward pass has filled some layers and not others (or one threw part-way).
  bool consistent() const {
    for (const auto& l : layers)
      if (l.length != length()) return false;
    return true;
  }
  void clear() {
    for (auto& l : layers) l = LayerCache{};
  }
  size_t bytes() const {
    size_t n = 0;
    for (const auto& l : layers)
      n += (l.latent.size() + l.k_pe.size() + l.index_keys.size()) * sizeof(float);
    return n;
  }

  std::vector<LayerCache> layers;
};

}  // namespace whittle
