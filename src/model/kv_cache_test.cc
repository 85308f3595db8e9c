// LayerCache's storage formats read back value for value: f32 exact, bf16 the nearest bfloat16,
// fp8 E4M3 codes times one float32 scale per 128 values (absmax / 448) with the rope key in bf16,
// across page boundaries, a short last block and an all-zero row, by range and by token list. The
// expectation is built from the torch-checked E4M3 / bf16 conversions of tensor/dtype, and fp8 is
// also held to E4M3's own rounding bound, independent of any decoder.
//
// The page pool counts every cache's pages against its budget (a shared page once) and refuses a
// reservation past it without changing anything; a shared prefix reads back what its donor holds,
// later writes of either cache stay its own (also after truncating into a shared page), and the
// shared pages outlive the donor. On the bundled model, a prompt run over a shared prefix or after
// truncating gives the logits and greedy tokens of running it whole.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>

#include "model/glm_moe_dsa.h"
#include "serve/generation.h"
#include "serve/sampler.h"
#include "tensor/dtype.h"
#include "util/testing.h"
#include "util/thread_pool.h"

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

// The bundled model's cache shape: 6 layers, some without indexer keys (IndexShare).
const std::filesystem::path kBundled =
    std::filesystem::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5";
constexpr KvPart kParts[] = {KvPart::kLatent, KvPart::kRope, KvPart::kIndex};
constexpr KvDType kDTypes[] = {KvDType::kF32, KvDType::kBF16, KvDType::kFP8};

// The values of token t of a part of a layer under `seed`: the same wherever they are stored.
std::vector<float> token_values(int seed, size_t layer, KvPart part, int64_t t, int64_t width) {
  std::mt19937 rng(static_cast<uint32_t>(seed * 1000003 + layer * 7919 +
                                         static_cast<size_t>(part) * 131 + static_cast<size_t>(t)));
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(width));
  for (float& x : v) x = d(rng);
  return v;
}

// Stores tokens [t0, t1) in every part of every layer (reserving room first).
void fill(KvCache& cache, int64_t t0, int64_t t1, int seed) {
  cache.reserve(t1);
  for (size_t L = 0; L < cache.layers.size(); ++L) {
    LayerCache& lc = cache.layers[L];
    for (KvPart part : kParts)
      for (int64_t t = t0; t < t1; ++t)
        if (lc.width(part) > 0)
          lc.store(part, t, token_values(seed, L, part, t, lc.width(part)).data());
    lc.length = t1;
  }
}

// Every part of every layer of tokens [0, tokens) as read back.
std::vector<float> read_all(const KvCache& cache, int64_t tokens) {
  std::vector<float> all;
  for (const LayerCache& lc : cache.layers)
    for (KvPart part : kParts) {
      std::vector<float> rows(static_cast<size_t>(tokens * lc.width(part)));
      lc.gather(part, 0, tokens, rows.data());
      all.insert(all.end(), rows.begin(), rows.end());
    }
  return all;
}

TEST(KvCache, PoolCountsThePagesOfEveryCache) {
  const ModelConfig c = ModelConfig::load(kBundled);
  const size_t page = KvCache(c, KvDType::kF32, 16).bytes_to_reserve(1);  // all layers, one page
  ASSERT_GT(page, 0u);
  auto pool = std::make_shared<KvPagePool>(10 * page);
  EXPECT_EQ(pool->budget(), 10 * page);
  EXPECT_EQ(pool->available(), 10 * page);
  {
    KvCache a(c, KvDType::kF32, 16, pool), b(c, KvDType::kF32, 16, pool);
    EXPECT_EQ(a.page_tokens(), 16);
    EXPECT_EQ(a.bytes_to_reserve(40), 3 * page);
    a.reserve(40);
    EXPECT_EQ(a.bytes(), 3 * page);
    EXPECT_EQ(a.bytes_to_reserve(48), 0u);  // room already
    EXPECT_EQ(b.bytes_to_reserve(70), 5 * page);
    b.reserve(70);
    EXPECT_EQ(pool->used(), a.bytes() + b.bytes());
    EXPECT_EQ(pool->available(), 2 * page);

    // Past the budget: refused whole, naming the bytes asked for and the budget.
    EXPECT_EQ(a.bytes_to_reserve(96), 3 * page);
    try {
      a.reserve(96);
      ADD_FAILURE() << "no KvBudgetError";
    } catch (const KvBudgetError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(std::to_string(3 * page)), std::string::npos) << what;
      EXPECT_NE(what.find(std::to_string(10 * page)), std::string::npos) << what;
    }
    EXPECT_EQ(pool->used(), 8 * page);
    EXPECT_EQ(a.bytes(), 3 * page);
    for (const LayerCache& lc : a.layers) EXPECT_EQ(lc.capacity(), 48);
    EXPECT_THROW(a.layers[0].reserve(16 * 1000), KvBudgetError);  // one layer alone, too
    EXPECT_EQ(a.layers[0].capacity(), 48);
    EXPECT_EQ(pool->used(), 8 * page);

    // What fits is taken, exactly as bytes_to_reserve said.
    const size_t want = a.bytes_to_reserve(80);
    a.reserve(80);
    EXPECT_EQ(pool->used(), 8 * page + want);
    EXPECT_EQ(pool->available(), 0u);

    a.clear();
    EXPECT_EQ(a.bytes(), 0u);
    EXPECT_EQ(pool->used(), b.bytes());
    // A copy holds pages of its own, counted; a move hands them over.
    KvCache copy = b;
    EXPECT_EQ(pool->used(), 2 * b.bytes());
    KvCache moved = std::move(copy);
    EXPECT_EQ(pool->used(), 2 * b.bytes());
    EXPECT_EQ(moved.bytes(), b.bytes());
  }
  EXPECT_EQ(pool->used(), 0u);  // destruction gives every page back
  KvPagePool unlimited(0);
  EXPECT_EQ(unlimited.available(), std::numeric_limits<size_t>::max());
}

