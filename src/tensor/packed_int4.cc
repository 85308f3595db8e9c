#include "tensor/packed_int4.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "util/error.h"
#include "util/thread_pool.h"

namespace whittle {

namespace {

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// Anonymous memory for a packed weight: mmap'd (page-aligned, so 64-byte aligned) and advised onto
// transparent huge pages, which keeps TLB misses out of a stream of gigabytes.
std::shared_ptr<std::byte> allocate(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("cannot allocate {} bytes for a packed int4 weight", bytes);
  if (bytes >= (size_t{2} << 20)) madvise(p, bytes, MADV_HUGEPAGE);
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p),
                                    [bytes](std::byte* q) { munmap(q, bytes); });
}

}  // namespace

std::string packable(const Weight& w) {
  if (w.format() != WeightFormat::kGptq) return "not GPTQ";
  const GptqParams& p = w.gptq_params();
  if (p.bits != 4) return fmt::format("{}-bit", p.bits);
  if (w.scale_dtype() != DType::F16 && w.scale_dtype() != DType::BF16)
    return fmt::format("{} scales", dtype_name(w.scale_dtype()));
  if (w.cols() % 8 != 0) return fmt::format("{} inputs (not a multiple of 8)", w.cols());
  if (!w.gptq_plain_groups()) return "act-order g_idx";
  const int64_t group = w.groups() == 1 ? w.cols() : w.gptq_params().group_size;
  if (group < 1 || group % 8 != 0) return fmt::format("group size {}", group);
  return "";
}

std::shared_ptr<const PackedInt4> pack_int4(const Weight& w, ThreadPool* pool) {
  if (const std::string why = packable(w); !why.empty())
    fail("internal: {} ({}) cannot be packed: {}", w.module(), w.describe(), why);
  const int64_t groups = w.groups();
  const int64_t group_size = groups == 1 ? w.cols() : w.gptq_params().group_size;
  if (groups != (w.cols() + group_size - 1) / group_size)
    fail("internal: {}: {} groups of {} for {} inputs", w.module(), groups, group_size, w.cols());
  return pack_int4(
      w.rows(), w.cols(), group_size, w.scale_dtype(), !w.gptq_params().sym,
      [&w](int64_t r0, int64_t r1, uint8_t* codes, uint8_t* zeros, uint16_t* scales) {
        w.gptq_unpack(r0, r1, codes, zeros, scales);
      },
      pool);
}

