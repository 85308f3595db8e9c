// LayerCache's storage formats read back value for value: f32 exact, bf16 the nearest bfloat16,
// fp8 E4M3 codes times one float32 scale per 128 values (absmax / 448) with the rope key in bf16,
// across page boundaries, a short last block and an all-zero row, by range and by token list. The
// expectation is built from the torch-checked E4M3 / bf16 conversions of tensor/dtype, and fp8 is
// also held to E4M3's own rounding bound, independent of any decoder.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "tensor/dtype.h"

namespace whittle {
namespace {

constexpr int64_t kLatent = 300, kRope = 24, kIndex = 130, kTokens = 10;

std::vector<float> row_values(int64_t t, int64_t width, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(width));
  if (t == 3) return v;                // all zero: scale 1, codes 0
  for (int64_t i = 0; i < width; ++i)  // magnitudes that differ from block to block
    v[i] = d(rng) * std::pow(10.0f, static_cast<float>((t + i / 128) % 5 - 2));
  return v;
}

std::vector<float> expected(KvDType dtype, KvPart part, const std::vector<float>& v) {
  std::vector<float> e(v.size());
  if (dtype == KvDType::kF32) return v;
  if (dtype == KvDType::kBF16 || part == KvPart::kRope) {
    for (size_t i = 0; i < v.size(); ++i) e[i] = bf16_to_f32(f32_to_bf16(v[i]));
    return e;
  }
  for (size_t b0 = 0; b0 < v.size(); b0 += 128) {
    const size_t b1 = std::min(v.size(), b0 + 128);
    float amax = 0.0f;
    for (size_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    for (size_t i = b0; i < b1; ++i) e[i] = f8e4m3_to_f32(f32_to_f8e4m3(v[i] / scale)) * scale;
  }
  return e;
}

TEST(KvCache, EveryFormatReadsBackWhatItStored) {
  for (KvDType dtype : {KvDType::kF32, KvDType::kBF16, KvDType::kFP8}) {
    SCOPED_TRACE(std::string(kv_dtype_name(dtype)));
    LayerCache cache(dtype, /*page_tokens=*/4, kLatent, kRope, kIndex);
    cache.reserve(kTokens);
    ASSERT_EQ(cache.capacity(), 12);
    std::mt19937 rng(5);
    std::vector<std::vector<float>> stored[3];
    for (int64_t t = 0; t < kTokens; ++t)
      for (KvPart part : {KvPart::kLatent, KvPart::kRope, KvPart::kIndex}) {
        stored[static_cast<int>(part)].push_back(row_values(t, cache.width(part), rng));
        cache.store(part, t, stored[static_cast<int>(part)].back().data());
      }
    for (KvPart part : {KvPart::kLatent, KvPart::kRope, KvPart::kIndex}) {
      const int64_t W = cache.width(part);
      std::vector<float> all(static_cast<size_t>(kTokens * W));
      cache.gather(part, 0, kTokens, all.data());
      const std::vector<int32_t> backwards = {9, 4, 3, 0};
      std::vector<float> picked(backwards.size() * static_cast<size_t>(W));
      cache.gather(part, backwards, picked.data());
      for (int64_t t = 0; t < kTokens; ++t) {
        const std::vector<float>& v = stored[static_cast<int>(part)][static_cast<size_t>(t)];
        const std::vector<float> e = expected(dtype, part, v);
        for (int64_t i = 0; i < W; ++i) {
          const float got = all[t * W + i];
          ASSERT_EQ(got, e[i]) << "token " << t << " part " << static_cast<int>(part) << " i " << i;
          if (dtype == KvDType::kFP8 && part != KvPart::kRope) {
            // E4M3 rounds to 3 mantissa bits: half an ulp is 1/16 of the value, or of the smallest
            // normal (2^-6, times the block's scale) below it.
            float amax = 0.0f;
            for (int64_t j = i / 128 * 128; j < std::min(W, i / 128 * 128 + 128); ++j)
              amax = std::max(amax, std::fabs(v[j]));
            ASSERT_LE(std::fabs(got - v[i]),
                      std::fabs(v[i]) / 16 + amax / 448 * std::ldexp(1.0f, -10) + 1e-30f);
          }
        }
      }
      for (size_t k = 0; k < backwards.size(); ++k)
        for (int64_t i = 0; i < W; ++i) ASSERT_EQ(picked[k * W + i], all[backwards[k] * W + i]);
    }
  }
}

TEST(KvCache, StoringPastTheReservedTokensIsAnError) {
  LayerCache cache(KvDType::kFP8, 4, kLatent, kRope, kIndex);
  cache.reserve(3);
  std::vector<float> v(kLatent, 1.0f);
  EXPECT_NO_THROW(cache.store(KvPart::kLatent, 3, v.data()));  // the page holds 4
  EXPECT_ANY_THROW(cache.store(KvPart::kLatent, 4, v.data()));
}

}  // namespace
}  // namespace whittle
