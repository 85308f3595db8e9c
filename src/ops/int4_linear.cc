#include "ops/int4_linear.h"

// GCC 12 warns inside its own AVX-512 headers (their _mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "util/error.h"
#include "util/thread_pool.h"

namespace whittle {

namespace {

constexpr int64_t TR = PackedInt4::kTileRows;
// Software prefetch distance in the stream of code blocks. The hardware prefetcher alone left the
// kernel at ~70 % of the bandwidth one core can pull (it runs ahead too little while each block
// also costs ~40 cycles of arithmetic); measured on the 2-core dev box (docs/BENCHMARKS.md).
constexpr int64_t kPrefetchBytes = 1024;

// The per-group arithmetic every kernel set shares, so that they agree to the bit: the exact
// integer dot product minus the zero point's share, times scale · activation scale, added by fma.
inline float group_term(int32_t dot, int32_t zero, int32_t qsum, float scale, float act_scale,
                        float acc) {
  return std::fma(static_cast<float>(dot - zero * qsum), scale * act_scale, acc);
}

inline float scale_value(const PackedInt4& w, uint16_t bits) {
  return w.scale_dtype == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
}

struct TileView {
  const uint16_t* scales;
  const uint8_t* zeros;  // null when symmetric
  const uint8_t* codes;
};

TileView view(const PackedInt4& w, int64_t t) {
  const std::byte* p = w.tile(t);
  return {reinterpret_cast<const uint16_t*>(p),
          w.has_zeros ? reinterpret_cast<const uint8_t*>(p + w.groups * TR * 2) : nullptr,
          reinterpret_cast<const uint8_t*>(p + w.codes_offset)};
}

// Every kernel walks the activation blocks of weight group g: [k0, k1) runs of at most
// x.group_size inputs (plain loops: a lambda inside a target("avx512...") function would not
// inherit the target, and its intrinsics would not compile without -march=native).

// out[i][r] for activation rows m .. m + rows - 1 of tile t.
void tile_scalar(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m, int64_t rows,
                 float (*out)[TR]) {
  const TileView v = view(w, t);
  for (int64_t i = 0; i < rows; ++i) std::fill_n(out[i], TR, 0.0f);
  const uint8_t* block = v.codes;
  for (int64_t g = 0; g < w.groups; ++g)
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      int32_t dot[4][TR] = {};
      for (int64_t k = k0; k < k1; k += 8, block += PackedInt4::kBlockBytes)
        for (int64_t i = 0; i < rows; ++i) {
          const int8_t* q = &x.q[(m + i) * x.cols + k];
          for (int64_t r = 0; r < TR; ++r)
            for (int64_t j = 0; j < 4; ++j) {
              const uint8_t byte = block[4 * r + j];
              dot[i][r] += (byte & 15) * q[j] + (byte >> 4) * q[4 + j];
            }
        }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t mb = (m + i) * x.groups + k0 / x.group_size;
        for (int64_t r = 0; r < TR; ++r)
          out[i][r] = group_term(dot[i][r], v.zeros ? v.zeros[g * TR + r] : 8, x.sum[mb],
                                 scale_value(w, v.scales[g * TR + r]), x.scale[mb], out[i][r]);
      }
    }
}

#if defined(__x86_64__)
#define WHITTLE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define WHITTLE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define WHITTLE_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// dpbusd written in place: GCC 12 copies the accumulator of its intrinsics into a new register and
// back on every call (three instructions for one); this halved the AVX-512 kernel's speed.
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512i dpbusd512(__m512i acc, __m512i u,
                                                                       __m512i q) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(q));
  return acc;
}

