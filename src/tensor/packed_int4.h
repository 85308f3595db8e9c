// PackedInt4: a GPTQ int4 weight repacked once, at load, for the integer kernels of
// ops/int4_linear.h. It keeps 4 bits per weight plus the 16-bit scales (4.125 bits per weight at
// group 128; zero points, when asymmetric, add 8 bits per group). Nothing is widened to int8.
//
// Rows are taken 16 at a time (a tile; the last tile is padded with rows of zero scale). A tile is
// one contiguous run of `tile_bytes` bytes, so the kernels stream it front to back:
//   scales  [groups][16]  16-bit, as the checkpoint stores them (F16 or BF16)
//   zeros   [groups][16]  u8 zero points, only when asymmetric (symmetric: 8, not stored)
//   (padding to 64 bytes)
//   codes   [cols / 8][64 bytes]: block b, lane r (bytes 4r .. 4r+3): byte j holds the code of
//           input 8b + j of row r in its low nibble and that of input 8b + 4 + j in its high one
// so one 64-byte load gives 16 rows x 8 inputs: (v & 15) are inputs 8b .. 8b+3 of every row as four
// unsigned bytes per 32-bit lane and (v >> 4 & 15) inputs 8b+4 .. 8b+7, which is what one VNNI
// `dpbusd` multiplies against four broadcast int8 activations. Codes stay unsigned (0 .. 15): the
// kernels subtract the zero point once per group, through the sum of the group's activations.
//
// Packable: GPTQ 4-bit, F16 or BF16 scales, inputs in plain groups (no act-order permutation), a
// group size that is a multiple of 8 (the file's -1, one group, included). Others run on the
// reference path; `packable` says why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tensor/weight.h"

namespace whittle {

class ThreadPool;

struct PackedInt4 {
  static constexpr int64_t kTileRows = 16;
  static constexpr int64_t kBlockBytes = 64;  // 16 rows x 8 inputs

  int64_t rows = 0, cols = 0, group_size = 0, groups = 0, tiles = 0;
  DType scale_dtype = DType::F16;  // F16 or BF16
  bool has_zeros = false;
  size_t codes_offset = 0;  // in a tile, after scales and zeros
  size_t tile_bytes = 0;
  std::shared_ptr<std::byte> data;  // tiles * tile_bytes, 64-byte aligned

  const std::byte* tile(int64_t t) const {
    return data.get() + static_cast<size_t>(t) * tile_bytes;
  }
  int64_t group_length(int64_t g) const { return std::min(group_size, cols - g * group_size); }
  size_t bytes() const { return static_cast<size_t>(tiles) * tile_bytes; }

  // The scalar reference of the layout: rows [r0, r1) as float32 into dst [(r1 - r0), cols]. Equal
  // to the source weight's rows_to_f32 bit for bit (tests).
  void rows_to_f32(int64_t r0, int64_t r1, float* dst) const;
};

// Empty when `w` can be packed, else why not ("act-order g_idx", "8-bit"...).
std::string packable(const Weight& w);
// Packs a packable weight (tiles spread over the pool). Memory: bytes() of anonymous memory, on
// transparent huge pages where the system allows (decode streams it at memory bandwidth).
std::shared_ptr<const PackedInt4> pack_int4(const Weight& w, ThreadPool* pool = nullptr);

// Rows [r0, r1) of an int4 weight in Weight::gptq_unpack's layout: codes [r1 - r0][cols] (0..15),
// zeros and 16-bit scales [groups][r1 - r0] (zeros ignored when symmetric).
using Int4RowSource =
    std::function<void(int64_t r0, int64_t r1, uint8_t* codes, uint8_t* zeros, uint16_t* scales)>;
// Packs a weight made here rather than read from a checkpoint (a transposed slice, say).
std::shared_ptr<const PackedInt4> pack_int4(int64_t rows, int64_t cols, int64_t group_size,
                                            DType scale_dtype, bool has_zeros,
                                            const Int4RowSource& source,
                                            ThreadPool* pool = nullptr);

// Tiles [t0, t1) of `w` as a weight of their own (rows t0 * 16 ...), sharing its memory.
PackedInt4 tile_slice(const PackedInt4& w, int64_t t0, int64_t t1);
// The 16-bit scale of `row`, `group`, as float32.
float packed_scale(const PackedInt4& w, int64_t row, int64_t group);

}  // namespace whittle