TEST(KvCache, SharedPrefixReadsBackAndLaterWritesStayApart) {
  const ModelConfig c = ModelConfig::load(kBundled);
  constexpr int64_t kPage = 16, kDonor = 40, kMore = 20;
  for (KvDType dtype : kDTypes)
    for (int64_t tokens : {int64_t{32}, int64_t{37}, int64_t{0},
                           kDonor}) {  // a page boundary, inside a page, none, all
      SCOPED_TRACE(std::string(kv_dtype_name(dtype)) + " sharing " + std::to_string(tokens));
      auto pool = std::make_shared<KvPagePool>(0);
      const size_t page = KvCache(c, dtype, kPage).bytes_to_reserve(1);
      auto donor = std::make_unique<KvCache>(c, dtype, kPage, pool);
      fill(*donor, 0, kDonor, 1);
      const size_t donor_bytes = pool->used();
      ASSERT_EQ(donor_bytes, 3 * page);

      KvCache shared(c, dtype, kPage, pool);
      shared.reserve(5);  // reserved pages are given back first
      shared.share_prefix(*donor, tokens);
      EXPECT_EQ(shared.length(), tokens);
      EXPECT_TRUE(shared.consistent());
      EXPECT_EQ(read_all(shared, tokens), read_all(*donor, tokens));
      // The pages wholly inside the prefix count once; the one it ends inside is a copy.
      const size_t copied = tokens % kPage != 0 ? page : 0;
      EXPECT_EQ(pool->used(), donor_bytes + copied);
      EXPECT_EQ(shared.bytes(), static_cast<size_t>((tokens + kPage - 1) / kPage) * page);

      // Each appends its own: neither sees the other's.
      fill(shared, tokens, tokens + kMore, 2);
      fill(*donor, kDonor, kDonor + kMore, 3);
      KvCache alone_shared(c, dtype, kPage), alone_donor(c, dtype, kPage);
      fill(alone_shared, 0, tokens, 1);
      fill(alone_shared, tokens, tokens + kMore, 2);
      fill(alone_donor, 0, kDonor, 1);
      fill(alone_donor, kDonor, kDonor + kMore, 3);
      EXPECT_EQ(read_all(shared, tokens + kMore), read_all(alone_shared, tokens + kMore));
      EXPECT_EQ(read_all(*donor, kDonor + kMore), read_all(alone_donor, kDonor + kMore));

      // The shared pages outlive the donor (ASan: `make asan`); only they stay counted.
      donor.reset();
      EXPECT_EQ(pool->used(), shared.bytes());
      EXPECT_EQ(read_all(shared, tokens + kMore), read_all(alone_shared, tokens + kMore));
      shared.clear();
      EXPECT_EQ(pool->used(), 0u);
    }
}