// The weight group's scales (f16 or bf16) and zero points of the 16 rows of a tile.
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512 group_scales512(const PackedInt4& w,
                                                                            const TileView& v,
                                                                            int64_t g) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.scales + g * TR));
  return w.scale_dtype == DType::F16
             ? _mm512_cvtph_ps(raw)
             : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512i group_zeros512(const TileView& v,
                                                                            int64_t g) {
  return v.zeros ? _mm512_cvtepu8_epi32(
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(v.zeros + g * TR)))
                 : _mm512_set1_epi32(8);
}
// acc += (dot - zero·Σq) · (scale · activation scale): the shared group_term, 16 rows at once.
// Symmetric weights (zero 8 in every row) take 8·Σq as one broadcast instead of a vector multiply.
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512 flush512(__m512 acc, __m512i dot,
                                                                     bool sym, __m512i zero,
                                                                     __m512 scale, int32_t qsum,
                                                                     float act) {
  const __m512i zero_share =
      sym ? _mm512_set1_epi32(8 * qsum) : _mm512_mullo_epi32(zero, _mm512_set1_epi32(qsum));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot, zero_share)),
                         _mm512_mul_ps(scale, _mm512_set1_ps(act)), acc);
}

// AVX-512: one 64-byte block is 16 rows x 8 inputs; dpbusd takes 4 of them per 32-bit lane. Two
// blocks per step with their own accumulators keep four dpbusd chains in flight per row.
template <int MB>
WHITTLE_AVX512 void tile_avx512(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                float (*out)[TR]) {
  const TileView v = view(w, t);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 acc[MB];
  for (int i = 0; i < MB; ++i) acc[i] = _mm512_setzero_ps();
  const uint8_t* block = v.codes;
  for (int64_t g = 0; g < w.groups; ++g) {
    const __m512 scale = group_scales512(w, v, g);
    const __m512i zero = group_zeros512(v, g);
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      const int64_t blocks = (k1 - k0) / 8;
      const int8_t* q[MB];
      for (int i = 0; i < MB; ++i) q[i] = &x.q[(m + i) * x.cols + k0];
      __m512i d0[MB], d1[MB], d2[MB], d3[MB];
      for (int i = 0; i < MB; ++i) d0[i] = d1[i] = d2[i] = d3[i] = _mm512_setzero_si512();
      int64_t b = 0;
      for (; b + 2 <= blocks; b += 2, block += 2 * PackedInt4::kBlockBytes) {
        _mm_prefetch(reinterpret_cast<const char*>(block) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(block) + kPrefetchBytes + 64, _MM_HINT_T0);
        const __m512i c0 = _mm512_load_si512(block), c1 = _mm512_load_si512(block + 64);
        const __m512i lo0 = _mm512_and_si512(c0, nibble);
        const __m512i hi0 = _mm512_and_si512(_mm512_srli_epi16(c0, 4), nibble);
        const __m512i lo1 = _mm512_and_si512(c1, nibble);
        const __m512i hi1 = _mm512_and_si512(_mm512_srli_epi16(c1, 4), nibble);
        for (int i = 0; i < MB; ++i) {
          const int8_t* qb = q[i] + 8 * b;
          d0[i] = dpbusd512(d0[i], lo0, _mm512_set1_epi32(load_i32(qb)));
          d1[i] = dpbusd512(d1[i], hi0, _mm512_set1_epi32(load_i32(qb + 4)));
          d2[i] = dpbusd512(d2[i], lo1, _mm512_set1_epi32(load_i32(qb + 8)));
          d3[i] = dpbusd512(d3[i], hi1, _mm512_set1_epi32(load_i32(qb + 12)));
        }
      }
      for (; b < blocks; ++b, block += PackedInt4::kBlockBytes) {
        const __m512i c0 = _mm512_load_si512(block);
        const __m512i lo0 = _mm512_and_si512(c0, nibble);
        const __m512i hi0 = _mm512_and_si512(_mm512_srli_epi16(c0, 4), nibble);
        for (int i = 0; i < MB; ++i) {
          const int8_t* qb = q[i] + 8 * b;
          d0[i] = dpbusd512(d0[i], lo0, _mm512_set1_epi32(load_i32(qb)));
          d1[i] = dpbusd512(d1[i], hi0, _mm512_set1_epi32(load_i32(qb + 4)));
        }
      }
      for (int i = 0; i < MB; ++i) {
        const int64_t mb = (m + i) * x.groups + k0 / x.group_size;
        const __m512i dot =
            _mm512_add_epi32(_mm512_add_epi32(d0[i], d1[i]), _mm512_add_epi32(d2[i], d3[i]));
        acc[i] = flush512(acc[i], dot, !w.has_zeros, zero, scale, x.sum[mb], x.scale[mb]);
      }
    }
  }
  for (int i = 0; i < MB; ++i) _mm512_storeu_ps(out[i], acc[i]);
}

