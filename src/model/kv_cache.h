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
  std::vector<float> latent;  // [length, kv_lora_rank]
  std::vector<float> k_pe;    // [length, qk_rope_head_dim], rotated at its own position
  std::vector<float>
      index_keys;  // [length, index_head_dim], LayerNorm'd and rotated; empty on shared layers
};

class KvCache {
 public:
  explicit KvCache(const ModelConfig& config)
      : layers(static_cast<size_t>(config.num_hidden_layers)) {}

  int64_t length() const { return length_; }
  // Called by the model once every layer has appended `n` tokens.
  void advance(int64_t n) { length_ += n; }
  void clear() {
    for (auto& l : layers) l = LayerCache{};
    length_ = 0;
  }
  size_t bytes() const {
    size_t n = 0;
    for (const auto& l : layers)
      n += (l.latent.size() + l.k_pe.size() + l.index_keys.size()) * sizeof(float);
    return n;
  }

  std::vector<LayerCache> layers;

 private:
  int64_t length_ = 0;
};

}  // namespace whittle
