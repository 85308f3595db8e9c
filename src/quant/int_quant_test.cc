// The full-range symmetric grid (int_quant.h), the GPTQ packer (gptq_pack.h) read back through the
// checkpoint reader, and AutoRound's fake-quantization gradients (fake_quant.h) against
// auto-round's own op under torch autograd (tests/golden/fake_quant).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "io/npy.h"
#include "quant/autoround.h"
#include "quant/fake_quant.h"
#include "quant/gptq_pack.h"
#include "quant/int_quant.h"
#include "tensor/dtype.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

std::vector<float> random_bf16(int64_t n, uint64_t seed, float scale = 0.05f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = round_to_bf16(d(rng));
  return w;
}

TEST(IntQuant, ScaleMapsTheLargerExtremeToMinusEight) {
  // Positive branch: |lo| > hi, so lo maps to -8 and the scale is positive.
  EXPECT_EQ(f16_to_f32(full_range_scale(-0.8f, 0.5f, 1, 1, 4)), f16_to_f32(f32_to_f16(0.1f)));
  // Negative branch: hi > |lo|, hi maps to -8.
  EXPECT_EQ(f16_to_f32(full_range_scale(-0.5f, 0.8f, 1, 1, 4)), -f16_to_f32(f32_to_f16(0.1f)));
  // A tie goes negative.
  EXPECT_LT(f16_to_f32(full_range_scale(-0.8f, 0.8f, 1, 1, 4)), 0.0f);
  // Clip factors shrink the chosen side: beta on lo, alpha on hi.
  EXPECT_EQ(f16_to_f32(full_range_scale(-0.8f, 0.5f, 1, 0.5f, 4)),
            -f16_to_f32(f32_to_f16(0.5f / 8)));
  // An all-zero group (lo = hi = 0, also -0) gets +fp16(1e-5), the subnormal 1.0014e-5.
  EXPECT_FLOAT_EQ(f16_to_f32(full_range_scale(0.0f, 0.0f, 1, 1, 4)), 1.0013580322265625e-05f);
  EXPECT_FLOAT_EQ(f16_to_f32(full_range_scale(-0.0f, 0.0f, 1, 1, 4)), 1.0013580322265625e-05f);
  // A tiny negative scale is clamped to -fp16(1e-5).
  EXPECT_FLOAT_EQ(f16_to_f32(full_range_scale(-1e-6f, 4e-5f, 1, 1, 4)), -1.0013580322265625e-05f);
}

TEST(IntQuant, RoundsHalfToEvenAndClamps) {
  const QuantSpec spec{4, 128};
  EXPECT_EQ(quantize_value(2.5f, 1.0f, 0.0f, spec), 2);
  EXPECT_EQ(quantize_value(3.5f, 1.0f, 0.0f, spec), 4);
  EXPECT_EQ(quantize_value(-2.5f, 1.0f, 0.0f, spec), -2);
  EXPECT_EQ(quantize_value(7.6f, 1.0f, 0.0f, spec), 7);
  EXPECT_EQ(quantize_value(-9.0f, 1.0f, 0.0f, spec), -8);
  EXPECT_EQ(quantize_value(1.0f, 1.0f, 0.5f, spec), 2);  // 1.5 -> 2
}

TEST(IntQuant, RtnCodesReproduceTheWeightWithinAStep) {
  for (const auto& [rows, cols, group] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {3, 256, 128}, {5, 96, 32}, {1, 40, 128}, {2, 200, 64}, {4, 64, -1}}) {
    const QuantSpec spec{4, group};
    const std::vector<float> w = random_bf16(rows * cols, static_cast<uint64_t>(cols));
    const QuantizedLinear q = quantize_rtn("m", w.data(), rows, cols, spec);
    ASSERT_EQ(q.groups(), spec.groups(cols));
    const std::vector<float> d = q.dequantize();
    int negative = 0;
    for (int64_t n = 0; n < rows; ++n)
      for (int64_t k = 0; k < cols; ++k) {
        const float s = q.scale(n, k / spec.group(cols));
        negative += s < 0;
        // Half a step, except at qmax: the smaller extreme can reach +8 steps, clamped to +7.
        const bool top = q.q[static_cast<size_t>(n * cols + k)] == spec.qmax();
        EXPECT_LE(std::abs(d[n * cols + k] - w[n * cols + k]), std::abs(s) * (top ? 1.0f : 0.5f))
            << rows << "x" << cols << " g" << group << " at " << n << "," << k;
      }
    EXPECT_GT(negative, 0) << "full-range scales come with both signs";
  }
}

