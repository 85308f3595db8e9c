// int4_linear against its oracles, on every kernel set this CPU runs and on awkward shapes (one
// activation row to many, N not a multiple of the 16-row tile, K equal to the group size, a short
// last group, asymmetric zero points, bf16 scales):
// - the same int8 activations and the dequantized weight in double precision: equal to float
//   rounding, so the layout, the nibble order and the zero-point correction are exact;
// - every ISA gives the scalar kernel's bits, with and without a thread pool;
// - the float product x · Wᵀ of the reference linear: within the stated int8 bound.
#include "ops/int4_linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "ops/linear.h"
#include "tensor/gptq_testing.h"
#include "util/testing.h"
#include "util/thread_pool.h"

namespace whittle {
namespace {

struct Shape {
  int64_t M, N, K, G;
  bool sym;
  DType scale_dtype;
};

std::vector<float> random_acts(int64_t M, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (float& v : x) v = d(rng);
  if (M * K > 3) x[3] = 0.0f;  // exact zeros and outliers, as hidden states have
  if (M * K > 10) x[10] = 25.0f;
  return x;
}

const Shape kShapes[] = {
    {1, 8, 128, 128, true, DType::F16},
    {1, 40, 200, 64, false, DType::F16},
    {2, 24, 256, 128, true, DType::BF16},
    {3, 48, 96, 32, false, DType::BF16},
    {5, 136, 512, 128, true, DType::F16},
    {17, 64, 384, 128, true, DType::F16},
    {1, 256, 2048, 128, true, DType::F16},
    {4, 16, 64, 64, true, DType::BF16},
    {6, 40, 256, 128, true, DType::BF16},  // the fewest rows on one accumulator chain each
    // 16 rows and more: AMX where the CPU has it (whole 16-row blocks there, the rest on VNNI),
    // blocks of 32, 16 (group 16) and 8 (group 8), and a short last group (VNNI only)
    {16, 16, 128, 128, true, DType::F16},
    {37, 72, 256, 128, false, DType::BF16},
    {48, 24, 64, 16, true, DType::F16},
    {20, 40, 96, 8, false, DType::F16},
    {33, 40, 200, 64, true, DType::F16},
    // more rows than int4_tiles takes at once (64), with a remainder
    {130, 40, 256, 128, false, DType::F16},
    // more rows and tiles than int4_tiles runs at once (120 rows of 2048 inputs, 31 tiles): blocks
    // of rows against blocks of tiles, each with a remainder
    {130, 520, 2048, 128, true, DType::F16},
};

// A random GPTQ weight of shape s, and its packing for the kernels.
struct RandomInt4 {
  RandomInt4(const Shape& s, uint32_t seed)
      : gptq(pack_gptq(4, s.N, s.K, s.G, false, false, false, seed, s.scale_dtype)),
        weight(Weight::gptq("m", gptq.tensors(), s.N, s.K, GptqParams{4, s.G, false, s.sym})),
        packed(pack_int4(weight)) {}
  PackedGptq gptq;
  Weight weight;
  std::shared_ptr<const PackedInt4> packed;
};

TEST(Int4Linear, IntegerKernelsAreExactOnTheQuantizedActivations) {
  ThreadPool pool(2);
  uint32_t seed = 100;
  for (const Shape& s : kShapes) {
    const RandomInt4 r(s, seed++);
    const Weight& w = r.weight;
    const auto& packed = r.packed;
    const std::vector<float> dense = w.to_f32(), x = random_acts(s.M, s.K, seed++);
    Int8Acts acts;
    quantize_acts(x.data(), s.M, s.K, int4_act_block(*packed), acts);
    std::vector<float> scalar(static_cast<size_t>(s.M * s.N));
    int4_linear(*packed, acts, scalar.data(), false, nullptr, Isa::kScalar);
    for (int64_t m = 0; m < s.M; ++m)
      for (int64_t n = 0; n < s.N; ++n) {
        double exact = 0.0, magnitude = 0.0;
        for (int64_t k = 0; k < s.K; ++k) {
          const double xq = static_cast<double>(acts.scale[m * acts.groups + k / acts.group_size]) *
                            acts.q[m * s.K + k];
          exact += dense[n * s.K + k] * xq;
          magnitude += std::fabs(dense[n * s.K + k] * xq);
        }
        ASSERT_NEAR(scalar[m * s.N + n], exact, 2e-6 * magnitude + 1e-30)
            << fmt::format("M {} N {} K {} G {} at m {} n {}", s.M, s.N, s.K, s.G, m, n);
      }
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(fmt::format("{} M {} N {} K {} G {}", isa_name(isa), s.M, s.N, s.K, s.G));
      std::vector<float> y(scalar.size(), 1.0f);
      int4_linear(*packed, acts, y.data(), false, &pool, isa);
      EXPECT_EQ(y, scalar);
      int4_linear(*packed, acts, y.data(), /*accumulate=*/true, nullptr, isa);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_FLOAT_EQ(y[i], 2 * scalar[i]);
    }
  }
}

// What makes batched decoding change nothing but speed: a row gives the same bits alone and with
// other rows (its activations are quantized on their own, and its sums run in the same order).
TEST(Int4Linear, ARowIsTheSameBitsAloneOrBatched) {
  ThreadPool pool(2);
  uint32_t seed = 300;
  for (const Shape& s : kShapes) {
    const RandomInt4 r(s, seed++);
    const auto& packed = r.packed;
    const std::vector<float> x = random_acts(s.M, s.K, seed++);
    std::vector<float> batched(static_cast<size_t>(s.M * s.N)), alone(static_cast<size_t>(s.N));
    int4_linear(*packed, x.data(), s.M, batched.data(), false, &pool);
    for (int64_t m = 0; m < s.M; ++m) {
      int4_linear(*packed, &x[m * s.K], 1, alone.data(), false, &pool);
      ASSERT_EQ(alone,
                std::vector<float>(batched.begin() + m * s.N, batched.begin() + (m + 1) * s.N))
          << fmt::format("M {} N {} K {} G {} row {}", s.M, s.N, s.K, s.G, m);
    }
  }
}

TEST(Int4Linear, FloatProductIsWithinTheInt8Bound) {
  uint32_t seed = 300;
  double worst = 0.0;
  for (const Shape& s : kShapes) {
    const RandomInt4 r(s, seed++);
    const Weight& w = r.weight;
    const auto& packed = r.packed;
    const std::vector<float> x = random_acts(s.M, s.K, seed++);
    std::vector<float> fast(static_cast<size_t>(s.M * s.N)), ref(fast.size());
    int4_linear(*packed, x.data(), s.M, fast.data(), false, nullptr);
    linear_reference(w, x.data(), s.M, ref.data());
    Int8Acts acts;
    quantize_acts(x.data(), s.M, s.K, int4_act_block(*packed), acts);
    const std::vector<float> bound = int8_error_bound(w.to_f32(), s.N, acts);
    for (size_t i = 0; i < fast.size(); ++i) {
      const double err = std::fabs(fast[i] - ref[i]);
      ASSERT_LE(err, bound[i] * 1.0001 + 1e-5 * std::fabs(ref[i]) + 1e-30)
          << fmt::format("M {} N {} K {} G {} at {}", s.M, s.N, s.K, s.G, i);
      worst = std::max(worst, err / bound[i]);
    }
  }
  // Rounding errors of random sign: far inside the worst case, but not zero (the int8 path ran).
  EXPECT_GT(worst, 1e-3);
  EXPECT_LT(worst, 0.5);
}

TEST(Int4Linear, QuantizedActivationsUseTheWholeRangePerGroup) {
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f, 0, 0, 0, 0, 3.0f, 1.5f};
  Int8Acts a;
  quantize_acts(x.data(), 1, 10, 4, a);
  ASSERT_EQ(a.groups, 3);
  EXPECT_EQ(std::vector<int8_t>(a.q.begin(), a.q.begin() + 4),
            (std::vector<int8_t>{64, -127, 32, 0}));
  EXPECT_FLOAT_EQ(a.scale[0], 1.0f / 127);
  EXPECT_EQ(a.sum[0], 64 - 127 + 32);
  EXPECT_EQ(a.scale[1], 0.0f);  // an all-zero group
  EXPECT_EQ(a.sum[1], 0);
  EXPECT_EQ(a.q[8], 127);  // the short last group has its own scale
  EXPECT_EQ(a.q[9], 64);
}

