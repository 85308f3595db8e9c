// dense16_gemv against the double-precision reference on every kernel set this CPU runs, BF16 and
// F16, on awkward shapes (K below, at and above the vector width, N not a multiple of the row
// block, one to eight activation rows and batches of them, K over several of the 8-row kernel's
// chunks and not a multiple of them), with and without a pool; linear_fast picks it for few rows;
// dense16_rows computes any range of columns alone.
#include "ops/dense16_gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ops/linear.h"
#include "util/testing.h"
#include "util/thread_pool.h"

namespace whittle {
namespace {

struct Stored {
  std::vector<uint16_t> bits;
  Weight weight;
};

Stored random_weight(DType dtype, int64_t N, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  Stored s;
  s.bits.resize(static_cast<size_t>(N * K));
  for (uint16_t& b : s.bits) b = dtype == DType::BF16 ? f32_to_bf16(d(rng)) : f32_to_f16(d(rng));
  s.weight = Weight::dense("m", dtype, std::as_bytes(std::span<const uint16_t>(s.bits)), N, K);
  return s;
}

TEST(Dense16Gemv, MatchesTheReferenceOnEveryIsaAndShape) {
  ThreadPool pool(2);
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  uint32_t seed = 1;
  for (DType dtype : {DType::BF16, DType::F16})
    for (int64_t N : {1, 5, 37})
      for (int64_t K : {1, 15, 16, 17, 100, 1001, 4096})
        for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 8, 13, 32}) {
          Stored s = random_weight(dtype, N, K, seed++);
          std::vector<float> x(static_cast<size_t>(M * K)), ref(static_cast<size_t>(M * N));
          for (float& v : x) v = d(rng);
          linear_reference(s.weight, x.data(), M, ref.data());
          const std::vector<float> dense = s.weight.to_f32();
          for (Isa isa : supported_isas()) {
            SCOPED_TRACE(
                fmt::format("{} {} N {} K {} M {}", isa_name(isa), dtype_name(dtype), N, K, M));
            std::vector<float> y(ref.size(), 2.0f);
            dense16_gemv(s.weight, x.data(), M, y.data(), /*accumulate=*/true, &pool, isa);
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double magnitude = 0.0;
                for (int64_t k = 0; k < K; ++k)
                  magnitude += std::fabs(dense[n * K + k] * x[m * K + k]);
                // float sums of K terms: a few ulps of the magnitude.
                ASSERT_NEAR(y[m * N + n], ref[m * N + n] + 2.0f, 1e-6 * magnitude + 1e-6);
              }
          }
        }
}

// What makes batched decoding change nothing but speed: a row gives the same bits alone and with
// any other rows, in linear_fast's groups too.
TEST(Dense16Gemv, ARowIsTheSameBitsAloneOrBatched) {
  ThreadPool pool(2);
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t K : {15, 100, 1000}) {
    Stored s = random_weight(DType::BF16, 37, K, static_cast<uint32_t>(K));
    const int64_t M = kDense16BatchRows;
    std::vector<float> x(static_cast<size_t>(M * K)), batched(static_cast<size_t>(M * 37));
    for (float& v : x) v = d(rng);
    linear_fast(s.weight, x.data(), M, batched.data(), false, &pool);
    for (int64_t m = 0; m < M; ++m) {
      std::vector<float> alone(37);
      linear_fast(s.weight, &x[m * K], 1, alone.data(), false, &pool);
      ASSERT_EQ(alone, std::vector<float>(batched.begin() + m * 37, batched.begin() + m * 37 + 37))
          << "K " << K << " row " << m;
    }
  }
}

// The MoE layer's pieces: any range of W's rows, on the calling thread, gives the same bits as the
// whole product.
TEST(Dense16Gemv, ARangeOfRowsIsTheSameBitsAsTheWhole) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t M : {1, 5, 13}) {
    Stored s = random_weight(DType::BF16, 37, 100, static_cast<uint32_t>(M));
    std::vector<float> x(static_cast<size_t>(M * 100)), whole(static_cast<size_t>(M * 37));
    for (float& v : x) v = d(rng);
    dense16_gemv(s.weight, x.data(), M, whole.data(), false, nullptr);
    Dense16Acts acts;
    dense16_prepare(s.weight, x.data(), M, acts);
    std::vector<float> pieces(whole.size(), 0.0f);
    for (int64_t n0 = 0; n0 < 37; n0 += 9)
      dense16_rows(s.weight, acts, n0, std::min<int64_t>(37, n0 + 9), pieces.data(), false);
    EXPECT_EQ(pieces, whole) << "M " << M;
  }
  // Activations prepared for another dtype (F16 weights skip the BF16 kernel's even/odd split).
  Stored bf16 = random_weight(DType::BF16, 8, 64, 1), f16 = random_weight(DType::F16, 8, 64, 2);
  std::vector<float> x(64, 0.5f), y(8);
  Dense16Acts acts;
  dense16_prepare(f16.weight, x.data(), 1, acts);
  expect_error([&] { dense16_rows(bf16.weight, acts, 0, 8, y.data(), false); },
               {"dense16_rows", "F16"});
}

TEST(Dense16Gemv, LinearFastTakesDecodeBatchesOnly) {
  Stored s = random_weight(DType::BF16, 8, 64, 9);
  EXPECT_TRUE(dense16_supported(s.weight));
  constexpr int64_t M = kDense16BatchRows + 1;  // more rows than a decode batch: sgemm
  std::vector<float> x(64 * M, 0.5f), fast(8 * M), ref(8 * M);
  linear_fast(s.weight, x.data(), M, fast.data());
  linear(s.weight, x.data(), M, ref.data());
  EXPECT_EQ(fast, ref);
  // Data at an odd address (not a safetensors layout) is left to the converting path.
  std::vector<std::byte> odd(1 + 8 * 64 * 2);
  Weight w = Weight::dense("m", DType::BF16, std::span<const std::byte>(odd).subspan(1), 8, 64);
  EXPECT_FALSE(dense16_supported(w));
  expect_error([&] { dense16_gemv(w, x.data(), 1, fast.data(), false, nullptr); },
               {"m", "dense16_gemv"});
}

}  // namespace
}  // namespace whittle