std::shared_ptr<const PackedInt4> pack_int4(int64_t rows, int64_t cols, int64_t group_size,
                                            DType scale_dtype, bool has_zeros,
                                            const Int4RowSource& source, ThreadPool* pool) {
  constexpr int64_t TR = PackedInt4::kTileRows;
  if (rows < 1 || cols < 8 || cols % 8 != 0 || group_size < 8 || group_size % 8 != 0 ||
      (scale_dtype != DType::F16 && scale_dtype != DType::BF16))
    fail("internal: cannot pack int4 [{}, {}] in groups of {} with {} scales", rows, cols,
         group_size, dtype_name(scale_dtype));
  auto packed = std::make_shared<PackedInt4>();
  PackedInt4& p = *packed;
  p.rows = rows;
  p.cols = cols;
  p.group_size = group_size;
  p.groups = (cols + group_size - 1) / group_size;
  p.tiles = (p.rows + TR - 1) / TR;
  p.scale_dtype = scale_dtype;
  p.has_zeros = has_zeros;
  p.codes_offset = round_up(static_cast<size_t>(p.groups * TR) * (2 + (p.has_zeros ? 1 : 0)), 64);
  p.tile_bytes = p.codes_offset + static_cast<size_t>(p.cols / 8) * PackedInt4::kBlockBytes;
  p.data = allocate(p.bytes());
  const int64_t K = p.cols, G = p.groups;
  auto pack_tiles = [&](size_t t0, size_t t1) {
    std::vector<uint8_t> codes(static_cast<size_t>(TR * K)), zeros(static_cast<size_t>(G * TR));
    std::vector<uint16_t> scales(static_cast<size_t>(G * TR));
    for (size_t t = t0; t < t1; ++t) {
      const int64_t r0 = static_cast<int64_t>(t) * TR, r1 = std::min(p.rows, r0 + TR), R = r1 - r0;
      source(r0, r1, codes.data(), zeros.data(), scales.data());
      std::byte* tile = p.data.get() + t * p.tile_bytes;
      std::memset(tile, 0, p.tile_bytes);  // padded rows: scale 0, codes 0
      auto* tile_scales = reinterpret_cast<uint16_t*>(tile);
      auto* tile_zeros = reinterpret_cast<uint8_t*>(tile + G * TR * 2);
      for (int64_t g = 0; g < G; ++g)
        for (int64_t r = 0; r < R; ++r) {
          tile_scales[g * TR + r] = scales[g * R + r];
          if (p.has_zeros) tile_zeros[g * TR + r] = zeros[g * R + r];
        }
      auto* block = reinterpret_cast<uint8_t*>(tile + p.codes_offset);
      for (int64_t b = 0; b < K / 8; ++b, block += PackedInt4::kBlockBytes)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = 0; j < 4; ++j) {
            const uint8_t* c = &codes[r * K + 8 * b];
            block[4 * r + j] = static_cast<uint8_t>(c[j] | (c[4 + j] << 4));
          }
    }
  };
  if (pool != nullptr)
    pool->parallel_for(static_cast<size_t>(p.tiles), pack_tiles);
  else
    pack_tiles(0, static_cast<size_t>(p.tiles));
  return packed;
}

void PackedInt4::rows_to_f32(int64_t r0, int64_t r1, float* dst) const {
  if (r0 < 0 || r1 < r0 || r1 > rows) fail("internal: packed rows [{}, {}) of {}", r0, r1, rows);
  for (int64_t n = r0; n < r1; ++n) {
    const int64_t r = n % kTileRows;
    const std::byte* t = tile(n / kTileRows);
    const auto* zeros = reinterpret_cast<const uint8_t*>(t + groups * kTileRows * 2);
    const auto* codes = reinterpret_cast<const uint8_t*>(t + codes_offset);
    float* row = dst + (n - r0) * cols;
    for (int64_t k = 0; k < cols; ++k) {
      const int64_t g = k / group_size;
      const float scale = packed_scale(*this, n, g);
      const float zero = has_zeros ? static_cast<float>(zeros[g * kTileRows + r]) : 8.0f;
      const uint8_t byte = codes[(k / 8) * kBlockBytes + 4 * r + (k % 4)];
      const int code = (k % 8) < 4 ? (byte & 15) : (byte >> 4);
      row[k] = scale * (static_cast<float>(code) - zero);
    }
  }
}

PackedInt4 tile_slice(const PackedInt4& w, int64_t t0, int64_t t1) {
  if (t0 < 0 || t1 <= t0 || t1 > w.tiles) fail("internal: tiles [{}, {}) of {}", t0, t1, w.tiles);
  PackedInt4 s = w;
  s.data =
      std::shared_ptr<std::byte>(w.data, w.data.get() + static_cast<size_t>(t0) * w.tile_bytes);
  s.tiles = t1 - t0;
  s.rows = std::min(w.rows, t1 * PackedInt4::kTileRows) - t0 * PackedInt4::kTileRows;
  return s;
}

float packed_scale(const PackedInt4& w, int64_t row, int64_t group) {
  const auto* scales = reinterpret_cast<const uint16_t*>(w.tile(row / PackedInt4::kTileRows));
  const uint16_t bits = scales[group * PackedInt4::kTileRows + row % PackedInt4::kTileRows];
  return w.scale_dtype == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
}

}  // namespace whittle