TEST(Int4Linear, QuantizedActivationsAreTheSameOnEveryIsa) {
  // Blocks of 32, 16 and 8 (scalar only) and a short last block; ties of the rounding (127 · k.5 /
  // amax exactly), zeros, outliers, a NaN and an inf in their own rows.
  const int64_t M = 6, K = 200;
  std::vector<float> x = random_acts(M, K, 7);
  for (int64_t k = 0; k < 32; ++k) x[K + k] = k == 0 ? 127.0f : static_cast<float>(k % 9) - 4.5f;
  std::fill_n(&x[2 * K + 32], 32, 0.0f);
  x[3 * K + 40] = std::nanf("");
  x[4 * K + 70] = std::numeric_limits<float>::infinity();
  for (int64_t group : {32, 16, 8, 64}) {
    Int8Acts scalar;
    quantize_acts(x.data(), M, K, group, scalar, Isa::kScalar);
    EXPECT_EQ(scalar.q[K + 1], -4);  // -3.5 → -4: ties to even
    EXPECT_EQ(scalar.q[K + 2], -2);  // -2.5 → -2
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(fmt::format("{} group {}", isa_name(isa), group));
      Int8Acts a;
      quantize_acts(x.data(), M, K, group, a, isa);
      EXPECT_EQ(a.q, scalar.q);
      EXPECT_EQ(a.sum, scalar.sum);
      for (size_t i = 0; i < a.scale.size(); ++i) ASSERT_EQ(a.scale[i], scalar.scale[i]) << i;
    }
  }
}

}  // namespace
}  // namespace whittle
