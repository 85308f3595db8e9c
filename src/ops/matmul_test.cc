// The BLAS-backed products against the scalar reference on random shapes, awkward ones included.
#include "ops/matmul.h"

#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace whittle {
namespace {

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(Matmul, NtMatchesReferenceOnAwkwardShapes) {
  std::mt19937 rng(7);
  const int64_t shapes[][3] = {{1, 1, 1},    {1, 7, 3},    {3, 1, 5},
                               {1, 129, 65}, {5, 128, 64}, {17, 33, 250},
                               {64, 300, 1}, {2, 1000, 3}, {31, 127, 129}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], K = s[1], N = s[2];
    auto x = random_vector(M * K, rng), w = random_vector(N * K, rng),
         y0 = random_vector(M * N, rng);
    for (bool acc : {false, true}) {
      std::vector<float> fast = y0, ref = y0;
      matmul_nt(x.data(), w.data(), fast.data(), M, K, N, acc);
      matmul_nt_reference(x.data(), w.data(), ref.data(), M, K, N, acc);
      for (int64_t i = 0; i < M * N; ++i)
        ASSERT_NEAR(fast[i], ref[i], 1e-4f * std::sqrt(static_cast<float>(K)) + 1e-5f)
            << "M=" << M << " K=" << K << " N=" << N << " acc=" << acc << " i=" << i;
    }
  }
}

// Split by column blocks over a pool: every shape above the parallel threshold, widths that are
// not multiples of the block, and pools larger than the number of blocks.
TEST(Matmul, PooledNtMatchesReference) {
  std::mt19937 rng(11);
  const int64_t shapes[][3] = {{1, 1024, 300}, {1, 4096, 4096}, {3, 256, 4097}, {64, 64, 64},
                               {128, 128, 17}, {7, 640, 1000},  {512, 256, 2},  {2, 65536, 3}};
  for (size_t threads : {2, 3, 8}) {
    ThreadPool pool(threads);
    for (const auto& s : shapes) {
      const int64_t M = s[0], K = s[1], N = s[2];
      ASSERT_GE(M * N * K, kParallelMatmulFlops) << "shape below the threshold tests nothing new";
      auto x = random_vector(M * K, rng), w = random_vector(N * K, rng),
           y0 = random_vector(M * N, rng);
      for (bool acc : {false, true}) {
        std::vector<float> fast = y0, ref = y0;
        matmul_nt(x.data(), w.data(), fast.data(), M, K, N, acc, &pool);
        matmul_nt_reference(x.data(), w.data(), ref.data(), M, K, N, acc);
        for (int64_t i = 0; i < M * N; ++i)
          ASSERT_NEAR(fast[i], ref[i], 1e-4f * std::sqrt(static_cast<float>(K)) + 1e-5f)
              << "threads=" << threads << " M=" << M << " K=" << K << " N=" << N << " acc=" << acc;
      }
    }
  }
}

TEST(Matmul, NnIsNtOfTheTranspose) {
  std::mt19937 rng(3);
  const int64_t M = 6, K = 37, N = 11;
  auto x = random_vector(M * K, rng), w = random_vector(K * N, rng);
  std::vector<float> wt(N * K);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) wt[n * K + k] = w[k * N + n];
  std::vector<float> a(M * N), b(M * N);
  matmul_nn(x.data(), w.data(), a.data(), M, K, N);
  matmul_nt_reference(x.data(), wt.data(), b.data(), M, K, N);
  for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(a[i], b[i], 1e-4f);
}

}  // namespace
}  // namespace whittle

namespace whittle {
namespace {

// matmul_tn (the weight gradient dyᵀ · x) and the pooled matmul_nn (the input gradient dy · W)
// against plain loops, on one thread and split over pools, below and above the parallel threshold.
TEST(Matmul, TnAndPooledNnMatchReference) {
  std::mt19937 rng(19);
  const int64_t shapes[][3] = {{1, 1, 1},       {3, 1, 5},     {17, 33, 250},
                               {31, 127, 129},  {128, 256, 3}, {64, 64, 64},
                               {384, 256, 256}, {2, 4096, 65}, {250, 7, 1000}};
  for (size_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (const auto& s : shapes) {
      const int64_t M = s[0], K = s[1], N = s[2];
      // tn: x [K, M], w [K, N]
      auto x = random_vector(K * M, rng), w = random_vector(K * N, rng),
           y0 = random_vector(M * N, rng);
      // nn against nt of the transpose
      auto a = random_vector(M * K, rng);
      std::vector<float> wt(N * K);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) wt[n * K + k] = w[k * N + n];
      for (bool acc : {false, true}) {
        std::vector<float> fast = y0, ref = y0;
        matmul_tn(x.data(), w.data(), fast.data(), M, K, N, acc, &pool);
        matmul_tn_reference(x.data(), w.data(), ref.data(), M, K, N, acc);
        for (int64_t i = 0; i < M * N; ++i)
          ASSERT_NEAR(fast[i], ref[i], 1e-4f * std::sqrt(static_cast<float>(K)) + 1e-5f)
              << "tn threads=" << threads << " M=" << M << " K=" << K << " N=" << N
              << " acc=" << acc << " i=" << i;
        fast = y0;
        ref = y0;
        matmul_nn(a.data(), w.data(), fast.data(), M, K, N, acc, &pool);
        matmul_nt_reference(a.data(), wt.data(), ref.data(), M, K, N, acc);
        for (int64_t i = 0; i < M * N; ++i)
          ASSERT_NEAR(fast[i], ref[i], 1e-4f * std::sqrt(static_cast<float>(K)) + 1e-5f)
              << "nn threads=" << threads << " M=" << M << " K=" << K << " N=" << N
              << " acc=" << acc << " i=" << i;
      }
    }
  }
}

TEST(Matmul, TnOverNoRowsIsZero) {
  std::vector<float> y(6, 5.0f);
  matmul_tn(nullptr, nullptr, y.data(), 2, 0, 3);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace whittle
