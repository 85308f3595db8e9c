// The decode cache of a GlmMoeDsa model: per layer and per token only what the spec says must be
// kept — the normalised MLA latent (kv_lora_rank), the rotated shared rope key (qk_rope_head_dim)
// and the DSA indexer key (index_head_dim) — 576 + 128 values per token per layer for GLM-5,
// ~57x less than caching expanded per-head K and V as transformers does.
//
// Storage is paged: each layer holds fixed pages of `page_tokens` tokens, allocated as the
// sequence grows (never a growing array that is copied on reallocation), in one of three formats:
//   f32   exact: attention reads back what the forward computed (the reference's numbers);
//   bf16  half the bytes, every part rounded to bfloat16;
//   fp8   DeepSeek's layout for the long-context cache (FlashMLA / V3.2): the latent and the
//         indexer key as E4M3 with one float32 scale per 128 values (absmax / 448), the rope key in
//         bfloat16 — 656 + 132 bytes per token per layer for GLM-5 instead of 2,304 + 512.
// Attention reads rows back as float32 (gather); the forward never sees the storage format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "io/model_config.h"

namespace whittle {

enum class KvDType { kF32, kBF16, kFP8 };
std::string_view kv_dtype_name(KvDType dtype);
std::optional<KvDType> parse_kv_dtype(std::string_view name);  // "f32", "bf16", "fp8"

// The cached parts of a token: the latent, the rope key, the indexer key (absent on IndexShare
// "shared" layers).
enum class KvPart { kLatent = 0, kRope = 1, kIndex = 2 };

class LayerCache {
 public:
  LayerCache(KvDType dtype, int64_t page_tokens, int64_t latent, int64_t rope, int64_t index);

  int64_t length = 0;  // tokens this layer holds

  int64_t width(KvPart part) const { return parts_[static_cast<int>(part)].width; }
  // Makes room for tokens [0, tokens): whole pages, allocated once each.
  void reserve(int64_t tokens);
  // Writes token `t`'s values of `part` (width(part) floats) in the storage format; t < reserved.
  void store(KvPart part, int64_t t, const float* values);
  // Reads tokens [t0, t1) of `part` as float32 rows into dst [t1 - t0, width].
  void gather(KvPart part, int64_t t0, int64_t t1, float* dst) const;
  // Reads the listed tokens (any order) of `part` as float32 rows into dst [tokens.size(), width].
  void gather(KvPart part, std::span<const int32_t> tokens, float* dst) const;
  size_t bytes() const { return pages_.size() * page_bytes_; }
  // Tokens there is room for without another page.
  int64_t capacity() const { return static_cast<int64_t>(pages_.size()) * page_tokens_; }
  void clear() {
    pages_.clear();
    length = 0;
  }

 private:
  struct Part {
    int64_t width = 0;
    size_t offset = 0;     // of the part's rows in a page
    size_t row_bytes = 0;  // per token
  };
  const std::byte* row(KvPart part, int64_t t) const;
  void read_row(KvPart part, int64_t t, float* dst) const;

  KvDType dtype_;
  int64_t page_tokens_;
  size_t page_bytes_ = 0;
  Part parts_[3];
  std::vector<std::vector<std::byte>> pages_;
};

class KvCache {
 public:
  explicit KvCache(const ModelConfig& config, KvDType dtype = KvDType::kF32,
                   int64_t page_tokens = 64);

  KvDType dtype() const { return dtype_; }
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
    for (auto& l : layers) l.clear();
  }
  // Room for `tokens` tokens in every layer, allocated now rather than page by page as they come.
  void reserve(int64_t tokens) {
    for (auto& l : layers) l.reserve(tokens);
  }
  size_t bytes() const {
    size_t n = 0;
    for (const auto& l : layers) n += l.bytes();
    return n;
  }
  // Bytes one token takes in every layer together (whole pages aside).
  static size_t bytes_per_token(const ModelConfig& config, KvDType dtype);

  std::vector<LayerCache> layers;

 private:
  KvDType dtype_;
};

}  // namespace whittle