// Truncating into a page another cache still holds: reserve copies it before the first write, and
// counts the copy in bytes_to_reserve; the other cache keeps its tokens.
TEST(KvCache, TruncatingIntoASharedPageCopiesItBeforeWriting) {
  const ModelConfig c = ModelConfig::load(kBundled);
  auto pool = std::make_shared<KvPagePool>(0);
  const size_t page = KvCache(c, KvDType::kBF16, 16).bytes_to_reserve(1);
  KvCache donor(c, KvDType::kBF16, 16, pool), shared(c, KvDType::kBF16, 16, pool);
  fill(donor, 0, 40, 1);
  shared.share_prefix(donor, 32);
  const std::vector<float> kept = read_all(shared, 32);
  donor.truncate(20);  // into page 1, which `shared` holds too
  EXPECT_EQ(donor.length(), 20);
  EXPECT_EQ(donor.bytes(), 2 * page);  // page 2 released (it held tokens 32-39 only)
  EXPECT_EQ(pool->used(), 2 * page);
  EXPECT_EQ(donor.bytes_to_reserve(30), page);                                // the copy of page 1
  EXPECT_ANY_THROW(donor.layers[0].store(KvPart::kLatent, 20, kept.data()));  // not reserved yet
  fill(donor, 20, 30, 4);
  EXPECT_EQ(pool->used(), 3 * page);
  EXPECT_EQ(read_all(shared, 32), kept);
  KvCache alone(c, KvDType::kBF16, 16);
  fill(alone, 0, 20, 1);
  fill(alone, 20, 30, 4);
  EXPECT_EQ(read_all(donor, 30), read_all(alone, 30));
}

TEST(KvCache, SharingAndTruncatingCheckTheirArguments) {
  const ModelConfig c = ModelConfig::load(kBundled);
  auto pool = std::make_shared<KvPagePool>(0);
  KvCache donor(c, KvDType::kF32, 16, pool);
  fill(donor, 0, 20, 1);
  KvCache other_pool(c, KvDType::kF32, 16), other_page(c, KvDType::kF32, 8, pool),
      other_dtype(c, KvDType::kBF16, 16, pool), full(c, KvDType::kF32, 16, pool);
  EXPECT_THROW(other_pool.share_prefix(donor, 10), Error);
  EXPECT_THROW(other_page.share_prefix(donor, 10), Error);
  EXPECT_THROW(other_dtype.share_prefix(donor, 10), Error);
  fill(full, 0, 1, 2);
  EXPECT_THROW(full.share_prefix(donor, 10), Error);  // not empty
  KvCache empty(c, KvDType::kF32, 16, pool);
  EXPECT_THROW(empty.share_prefix(donor, 21), Error);  // past the donor's length
  EXPECT_THROW(donor.truncate(21), Error);
  EXPECT_EQ(donor.length(), 20);
  // A forward pass that threw part-way left the first layers longer: truncate(length()) mends it.
  donor.layers[0].reserve(25);
  donor.layers[0].length = 25;
  EXPECT_FALSE(donor.consistent());
  donor.truncate(donor.length());
  EXPECT_TRUE(donor.consistent());
  EXPECT_EQ(donor.layers[0].capacity(), 32);
  EXPECT_EQ(donor.length(), 20);
  // A budget too small for the copied page: refused, the cache left empty and nothing counted.
  auto small = std::make_shared<KvPagePool>(KvCache(c, KvDType::kF32, 16).bytes_to_reserve(20));
  KvCache a(c, KvDType::kF32, 16, small), b(c, KvDType::kF32, 16, small);
  fill(a, 0, 20, 1);
  const size_t used = small->used();
  EXPECT_THROW(b.share_prefix(a, 10), KvBudgetError);
  EXPECT_EQ(b.length(), 0);
  EXPECT_EQ(b.bytes(), 0u);
  EXPECT_EQ(small->used(), used);
  b.share_prefix(a, 16);  // a page boundary: nothing to copy, fits
  EXPECT_EQ(small->used(), used);
  EXPECT_EQ(read_all(b, 16), read_all(a, 16));
}

// The bundled model over a shared prefix: a previous conversation ran A, then B (two turns), and a
// new request resends A + B2.
class KvCacheOnTheModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pool_ = new ThreadPool(2);
    model_ = new GlmMoeDsa(GlmMoeDsa::load(kBundled, *pool_));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete pool_;
  }
  static std::vector<int32_t> tokens(int64_t n, int64_t salt) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = (37 * i + 11 * salt + 5) % 4000;
    return ids;
  }
  static std::vector<float> last_row(const std::vector<float>& logits) {
    const size_t V = static_cast<size_t>(model_->config().vocab_size);
    return {logits.end() - static_cast<std::ptrdiff_t>(V), logits.end()};
  }
  // The greedy tokens after the cache's, the first chosen from `logits`.
  static std::vector<int32_t> greedy(KvCache& cache, const std::vector<float>& logits) {
    GenerationOptions o{.max_tokens = 8, .sampling = {.temperature = 0.0f}};
    std::vector<int32_t> out = {argmax(logits)};
    for (int32_t t : generate(*model_, cache, std::vector<int32_t>{out[0]}, o).tokens)
      out.push_back(t);
    return out;
  }
  static float max_diff(const std::vector<float>& x, const std::vector<float>& y) {
    float d = 0.0f;
    for (size_t i = 0; i < x.size(); ++i) d = std::max(d, std::fabs(x[i] - y[i]));
    return d;
  }
  static inline ThreadPool* pool_ = nullptr;
  static inline GlmMoeDsa* model_ = nullptr;
};