// Packs random codes and reads them back through the checkpoint reader (Weight::gptq), which must
// give exactly scale * code; every one of the 16 codes and both scale signs appear.
TEST(GptqPack, RoundTripsThroughTheReaderOnAwkwardShapes) {
  std::mt19937_64 rng(7);
  for (const auto& [rows, cols, group, bits] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, int>>{{8, 128, 128, 4},
                                                               {96, 256, 128, 4},
                                                               {32, 64, 32, 4},
                                                               {8, 8, -1, 4},
                                                               {40, 96, 32, 8},
                                                               {1 * 8, 1024, 128, 4}}) {
    const QuantSpec spec{bits, group};
    QuantizedLinear q{"layer.proj", rows, cols, spec, {}, {}};
    q.q.resize(static_cast<size_t>(rows * cols));
    std::uniform_int_distribution<int> code(spec.qmin(), spec.qmax());
    for (auto& c : q.q) c = static_cast<int8_t>(code(rng));
    q.q[0] = static_cast<int8_t>(spec.qmin());
    q.q[1] = static_cast<int8_t>(spec.qmax());
    std::normal_distribution<float> s(0.0f, 0.01f);
    q.scales.resize(static_cast<size_t>(rows * q.groups()));
    for (auto& x : q.scales) x = f32_to_f16(s(rng));
    const GptqPacked p = pack_gptq(q);
    EXPECT_EQ(p.qweight.size(), static_cast<size_t>(cols / (32 / bits) * rows));
    const uint32_t zeros = bits == 4 ? 0x77777777u : 0x7F7F7F7Fu;
    for (int32_t z : p.qzeros) EXPECT_EQ(static_cast<uint32_t>(z), zeros);
    const std::vector<float> read = p.view("layer.proj").to_f32();
    EXPECT_EQ(read, q.dequantize()) << rows << "x" << cols << " g" << group << " b" << bits;
  }
}

TEST(GptqPack, LowestInputInTheLowestNibble) {
  // The spec's example: codes u = 0..7 for k = 0..7 of one column pack to 0x76543210.
  QuantizedLinear q{"m", 8, 8, {4, -1}, {}, {}};
  q.q.assign(64, 0);
  for (int64_t k = 0; k < 8; ++k) q.q[static_cast<size_t>(3 * 8 + k)] = static_cast<int8_t>(k - 8);
  q.scales.assign(8, f32_to_f16(1.0f));
  const GptqPacked p = pack_gptq(q);
  EXPECT_EQ(static_cast<uint32_t>(p.qweight[3]), 0x76543210u);
  EXPECT_EQ(static_cast<uint32_t>(p.qweight[0]), 0x88888888u);
}

TEST(GptqPack, RefusesWhatTheFormatCannotHold) {
  QuantizedLinear q{"model.layers.0.mlp.down_proj", 8, 12, {4, -1}, {}, {}};
  q.q.assign(96, 0);
  q.scales.assign(8, 0);
  expect_error([&] { pack_gptq(q); }, {"model.layers.0.mlp.down_proj", "multiples of 8"});
  q.cols = 8;
  q.spec.bits = 3;
  expect_error([&] { pack_gptq(q); }, {"4 and 8 bits"});
}

