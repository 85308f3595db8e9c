// Weight: every stored format unpacks to the values its definition gives. The GPTQ cases pack
// random integers with a packer written here from the spec's layout (autoround_gptq.md §3), for
// 4 and 8 bits, v1 and v2 zero points, with and without act-order g_idx, on awkward shapes; the
// libraries' own dequantization is checked against whittle in model/gptq_golden_test.cc.
#include "tensor/weight.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "tensor/gptq_testing.h"
#include "util/testing.h"

namespace whittle {
namespace {

TEST(Weight, GptqPackingMatchesTheSpecsByteExample) {
  // A column whose 8 values for k = 0..7 are u = 0..7 packs to 0x76543210 (spec §3).
  // One input group of 8 and 8 outputs; only output 0 is filled in. v1 symmetric zeros: stored
  // 7, zero 8.
  std::vector<int32_t> qweight(8, 0);
  qweight[0] = 0x76543210;
  const std::vector<int32_t> qzeros = {0x77777777};
  const std::vector<uint16_t> scales = {f32_to_f16(0.5f), 0, 0, 0, 0, 0, 0, 0};
  GptqTensors t{bytes_of(qweight), bytes_of(qzeros), bytes_of(scales), {}, DType::F16, 1};
  Weight w = Weight::gptq("m", t, 8, 8, GptqParams{4, 8, false});
  std::vector<float> row(8);
  w.rows_to_f32(0, 1, row.data());
  for (int k = 0; k < 8; ++k) EXPECT_EQ(row[k], 0.5f * static_cast<float>(k - 8)) << k;
}

struct GptqCase {
  int bits;
  int64_t N, K, G;
  bool act_order, v2, g_idx;
};

TEST(Weight, GptqUnpacksEveryLayoutExactly) {
  const GptqCase cases[] = {
      {4, 8, 8, 8, false, false, false},    {4, 64, 256, 128, false, false, true},
      {4, 24, 96, 32, true, false, true},   {4, 40, 200, 64, false, true, false},
      {4, 16, 64, 64, false, false, false}, {8, 12, 36, 12, false, false, false},
      {8, 20, 64, 16, true, true, true},    {4, 8, 48, 48, false, false, true},
      {4, 8, 40, 16, false, false, false},  // K not a multiple of G: the last group is short
  };
  uint32_t seed = 1;
  for (const GptqCase& c : cases) {
    SCOPED_TRACE(fmt::format("bits {} N {} K {} G {} act_order {} v2 {}", c.bits, c.N, c.K, c.G,
                             c.act_order, c.v2));
    PackedGptq p = pack_gptq(c.bits, c.N, c.K, c.G, c.act_order, c.v2, c.g_idx, seed++);
    Weight w = Weight::gptq("model.layers.0.mlp.down_proj", p.tensors(), c.N, c.K,
                            GptqParams{c.bits, c.act_order ? -1 : c.G, c.v2});
    EXPECT_EQ(w.to_f32(), p.expected);
    // Any row block, and row slices, read the same values.
    std::vector<float> block(static_cast<size_t>(3 * c.K));
    w.rows_to_f32(2, 5, block.data());
    EXPECT_TRUE(std::equal(block.begin(), block.end(), p.expected.begin() + 2 * c.K));
    Weight slice = w.slice_rows(4, c.N, "slice");
    EXPECT_EQ(slice.rows(), c.N - 4);
    std::vector<float> sliced = slice.to_f32();
    EXPECT_TRUE(std::equal(sliced.begin(), sliced.end(), p.expected.begin() + 4 * c.K));
  }
}

// A zero of 0 in v1 (asymmetric exports) is stored as field 15 with a borrow from the next field,
// as gptqmodel writes it; reading fields one by one would give zeros of 16 and one too small.
TEST(Weight, GptqV1ZeroOfZeroBorrowsFromTheNextField) {
  std::vector<int32_t> qweight(8, 0);  // all u = 0: W = -scale * zero
  const std::vector<uint16_t> scales(8, f32_to_f16(1.0f));
  // v2 zeros 0,1,2,...,7 for outputs 0..7 -> v1 word 0x76543210 - 0x11111111 = 0x654320FF.
  const std::vector<int32_t> qzeros = {static_cast<int32_t>(0x654320FFu)};
  GptqTensors t{bytes_of(qweight), bytes_of(qzeros), bytes_of(scales), {}, DType::F16, 1};
  Weight w = Weight::gptq("m", t, 8, 8, GptqParams{4, 8, false});
  std::vector<float> got = w.to_f32();
  for (int n = 0; n < 8; ++n) EXPECT_EQ(got[n * 8], -static_cast<float>(n)) << n;
}

TEST(Weight, SymmetricGptqFixesTheZeroAtHalfTheRangeAsVllmDoes) {
  for (int bits : {4, 8}) {
    PackedGptq p = pack_gptq(bits, 16, 64, 32, false, false, false, 20 + bits);
    GptqParams params{bits, 32, false, /*sym=*/true};
    std::vector<float> got = Weight::gptq("m", p.tensors(), 16, 64, params).to_f32();
    // The same integers with every zero at 2^(bits-1): recover u - z from the asymmetric values.
    PackedGptq z = p;
    const int64_t pack = 32 / bits;
    const uint32_t stored = (1u << (bits - 1)) - 1, mask = (1u << bits) - 1;
    for (int32_t& word : z.qzeros) {
      uint32_t w = 0;
      for (int64_t j = 0; j < pack; ++j) w |= (stored & mask) << (bits * j);
      word = static_cast<int32_t>(w);
    }
    EXPECT_EQ(got, Weight::gptq("m", z.tensors(), 16, 64, GptqParams{bits, 32, false}).to_f32());
    EXPECT_NE(got, p.expected);  // the random qzeros were not read
  }
}

TEST(Weight, GptqRefusesInconsistentTensorsNamingTheModule) {
  PackedGptq p = pack_gptq(4, 16, 64, 32, false, false, true, 7);
  const std::string m = "model.layers.1.self_attn.o_proj";
  expect_error(
      [&] {
        Weight::gptq(m, p.tensors(), 16, 64, GptqParams{3, 32, false});
      },
      {m, "3 bits"});
  expect_error(
      [&] {
        Weight::gptq(m, p.tensors(), 16, 128, GptqParams{4, 32, false});
      },
      {m, "qweight", "expected"});
  PackedGptq bad = p;
  bad.g_idx[5] = 2;  // only groups 0 and 1 exist
  std::vector<float> row(64);
  Weight w = Weight::gptq(m, bad.tensors(), 16, 64, GptqParams{4, 32, false});
  expect_error([&] { w.rows_to_f32(3, 4, row.data()); }, {m, "g_idx[5] = 2", "2 groups"});
  bad.g_idx[5] = -1;
  w = Weight::gptq(m, bad.tensors(), 16, 64, GptqParams{4, 32, false});
  expect_error([&] { w.rows_to_f32(0, 1, row.data()); }, {m, "g_idx[5] = -1"});
  PackedGptq no_g_idx = pack_gptq(4, 16, 64, 32, false, false, false, 8);
  expect_error(
      [&] {
        Weight::gptq(m, no_g_idx.tensors(), 16, 64, GptqParams{4, 16, false});
      },
      {m, "groups of 16 make 4 groups", "scales have 2 rows"});
}

TEST(Weight, DenseFormatsConvertAndSliceInPlace) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  const int64_t rows = 5, cols = 7;
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = d(rng);
  std::vector<uint16_t> bf16(values.size()), f16(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bf16[i] = f32_to_bf16(values[i]);
    f16[i] = f32_to_f16(values[i]);
  }
  Weight wb = Weight::dense("b", DType::BF16, bytes_of(bf16), rows, cols);
  Weight wh = Weight::dense("h", DType::F16, bytes_of(f16), rows, cols);
  Weight wf = Weight::owned_f32("f", values, rows, cols);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(wb.to_f32()[i], bf16_to_f32(bf16[i]));
    EXPECT_EQ(wh.to_f32()[i], f16_to_f32(f16[i]));
  }
  EXPECT_EQ(wf.to_f32(), values);
  ASSERT_NE(wf.f32_rows(), nullptr);
  EXPECT_EQ(wb.f32_rows(), nullptr);
  Weight s = wf.slice_rows(2, 4, "s");
  EXPECT_EQ(s.f32_rows(), wf.f32_rows() + 2 * cols);  // a view, not a copy
  const std::vector<float> all = wb.to_f32();
  EXPECT_EQ(wb.slice_rows(1, 3, "s").to_f32(),
            std::vector<float>(all.begin() + cols, all.begin() + 3 * cols));
  EXPECT_EQ(wb.stored_bytes(), values.size() * 2);
  EXPECT_EQ(wb.slice_rows(1, 3, "s").stored_bytes(), static_cast<size_t>(2 * cols * 2));