// Running B2 over A's shared pages is the very computation of running A, then B2, in one cache:
// the same bits, the same greedy tokens, and the donor continues as if alone. Against A + B2 in one
// prefill the logits differ by up to 8.2e-7 x max|logit| — as much as chunked prefill does without
// any sharing: a token's cached rows are bit-identical only when it ran in the same batch (from
// layer 2 on, as the first MoE layer's experts take their tokens through a gemv kernel for up to
// 4 rows and sgemm for more), and attention over a cached prefix may take the absorbed form.
TEST_F(KvCacheOnTheModel, SharedPrefixGivesTheLogitsAndTokensOfRunningItAll) {
  const ModelConfig& c = model_->config();
  // 16-token pages: an A of 48 ends on a page boundary, of 50 inside a page; 80 tokens in all are
  // more than index_topk 64, so the DSA selects among the shared keys too.
  for (int64_t a_len : {48, 50}) {
    SCOPED_TRACE("A of " + std::to_string(a_len));
    const std::vector<int32_t> a = tokens(a_len, 1), b = tokens(80 - a_len, 2),
                               b2 = tokens(80 - a_len, 3);
    std::vector<int32_t> ab2 = a;
    ab2.insert(ab2.end(), b2.begin(), b2.end());
    auto pool = std::make_shared<KvPagePool>(0);

    KvCache previous(c, KvDType::kF32, 16, pool);
    model_->prefill(a, previous);
    const std::vector<float> previous_b = last_row(model_->prefill(b, previous));
    const size_t previous_bytes = pool->used();

    KvCache shared(c, KvDType::kF32, 16, pool);
    shared.share_prefix(previous, a_len);
    const size_t page = KvCache(c, KvDType::kF32, 16).bytes_to_reserve(1);  // in every layer
    EXPECT_EQ(pool->used(), previous_bytes + (a_len % 16 != 0 ? page : 0));
    const std::vector<float> got = last_row(model_->prefill(b2, shared));

    KvCache chunked(c, KvDType::kF32, 16), whole(c, KvDType::kF32, 16);
    model_->prefill(a, chunked);
    const std::vector<float> want = last_row(model_->prefill(b2, chunked));
    const std::vector<float> want_whole = last_row(model_->prefill(ab2, whole));
    EXPECT_EQ(got, want);
    float max_abs = 0.0f;
    for (float x : want_whole) max_abs = std::max(max_abs, std::fabs(x));
    EXPECT_LE(max_diff(got, want_whole), 1e-5f * max_abs);
    EXPECT_EQ(argmax(got), argmax(want_whole));

    // Both continue, writing past their own lengths: each as if it were alone.
    const std::vector<int32_t> tokens_shared = greedy(shared, got);
    EXPECT_EQ(tokens_shared, greedy(chunked, want));
    EXPECT_EQ(tokens_shared, greedy(whole, want_whole));
    KvCache alone(c, KvDType::kF32, 16);
    model_->prefill(a, alone);
    model_->prefill(b, alone);
    EXPECT_EQ(greedy(previous, previous_b), greedy(alone, previous_b));

    // Truncated back to A, the previous conversation runs B again to the same bits.
    previous.truncate(a_len);
    EXPECT_EQ(previous.length(), a_len);
    EXPECT_EQ(last_row(model_->prefill(b, previous)), previous_b);
    // And into a page `shared` still holds: reserve copies it, and `shared` keeps its rows.
    const std::vector<float> shared_rows = read_all(shared, shared.length());
    previous.truncate(a_len - 8);
    EXPECT_GT(previous.bytes_to_reserve(a_len), 0u);
    const std::vector<float> again = last_row(model_->prefill(
        std::span<const int32_t>(a).subspan(static_cast<size_t>(a_len - 8)), previous));
    KvCache unshared(c, KvDType::kF32, 16);
    model_->prefill(a, unshared);
    unshared.truncate(a_len - 8);
    EXPECT_EQ(again,
              last_row(model_->prefill(
                  std::span<const int32_t>(a).subspan(static_cast<size_t>(a_len - 8)), unshared)));
    EXPECT_EQ(read_all(shared, shared.length()), shared_rows);
  }
}

}  // namespace
}  // namespace whittle