// auto-round's quant_tensor_sym under torch autograd (make_fakequant_golden.py): the fake-quantized
// weight and the gradients of sum(W~ * R) with respect to V, alpha and beta.
TEST(FakeQuant, GradientsMatchAutoRoundUnderAutograd) {
  const fs::path dir = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/fake_quant";
  const int64_t N = 8, K = 128;
  const QuantSpec spec{4, 32};
  FakeQuant fq("m", read_npy_f32(dir / "w.npy"), N, K, spec);
  fq.v() = read_npy_f32(dir / "v.npy");
  fq.alpha() = read_npy_f32(dir / "alpha.npy");
  fq.beta() = read_npy_f32(dir / "beta.npy");
  std::vector<float> wq(static_cast<size_t>(N * K));
  fq.forward(wq.data());
  // auto-round returns W~ rounded to the weight's bf16; whittle keeps s*q exact.
  const std::vector<float> ref_wq = read_npy_f32(dir / "wq.npy");
  for (size_t i = 0; i < wq.size(); ++i) ASSERT_EQ(round_to_bf16(wq[i]), ref_wq[i]) << i;
  const std::vector<float> r = read_npy_f32(dir / "r.npy");
  std::vector<float> dv(wq.size()), da(static_cast<size_t>(N * fq.groups())), db(da.size());
  fq.gradients(r.data(), dv.data(), da.data(), db.data());
  const std::vector<float> ref_dv = read_npy_f32(dir / "dv.npy");
  const std::vector<float> ref_da = read_npy_f32(dir / "dalpha.npy");
  const std::vector<float> ref_db = read_npy_f32(dir / "dbeta.npy");
  // V: one product per weight (R * s), exact.
  for (size_t i = 0; i < dv.size(); ++i) ASSERT_EQ(dv[i], ref_dv[i]) << "dV " << i;
  // alpha, beta: the two fp16-rounded paths of dL/ds emulated (fake_quant.h) give torch's values
  // bit for bit here; the signs are what SignSGD uses.
  int nonzero = 0;
  for (size_t g = 0; g < da.size(); ++g) {
    for (auto [mine, ref, what] :
         {std::tuple{da[g], ref_da[g], "dalpha"}, std::tuple{db[g], ref_db[g], "dbeta"}}) {
      EXPECT_EQ((mine > 0) - (mine < 0), (ref > 0) - (ref < 0)) << what << " " << g;
      EXPECT_EQ(mine, ref) << what << " " << g;
      nonzero += ref != 0;
    }
  }
  EXPECT_GE(nonzero, static_cast<int>(da.size()) - 1);  // all but the zero group, both sides
  // The tie group (row 1, group 0): both coefficients get a (half) gradient, as torch.max splits
  // it.
  EXPECT_NE(da[4], 0.0f);
  EXPECT_NE(db[4], 0.0f);
  // The all-zero group is held by the threshold: no clip-factor gradient.
  EXPECT_EQ(da[0], 0.0f);
  EXPECT_EQ(db[0], 0.0f);
}

TEST(FakeQuant, StartsAtRtnAndStepsBySign) {
  const int64_t N = 4, K = 64;
  const QuantSpec spec{4, 32};
  const std::vector<float> w = random_bf16(N * K, 3);
  FakeQuant fq("m", w, N, K, spec);
  const QuantizedLinear rtn = quantize_rtn("m", w.data(), N, K, spec);
  const QuantizedLinear start = fq.quantized();
  EXPECT_EQ(start.q, rtn.q);
  EXPECT_EQ(start.scales, rtn.scales);
  std::vector<float> wq(static_cast<size_t>(N * K)), dw(wq.size(), 1.0f);
  fq.forward(wq.data());
  fq.sign_step(dw.data(), 0.25f, 0.25f);
  // dL/dV = dW~ * s * m: V moves against the sign of s where the code was inside the grid.
  for (size_t i = 0; i < 8; ++i) {
    const float s = rtn.scale(static_cast<int64_t>(i) / K, (static_cast<int64_t>(i) % K) / 32);
    EXPECT_TRUE(fq.v()[i] == (s > 0 ? -0.25f : 0.25f) || fq.v()[i] == 0.0f) << i;
  }
  for (float a : fq.alpha()) EXPECT_LE(a, 1.0f);
}

// SignSGD's schedule: lr·(1 − i/T); the steps add up to (T + 1)/(2T) for lr = 1/T (0.5025 at 200:
// the most any V can move, which is why it stays near ±0.5).
TEST(AutoRound, LearningRateDecaysLinearlyToLrOverIters) {
  EXPECT_FLOAT_EQ(autoround_step_lr(0.005, 0, 200), 0.005f);
  EXPECT_FLOAT_EQ(autoround_step_lr(0.005, 100, 200), 0.0025f);
  EXPECT_FLOAT_EQ(autoround_step_lr(0.005, 199, 200), 0.005f / 200);
  double sum = 0;
  for (int i = 0; i < 200; ++i) sum += autoround_step_lr(1.0 / 200, i, 200);
  EXPECT_NEAR(sum, 201.0 / 400, 1e-6);
}

}  // namespace
}  // namespace whittle
