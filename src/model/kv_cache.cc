#include "model/kv_cache.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "tensor/dtype.h"
#include "util/error.h"

namespace whittle {

namespace {

constexpr int64_t kFp8Block = 128;  // values per float32 scale in the fp8 format
constexpr float kFp8Max = 448.0f;

int64_t fp8_blocks(int64_t width) {
  return (width + kFp8Block - 1) / kFp8Block;
}

// The rope key stays 16-bit in the fp8 format: it carries the position, and it is small.
bool fp8_part(KvDType dtype, KvPart part) {
  return dtype == KvDType::kFP8 && part != KvPart::kRope;
}

// E4M3 code -> float32, by table: reading an fp8 cache back is one lookup per value.
const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b)
      t[static_cast<size_t>(b)] = f8e4m3_to_f32(static_cast<uint8_t>(b));
    return t;
  }();
  return table;
}

// Indexer keys are kept on layers with an indexer of their own (not on IndexShare "shared" ones).
int64_t index_width(const ModelConfig& config, int64_t layer) {
  const auto L = static_cast<size_t>(layer);
  return L < config.indexer_full.size() && config.indexer_full[L] ? config.index_head_dim : 0;
}

size_t row_bytes(KvDType dtype, KvPart part, int64_t width) {
  if (width == 0) return 0;
  if (fp8_part(dtype, part)) return static_cast<size_t>(width + 4 * fp8_blocks(width));
  return static_cast<size_t>(width) * (dtype == KvDType::kF32 ? 4 : 2);
}

}  // namespace

std::string_view kv_dtype_name(KvDType dtype) {
  switch (dtype) {
    case KvDType::kF32:
      return "f32";
    case KvDType::kBF16:
      return "bf16";
    case KvDType::kFP8:
      return "fp8";
  }
  return "?";
}

std::optional<KvDType> parse_kv_dtype(std::string_view name) {
  for (KvDType d : {KvDType::kF32, KvDType::kBF16, KvDType::kFP8})
    if (name == kv_dtype_name(d)) return d;
  return std::nullopt;
}

LayerCache::LayerCache(KvDType dtype, int64_t page_tokens, int64_t latent, int64_t rope,
                       int64_t index)
    : dtype_(dtype), page_tokens_(page_tokens) {
  if (page_tokens < 1) fail("internal: KV cache pages of {} tokens", page_tokens);
  const int64_t widths[3] = {latent, rope, index};
  for (int p = 0; p < 3; ++p) {
    parts_[p].width = widths[p];
    parts_[p].offset = page_bytes_;
    parts_[p].row_bytes = row_bytes(dtype, static_cast<KvPart>(p), widths[p]);
    // Each part's rows start 64-byte aligned within the page.
    page_bytes_ += (parts_[p].row_bytes * static_cast<size_t>(page_tokens) + 63) / 64 * 64;
  }
}

void LayerCache::reserve(int64_t tokens) {
  const int64_t pages = (tokens + page_tokens_ - 1) / page_tokens_;
  pages_.reserve(static_cast<size_t>(pages));
  while (static_cast<int64_t>(pages_.size()) < pages) pages_.emplace_back(page_bytes_);
}

const std::byte* LayerCache::row(KvPart part, int64_t t) const {
  const Part& p = parts_[static_cast<int>(part)];
  return pages_[static_cast<size_t>(t / page_tokens_)].data() + p.offset +
         static_cast<size_t>(t % page_tokens_) * p.row_bytes;
}

void LayerCache::store(KvPart part, int64_t t, const float* values) {
  const Part& p = parts_[static_cast<int>(part)];
  if (t < 0 || t >= capacity())
    fail("internal: KV cache store at token {} beyond the {} reserved", t, capacity());
  std::byte* dst = const_cast<std::byte*>(row(part, t));
  if (dtype_ == KvDType::kF32) {
    std::memcpy(dst, values, static_cast<size_t>(p.width) * 4);
  } else if (!fp8_part(dtype_, part)) {
    for (int64_t i = 0; i < p.width; ++i) {
      const uint16_t h = f32_to_bf16(values[i]);
      std::memcpy(dst + 2 * i, &h, 2);
    }
  } else {
    // Codes first, then one float32 scale per block of 128: value = code's value * scale.
    for (int64_t b = 0; b < fp8_blocks(p.width); ++b) {
      const int64_t i0 = b * kFp8Block, i1 = std::min(p.width, i0 + kFp8Block);
      float amax = 0.0f;
      for (int64_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(values[i]));
      const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
      for (int64_t i = i0; i < i1; ++i)
        dst[i] = static_cast<std::byte>(f32_to_f8e4m3(values[i] / scale));
      std::memcpy(dst + p.width + 4 * b, &scale, 4);
    }
  }
}

void LayerCache::read_row(KvPart part, int64_t t, float* dst) const {
  const Part& p = parts_[static_cast<int>(part)];
  const std::byte* src = row(part, t);
  if (dtype_ == KvDType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(p.width) * 4);
  } else if (!fp8_part(dtype_, part)) {
    convert_to_f32(DType::BF16, src, static_cast<size_t>(p.width), dst);
  } else {
    const std::array<float, 256>& value = fp8_values();
    for (int64_t b = 0; b < fp8_blocks(p.width); ++b) {
      float scale;
      std::memcpy(&scale, src + p.width + 4 * b, 4);
      for (int64_t i = b * kFp8Block; i < std::min(p.width, (b + 1) * kFp8Block); ++i)
        dst[i] = value[static_cast<uint8_t>(src[i])] * scale;
    }
  }
}

void LayerCache::gather(KvPart part, int64_t t0, int64_t t1, float* dst) const {
  const int64_t w = width(part);
  if (t0 < 0 || t1 > capacity())
    fail("internal: KV cache read of tokens [{}, {}) beyond the {} reserved", t0, t1, capacity());
  for (int64_t t = t0; t < t1; ++t) read_row(part, t, dst + (t - t0) * w);
}

void LayerCache::gather(KvPart part, std::span<const int32_t> tokens, float* dst) const {
  const int64_t w = width(part), reserved = capacity();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= reserved)
      fail("internal: KV cache read of token {} beyond the {} reserved", tokens[i], reserved);
    read_row(part, tokens[i], dst + static_cast<int64_t>(i) * w);
  }
}

KvCache::KvCache(const ModelConfig& config, KvDType dtype, int64_t page_tokens) : dtype_(dtype) {
  layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t L = 0; L < config.num_hidden_layers; ++L)
    layers.emplace_back(dtype, page_tokens, config.kv_lora_rank, config.qk_rope_head_dim,
                        index_width(config, L));
}

size_t KvCache::bytes_per_token(const ModelConfig& config, KvDType dtype) {
  size_t n = 0;
  for (int64_t L = 0; L < config.num_hidden_layers; ++L)
    n += row_bytes(dtype, KvPart::kLatent, config.kv_lora_rank) +
         row_bytes(dtype, KvPart::kRope, config.qk_rope_head_dim) +
         row_bytes(dtype, KvPart::kIndex, index_width(config, L));
  return n;
}

}  // namespace whittle