// One activation row against two adjacent tiles at once: two streams of code blocks in flight (one
// stream left the kernel at ~70 % of the bandwidth two cores can pull; docs/BENCHMARKS.md), and
// each broadcast activation word serves both tiles.
WHITTLE_AVX512 void tile_pair_avx512(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                     float (*out)[TR]) {
  const TileView va = view(w, t), vb = view(w, t + 1);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 acc_a = _mm512_setzero_ps(), acc_b = _mm512_setzero_ps();
  const uint8_t *ba = va.codes, *bb = vb.codes;
  for (int64_t g = 0; g < w.groups; ++g) {
    const __m512 scale_a = group_scales512(w, va, g), scale_b = group_scales512(w, vb, g);
    const __m512i zero_a = group_zeros512(va, g), zero_b = group_zeros512(vb, g);
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      const int8_t* q = &x.q[m * x.cols + k0];
      __m512i a0 = _mm512_setzero_si512(), a1 = a0, b0 = a0, b1 = a0;
      for (int64_t b = 0; b < (k1 - k0) / 8;
           ++b, ba += PackedInt4::kBlockBytes, bb += PackedInt4::kBlockBytes) {
        _mm_prefetch(reinterpret_cast<const char*>(ba) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(bb) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i ca = _mm512_load_si512(ba), cb = _mm512_load_si512(bb);
        const __m512i x0 = _mm512_set1_epi32(load_i32(q + 8 * b));
        const __m512i x1 = _mm512_set1_epi32(load_i32(q + 8 * b + 4));
        a0 = dpbusd512(a0, _mm512_and_si512(ca, nibble), x0);
        a1 = dpbusd512(a1, _mm512_and_si512(_mm512_srli_epi16(ca, 4), nibble), x1);
        b0 = dpbusd512(b0, _mm512_and_si512(cb, nibble), x0);
        b1 = dpbusd512(b1, _mm512_and_si512(_mm512_srli_epi16(cb, 4), nibble), x1);
      }
      const int64_t mb = m * x.groups + k0 / x.group_size;
      acc_a = flush512(acc_a, _mm512_add_epi32(a0, a1), !w.has_zeros, zero_a, scale_a, x.sum[mb],
                       x.scale[mb]);
      acc_b = flush512(acc_b, _mm512_add_epi32(b0, b1), !w.has_zeros, zero_b, scale_b, x.sum[mb],
                       x.scale[mb]);
    }
  }
  _mm512_storeu_ps(out[0], acc_a);
  _mm512_storeu_ps(out[1], acc_b);
}

