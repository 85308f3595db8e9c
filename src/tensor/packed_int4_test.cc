// PackedInt4: the repacked layout dequantizes to exactly what the GPTQ tensors it came from
// dequantize to, on every packable layout (symmetric and asymmetric, f16 and bf16 scales, short
// last tiles and groups, one group); what cannot be packed says why.
#include "tensor/packed_int4.h"

#include <gtest/gtest.h>

#include "tensor/gptq_testing.h"
#include "util/testing.h"
#include "util/thread_pool.h"

namespace whittle {
namespace {

struct Case {
  int64_t N, K, G;
  bool sym, v2;
  DType scale_dtype;
};

TEST(PackedInt4, DequantizesBitForBitLikeTheGptqTensors) {
  const Case cases[] = {
      {8, 128, 128, true, false, DType::F16},    // one short tile, K = group size
      {24, 256, 128, true, false, DType::BF16},  // a tile and a half
      {40, 200, 64, false, false, DType::F16},   // asymmetric v1, last group of 8
      {48, 96, 32, false, true, DType::BF16},    // asymmetric v2
      {16, 64, 64, true, false, DType::F16},     // exactly one tile
      {136, 512, 128, true, false, DType::F16},  // many tiles
  };
  ThreadPool pool(2);
  uint32_t seed = 7;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("N {} K {} G {} sym {} v2 {} {}", c.N, c.K, c.G, c.sym, c.v2,
                             dtype_name(c.scale_dtype)));
    PackedGptq g = pack_gptq(4, c.N, c.K, c.G, false, c.v2, seed % 2 == 0, seed, c.scale_dtype);
    ++seed;
    GptqParams params{4, c.G, c.v2, c.sym};
    Weight w = Weight::gptq("model.layers.1.mlp.experts.3.up_proj", g.tensors(), c.N, c.K, params);
    ASSERT_EQ(packable(w), "");
    auto packed = pack_int4(w, &pool);
    EXPECT_EQ(packed->tiles, (c.N + 15) / 16);
    // 4 bits per weight + 16-bit scales (+ 8-bit zeros) per group, padded to 64 bytes per tile.
    EXPECT_LE(packed->bytes(), static_cast<size_t>(packed->tiles) *
                                   (16 * c.K / 2 + packed->groups * 16 * (c.sym ? 2 : 3) + 63));
    std::vector<float> from_packed(static_cast<size_t>(c.N * c.K));
    packed->rows_to_f32(0, c.N, from_packed.data());
    EXPECT_EQ(from_packed, w.to_f32());
    Weight with = w.with_packed(packed);
    EXPECT_EQ(with.packed(), packed.get());
    EXPECT_EQ(with.slice_rows(0, 8, "s").packed(), nullptr);  // a slice is another matrix
  }
}

TEST(PackedInt4, SaysWhyAWeightCannotBePacked) {
  PackedGptq eight = pack_gptq(8, 16, 64, 32, false, false, false, 1);
  EXPECT_EQ(packable(Weight::gptq("m", eight.tensors(), 16, 64, GptqParams{8, 32, false})),
            "8-bit");
  PackedGptq act = pack_gptq(4, 16, 64, 32, true, false, true, 2);
  EXPECT_EQ(packable(Weight::gptq("m", act.tensors(), 16, 64, GptqParams{4, -1, false})),
            "act-order g_idx");
  EXPECT_EQ(packable(Weight::owned_f32("m", std::vector<float>(4), 2, 2)), "not GPTQ");
  expect_error([&] { pack_int4(Weight::owned_f32("m", std::vector<float>(4), 2, 2)); },
               {"m", "cannot be packed", "not GPTQ"});
}

}  // namespace
}  // namespace whittle
