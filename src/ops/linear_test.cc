// linear() against linear_reference (whole-weight conversion, double accumulation) for every
// stored format on awkward shapes, and its results independent of the thread count.
#include "ops/linear.h"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <cmath>

#include <random>

#include "util/thread_pool.h"

namespace whittle {
namespace {

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

struct Formats {
  std::vector<uint16_t> bf16;
  std::vector<uint8_t> fp8;
  std::vector<float> fp8_scale;
  std::vector<int32_t> qweight, qzeros;
  std::vector<uint16_t> scales;
  std::vector<Weight> weights;
};

// The same [N, K] shape in each format, filled with random values.
Formats make_formats(int64_t N, int64_t K, std::mt19937& rng) {
  Formats f;
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(N * K));
  for (float& v : values) v = d(rng);
  for (float v : values) f.bf16.push_back(f32_to_bf16(v));
  for (size_t i = 0; i < values.size(); ++i) f.fp8.push_back(static_cast<uint8_t>(rng() % 0x7e));
  const int64_t br = (N + 127) / 128, bc = (K + 127) / 128;
  for (int64_t i = 0; i < br * bc; ++i) f.fp8_scale.push_back(d(rng));
  f.weights.push_back(Weight::owned_f32("f32", values, N, K));
  f.weights.push_back(Weight::dense("bf16", DType::BF16, bytes_of(f.bf16), N, K));
  f.weights.push_back(Weight::fp8_block("fp8", std::as_bytes(std::span(f.fp8)), N, K, DType::F32,
                                        bytes_of(f.fp8_scale)));
  if (N % 8 == 0 && K % 8 == 0) {
    const int64_t G = K % 32 == 0 ? 32 : K, groups = K / G;
    for (int64_t i = 0; i < K / 8 * N; ++i) f.qweight.push_back(static_cast<int32_t>(rng()));
    for (int64_t i = 0; i < groups * N / 8; ++i) f.qzeros.push_back(static_cast<int32_t>(rng()));
    for (int64_t i = 0; i < groups * N; ++i) f.scales.push_back(f32_to_f16(0.01f * d(rng)));
    f.weights.push_back(Weight::gptq(
        "gptq",
        GptqTensors{
            bytes_of(f.qweight), bytes_of(f.qzeros), bytes_of(f.scales), {}, DType::F16, groups},
        N, K, GptqParams{4, G, false}));
  }
  return f;
}

TEST(Linear, EveryFormatMatchesTheReferenceAndIgnoresTheThreadCount) {
  ThreadPool one(1), two(2);
  std::mt19937 rng(11);
  struct Shape {
    int64_t M, N, K;
  };
  // One row (decode), N not a multiple of the block, K below and above a block's width, a wide
  // product that is split over the pool, and outputs spanning many row blocks.
  for (Shape s : {Shape{1, 8, 8}, Shape{3, 40, 200}, Shape{1, 1000, 64}, Shape{7, 264, 136},
                  Shape{33, 520, 256}, Shape{2, 3000, 72}}) {
    Formats f = make_formats(s.N, s.K, rng);
    std::normal_distribution<float> d;
    std::vector<float> x(static_cast<size_t>(s.M * s.K));
    for (float& v : x) v = d(rng);
    for (const Weight& w : f.weights) {
      SCOPED_TRACE(fmt::format("{} M {} N {} K {}", w.module(), s.M, s.N, s.K));
      std::vector<float> want(static_cast<size_t>(s.M * s.N), 0.5f), y1 = want, y2 = want;
      linear_reference(w, x.data(), s.M, want.data(), /*accumulate=*/true);
      linear(w, x.data(), s.M, y1.data(), true, &one);
      linear(w, x.data(), s.M, y2.data(), true, &two);
      EXPECT_EQ(y1, y2);  // bit for bit: blocks depend on K only
      double worst = 0, scale = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(y1[i]) - want[i]));
        scale = std::max(scale, std::abs(static_cast<double>(want[i])));
      }
      // float32 accumulation over K terms against double: at most 4.6e-8 x scale x sqrt(K)
      // achieved over these shapes and formats.
      EXPECT_LT(worst, 1e-6 * scale * std::sqrt(static_cast<double>(s.K))) << worst;
      std::vector<float> plain(static_cast<size_t>(s.M * s.N));
      linear(w, x.data(), s.M, plain.data(), false, &two);
      for (size_t i = 0; i < plain.size(); ++i) ASSERT_NEAR(plain[i] + 0.5f, y2[i], 1e-4f * scale);
    }
  }
}

}  // namespace
}  // namespace whittle