// 256-bit: the block's first 32 bytes are rows 0..7, the next 32 rows 8..15. dpbusd (AVX-VNNI) or
// maddubs + madd (AVX2); both exact here (|u·q| ≤ 15·127, so pairs fit int16 unsaturated).
WHITTLE_AVXVNNI inline __attribute__((always_inline)) __m256i dot_vnni(__m256i acc, __m256i u,
                                                                       __m256i q) {
  asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(q));  // as dpbusd512
  return acc;
}
WHITTLE_AVX2 inline __attribute__((always_inline)) __m256i dot_avx2(__m256i acc, __m256i u,
                                                                    __m256i q) {
  const __m256i pairs = _mm256_maddubs_epi16(u, q);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

// clang-format off
#define WHITTLE_TILE256_BODY(DOT)                                                                   \
  const TileView v = view(w, t);                                                                    \
  const __m256i nibble = _mm256_set1_epi8(0x0F);                                                    \
  __m256 acc[MB][2];                                                                                \
  for (int i = 0; i < MB; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();                         \
  const uint8_t* block = v.codes;                                                                   \
  for (int64_t g = 0; g < w.groups; ++g) {                                                          \
    __m256 scale[2];                                                                                \
    __m256i zero[2];                                                                                \
    for (int h = 0; h < 2; ++h) {                                                                   \
      const __m128i raw =                                                                           \
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(v.scales + g * TR + 8 * h));             \
      scale[h] = w.scale_dtype == DType::F16                                                        \
                     ? _mm256_cvtph_ps(raw)                                                         \
                     : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));      \
      zero[h] = _mm256_set1_epi32(8);                                                               \
      if (v.zeros) {                                                                                \
        int64_t z;                                                                                  \
        std::memcpy(&z, v.zeros + g * TR + 8 * h, 8);                                               \
        zero[h] = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(z));                                       \
      }                                                                                             \
    }                                                                                               \
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;                     \
         k0 += x.group_size) {                                                                      \
      const int64_t k1 = std::min(end, k0 + x.group_size);                                          \
      const int8_t* q[MB];                                                                          \
      for (int i = 0; i < MB; ++i) q[i] = &x.q[(m + i) * x.cols + k0];                              \
      __m256i d[MB][2][2];                                                                          \
      for (int i = 0; i < MB; ++i)                                                                  \
        d[i][0][0] = d[i][0][1] = d[i][1][0] = d[i][1][1] = _mm256_setzero_si256();                 \
      for (int64_t b = 0; b < (k1 - k0) / 8; ++b, block += PackedInt4::kBlockBytes) {               \
        for (int h = 0; h < 2; ++h) {                                                               \
          const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(block + 32 * h));    \
          const __m256i lo = _mm256_and_si256(c, nibble);                                           \
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble);                     \
          for (int i = 0; i < MB; ++i) {                                                            \
            const int8_t* qb = q[i] + 8 * b;                                                        \
            d[i][h][0] = DOT(d[i][h][0], lo, _mm256_set1_epi32(load_i32(qb)));                      \
            d[i][h][1] = DOT(d[i][h][1], hi, _mm256_set1_epi32(load_i32(qb + 4)));                  \
          }                                                                                         \
        }                                                                                           \
      }                                                                                             \
      for (int i = 0; i < MB; ++i) {                                                                \
        const int64_t mb = (m + i) * x.groups + k0 / x.group_size;                                  \
        for (int h = 0; h < 2; ++h) {                                                               \
          const __m256i dot = _mm256_add_epi32(d[i][h][0], d[i][h][1]);                             \
          const __m256i shifted =                                                                   \
              _mm256_sub_epi32(dot, _mm256_mullo_epi32(zero[h], _mm256_set1_epi32(x.sum[mb])));     \
          acc[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(shifted),                                  \
                                      _mm256_mul_ps(scale[h], _mm256_set1_ps(x.scale[mb])),         \
                                      acc[i][h]);                                                   \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
  }                                                                                                 \
  for (int i = 0; i < MB; ++i) {                                                                    \
    _mm256_storeu_ps(out[i], acc[i][0]);                                                            \
    _mm256_storeu_ps(out[i] + 8, acc[i][1]);                                                        \
  }
// clang-format on

template <int MB>
WHITTLE_AVX2 void tile_avx2(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                            float (*out)[TR]) {
  WHITTLE_TILE256_BODY(dot_avx2)
}

template <int MB>
WHITTLE_AVXVNNI void tile_avxvnni(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                  float (*out)[TR]) {
  WHITTLE_TILE256_BODY(dot_vnni)
}
#undef WHITTLE_TILE256_BODY

// AMX int8, for 16 and more activation rows. Per weight tile, the codes are unpacked once into the
// tile unit's B operand as unsigned bytes 0..15: activation block b takes block/4 rows of 64 bytes,
// row j holding inputs 4j .. 4j+3 of the 16 weight rows, which is a packed block's low nibbles for
// even j and its high ones for odd j. Each 16 activation rows are the A operand, read in place from
// Int8Acts (int8, `cols` bytes apart), and one `tdpbsud` gives the 16 x 16 exact int32 dot products
// of an activation block. The float step per block is flush512's, so the bits equal every other
// kernel set's. Used where every activation block is whole (amx_fits; else the VNNI kernels).
#define WHITTLE_AMX                                                         \
  __attribute__((                                                           \
      target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile," \
             "amx-int8")))

constexpr int64_t kAmxRows = 16;  // activation rows per A operand

bool amx_fits(const PackedInt4& w, const Int8Acts& x) {
  return x.group_size % 4 == 0 && x.group_size <= 64 && w.cols % x.group_size == 0 &&
         w.group_size % x.group_size == 0;
}

struct alignas(64) AmxTileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Two sets of tiles, one per chain of activation blocks (even, odd), so that neither waits for the
// other's operands: C int32 [16 activation rows][16 weight rows] in tmm0 / tmm3, A [16][block]
// int8 in tmm1 / tmm4, B [block / 4][64] u8 in tmm2 / tmm5.
WHITTLE_AMX void amx_begin(int64_t block) {
  AmxTileConfig c;
  for (int set : {0, 3}) {
    c.rows[set] = kAmxRows;
    c.colsb[set] = 64;
    c.rows[set + 1] = kAmxRows;
    c.colsb[set + 1] = static_cast<uint16_t>(block);
    c.rows[set + 2] = static_cast<uint8_t>(block / 4);
    c.colsb[set + 2] = 64;
  }
  _tile_loadconfig(&c);
}

WHITTLE_AMX void amx_end() {
  _tile_release();
}

// The B operand of a whole tile: cols * 16 bytes.
WHITTLE_AMX void amx_unpack(const PackedInt4& w, int64_t t, uint8_t* dst) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const uint8_t* codes = view(w, t).codes;
  for (int64_t b = 0; b < w.cols / 8; ++b, codes += PackedInt4::kBlockBytes, dst += 128) {
    const __m512i c = _mm512_load_si512(codes);
    _mm512_storeu_si512(dst, _mm512_and_si512(c, nibble));
    _mm512_storeu_si512(dst + 64, _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble));
  }
}

// acc[i] += activation block kb's products (c, from a C tile) for rows m .. m + 15.
WHITTLE_AMX inline __attribute__((always_inline)) void amx_flush(const PackedInt4& w,
                                                                 const TileView& v,
                                                                 const Int8Acts& x, int64_t m,
                                                                 int64_t kb, const int32_t (*c)[TR],
                                                                 __m512* acc) {
  const int64_t g = kb * x.group_size / w.group_size;
  const __m512 scale = group_scales512(w, v, g);
  const __m512i zero = group_zeros512(v, g);
#pragma GCC unroll 16
  for (int64_t i = 0; i < kAmxRows; ++i) {
    const int64_t mb = (m + i) * x.groups + kb;
    acc[i] = flush512(acc[i], _mm512_load_si512(c[i]), !w.has_zeros, zero, scale, x.sum[mb],
                      x.scale[mb]);
  }
}

// out[i][r] for activation rows m .. m + 15 of tile t, whose B operand is `unpacked`.
WHITTLE_AMX void tile_amx(const PackedInt4& w, int64_t t, const uint8_t* unpacked,
                          const Int8Acts& x, int64_t m, float (*out)[TR]) {
  const TileView v = view(w, t);
  const int64_t block = x.group_size, blocks = x.groups, b_bytes = block * TR;
  const int8_t* a = &x.q[m * x.cols];
  alignas(64) int32_t c[2][2][kAmxRows][TR];  // [step parity][chain]
  __m512 acc[kAmxRows];
  for (__m512& r : acc) r = _mm512_setzero_ps();
  // Step s flushes the products of step s - 1, then issues the tile products of blocks 2s and
  // 2s + 1 (in this order the flush's loads do not queue behind the new tile stores). Measured on
  // the dev box (GLM-5 expert [2048, 6144], 128 rows, one thread): 167 GMAC/s against 104 for the
  // AVX-512 VNNI kernel; the tile products alone ran at 338 and the flushes alone at 307, so the
  // two overlap little yet (docs/BENCHMARKS.md).
  for (int64_t kb = 0; kb < blocks + 2; kb += 2) {
    int32_t(*now)[kAmxRows][TR] = c[kb / 2 % 2];
    int32_t(*last)[kAmxRows][TR] = c[(kb / 2 + 1) % 2];
    if (kb >= 2) {
      amx_flush(w, v, x, m, kb - 2, last[0], acc);
      if (kb - 1 < blocks) amx_flush(w, v, x, m, kb - 1, last[1], acc);
    }
    if (kb < blocks) {
      _tile_zero(0);
      _tile_loadd(1, a + kb * block, x.cols);
      _tile_loadd(2, unpacked + kb * b_bytes, 64);
      _tile_dpbsud(0, 1, 2);
      _tile_stored(0, now[0], 64);
    }
    if (kb + 1 < blocks) {
      _tile_zero(3);
      _tile_loadd(4, a + (kb + 1) * block, x.cols);
      _tile_loadd(5, unpacked + (kb + 1) * b_bytes, 64);
      _tile_dpbsud(3, 4, 5);
      _tile_stored(3, now[1], 64);
    }
  }
  for (int64_t i = 0; i < kAmxRows; ++i) _mm512_store_ps(out[i], acc[i]);
}
#endif  // __x86_64__

// Activation rows of tile t, up to 4 (AVX-512) or 2 (256-bit: 16 vector registers) at a
// time.
void tile_rows(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m, int64_t rows,
               float (*out)[TR], Isa isa) {
#if defined(__x86_64__)
  switch (isa) {
    case Isa::kAvx512Vnni:
    case Isa::kAmx:
      switch (rows) {
        case 1:
          return tile_avx512<1>(w, t, x, m, out);
        case 2:
          return tile_avx512<2>(w, t, x, m, out);
        case 3:
          return tile_avx512<3>(w, t, x, m, out);
        default:
          return tile_avx512<4>(w, t, x, m, out);
      }
    case Isa::kAvxVnni:
      return rows == 1 ? tile_avxvnni<1>(w, t, x, m, out) : tile_avxvnni<2>(w, t, x, m, out);
    case Isa::kAvx2:
      return rows == 1 ? tile_avx2<1>(w, t, x, m, out) : tile_avx2<2>(w, t, x, m, out);
    case Isa::kScalar:
      break;
  }
#endif
  tile_scalar(w, t, x, m, rows, out);
}

int64_t rows_per_call(Isa isa) {
  return isa >= Isa::kAvx512Vnni || isa == Isa::kScalar ? 4 : 2;
}

}  // namespace