  // F32 rows at an odd address are converted, not read misaligned.
  std::vector<std::byte> shifted(values.size() * 4 + 1);
  std::memcpy(shifted.data() + 1, values.data(), values.size() * 4);
  Weight odd = Weight::dense("odd", DType::F32, std::span(shifted).subspan(1), rows, cols);
  EXPECT_EQ(odd.f32_rows(), nullptr);
  EXPECT_EQ(odd.to_f32(), values);

  expect_error([&] { Weight::dense("m.x", DType::I32, bytes_of(bf16), rows, cols); },
               {"m.x", "I32"});
  expect_error([&] { Weight::dense("m.y", DType::BF16, bytes_of(bf16), rows, cols + 1); },
               {"m.y", "expected"});
}

TEST(Weight, Fp8BlocksUseTheirOwnScale) {
  // 130 x 200 cuts both block dimensions: 2 x 2 scales.
  const int64_t rows = 130, cols = 200;
  std::mt19937 rng(5);
  std::vector<uint8_t> e4m3(static_cast<size_t>(rows * cols));
  for (auto& b : e4m3) b = static_cast<uint8_t>(rng() % 0x7e);  // finite positive values
  const std::vector<float> scale = {0.5f, 2.0f, -3.0f, 0.125f};
  Weight w = Weight::fp8_block("fp8", std::as_bytes(std::span(e4m3)), rows, cols, DType::F32,
                               bytes_of(scale));
  std::vector<float> got = w.to_f32();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(got[r * cols + c],
                f8e4m3_to_f32(e4m3[r * cols + c]) * scale[(r / kFp8Block) * 2 + c / kFp8Block])
          << r << "," << c;
  std::vector<float> tail = w.slice_rows(127, 130, "t").to_f32();
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), got.begin() + 127 * cols));
}

}  // namespace
}  // namespace whittle