int64_t int4_act_block(const PackedInt4& w) {
  return std::gcd<int64_t>(kActBlock, w.group_size);
}

void quantize_acts(const float* x, int64_t M, int64_t K, int64_t group_size, Int8Acts& out) {
  if (group_size < 1) fail("internal: activation group size {}", group_size);
  out.rows = M;
  out.cols = K;
  out.group_size = group_size;
  out.groups = (K + group_size - 1) / group_size;
  out.q.resize(static_cast<size_t>(M * K));
  out.scale.resize(static_cast<size_t>(M * out.groups));
  out.sum.resize(out.scale.size());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < out.groups; ++g) {
      const int64_t k0 = g * group_size, k1 = std::min(K, k0 + group_size);
      const float* xs = x + m * K;
      float amax = 0.0f;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(xs[k]));
      if (!std::isfinite(amax)) amax = 0.0f;  // a NaN or inf input poisons the output either way
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      int8_t* q = &out.q[m * K];
      for (int64_t k = k0; k < k1; ++k) {
        const float r = std::nearbyint(std::clamp(xs[k] * inv, -127.0f, 127.0f));
        q[k] = static_cast<int8_t>(r);
        sum += q[k];
      }
      out.scale[m * out.groups + g] = amax / 127.0f;
      out.sum[m * out.groups + g] = sum;
    }
}

void int4_tiles(const PackedInt4& w, const Int8Acts& x, int64_t m0, int64_t m1, int64_t t0,
                int64_t t1, float* y, int64_t ldy, bool accumulate, Isa isa) {
  const int64_t step = rows_per_call(isa);
  alignas(64) float out[16][TR];
  auto store = [&](int64_t t, int64_t m, int64_t rows, float(*tile_out)[TR], int64_t stride) {
    const int64_t n0 = t * TR, width = std::min(TR, w.rows - n0);
    for (int64_t i = 0; i < rows; ++i) {
      float* dst = y + (m + i) * ldy + n0;
      const float* src = tile_out[i * stride];
      if (accumulate)
        for (int64_t r = 0; r < width; ++r) dst[r] += src[r];
      else
        std::copy_n(src, width, dst);
    }
  };
  int64_t m_vnni = m0;  // rows from here on take the VNNI (or narrower) kernels
#if defined(__x86_64__)
  const bool amx = isa == Isa::kAmx && m1 - m0 >= kAmxRows && amx_fits(w, x);
  thread_local std::vector<uint8_t> unpacked;  // one tile's B operand
  if (amx) {
    m_vnni = m0 + (m1 - m0) / kAmxRows * kAmxRows;
    unpacked.resize(static_cast<size_t>(w.cols * TR));
    amx_begin(x.group_size);
  }
#endif
  for (int64_t t = t0; t < t1; ++t) {
#if defined(__x86_64__)
    if (amx) {
      amx_unpack(w, t, unpacked.data());
      for (int64_t m = m0; m < m_vnni; m += kAmxRows) {
        tile_amx(w, t, unpacked.data(), x, m, out);
        store(t, m, kAmxRows, out, 1);
      }
    }
    if (isa >= Isa::kAvx512Vnni && m1 - m0 == 1 && t + 1 < t1) {
      tile_pair_avx512(w, t, x, m0, out);
      store(t, m0, 1, out, 1);
      store(t + 1, m0, 1, out + 1, 1);
      ++t;
      continue;
    }
#endif
    for (int64_t m = m_vnni; m < m1; m += step) {
      const int64_t rows = std::min(step, m1 - m);
      tile_rows(w, t, x, m, rows, out, isa);
      store(t, m, rows, out, 1);
    }
  }
#if defined(__x86_64__)
  if (amx) amx_end();
#endif
}

void int4_linear(const PackedInt4& w, const Int8Acts& x, float* y, bool accumulate,
                 ThreadPool* pool, Isa isa) {
  if (x.cols != w.cols || x.group_size != int4_act_block(w))
    fail(
        "internal: activations of {} inputs in blocks of {} for a weight of {} in groups "
        "of {}",
        x.cols, x.group_size, w.cols, w.group_size);
  const int64_t M = x.rows;
  auto run = [&](size_t t0, size_t t1) {
    int4_tiles(w, x, 0, M, static_cast<int64_t>(t0), static_cast<int64_t>(t1), y, w.rows,
               accumulate, isa);
  };
  // Work of one tile: 16 rows x cols x M products; chunks of at least ~64 K of them.
  const size_t grain =
      static_cast<size_t>(std::max<int64_t>(1, (int64_t{1} << 16) / (TR * w.cols * M)));
  if (pool != nullptr)
    pool->parallel_for(static_cast<size_t>(w.tiles), run, grain);
  else
    run(0, static_cast<size_t>(w.tiles));
}

void int4_linear(const PackedInt4& w, const float* x, int64_t M, float* y, bool accumulate,
                 ThreadPool* pool, Isa isa) {
  thread_local Int8Acts acts;
  quantize_acts(x, M, w.cols, int4_act_block(w), acts);
  int4_linear(w, acts, y, accumulate, pool, isa);
}

std::vector<float> int8_error_bound(const std::vector<float>& dense, int64_t N, const Int8Acts& x) {
  std::vector<float> bound(static_cast<size_t>(x.rows * N), 0.0f);
  for (int64_t m = 0; m < x.rows; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double b = 0.0;
      for (int64_t k = 0; k < x.cols; ++k)
        b += std::fabs(dense[n * x.cols + k]) * x.scale[m * x.groups + k / x.group_size] / 2;
      bound[m * N + n] = static_cast<float>(b);
    }
  return bound;
}

}  // namespace whittle
