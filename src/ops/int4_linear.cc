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

// The float steps every kernel set shares, in the same order, so that they agree to the bit (see
// int4_linear.h): per activation block b, T = fma(dot_b, a_b, T); per weight group g,
// acc = fma(s_g, T, acc) then acc = fma(-(z_g·s_g), C_g, acc), C_g from group_sums.
inline float block_step(int32_t dot, float act_scale, float t) {
  return std::fma(static_cast<float>(dot), act_scale, t);
}
inline float group_step(float t, float scale, int32_t zero, float c, float acc) {
  return std::fma(-(static_cast<float>(zero) * scale), c, std::fma(scale, t, acc));
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
// x.group_size inputs, kb counting them (plain loops: a lambda inside a target("avx512...")
// function would not inherit the target, and its intrinsics would not compile without
// -march=native). `corr` holds C_g of the kernel's activation rows, w.groups apart (group_sums).

// Most activation rows a kernel call takes (the AVX-512 kernels' register budget).
constexpr int64_t kMaxRows = 12;
// Tiles one decoding row reads at once (tiles_row_avx512).
constexpr int64_t kRowTiles = 4;
// int4_tiles' blocks of many rows: activation bytes and tile bytes per block (L2 is 1-2 MB).
constexpr int64_t kCacheActBytes = int64_t{256} << 10;
constexpr int64_t kCacheTileBytes = int64_t{512} << 10;

// out[i][r] for activation rows m .. m + rows - 1 of tile t.
void tile_scalar(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m, int64_t rows,
                 const float* corr, float (*out)[TR]) {
  const TileView v = view(w, t);
  for (int64_t i = 0; i < rows; ++i) std::fill_n(out[i], TR, 0.0f);
  const uint8_t* block = v.codes;
  int64_t kb = 0;
  for (int64_t g = 0; g < w.groups; ++g) {
    float sum[kMaxRows][TR] = {};  // T
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size, ++kb) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      int32_t dot[kMaxRows][TR] = {};
      for (int64_t k = k0; k < k1; k += 8, block += PackedInt4::kBlockBytes)
        for (int64_t i = 0; i < rows; ++i) {
          const int8_t* q = &x.q[(m + i) * x.cols + k];
          for (int64_t r = 0; r < TR; ++r)
            for (int64_t j = 0; j < 4; ++j) {
              const uint8_t byte = block[4 * r + j];
              dot[i][r] += (byte & 15) * q[j] + (byte >> 4) * q[4 + j];
            }
        }
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t r = 0; r < TR; ++r)
          sum[i][r] = block_step(dot[i][r], x.scale[(m + i) * x.groups + kb], sum[i][r]);
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t r = 0; r < TR; ++r)
        out[i][r] =
            group_step(sum[i][r], scale_value(w, v.scales[g * TR + r]),
                       v.zeros ? v.zeros[g * TR + r] : 8, corr[i * w.groups + g], out[i][r]);
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
// The same with the 4 activation bytes at q broadcast by the instruction itself ({1to16}): one
// fused uop instead of a broadcast load and the product (dpbusd alone: 4.0 → 5.3 G/s per core on
// the dev box).
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512i dpbusd512(__m512i acc, __m512i u,
                                                                       const int8_t* q) {
  using Word = int32_t __attribute__((may_alias, aligned(1)));
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const Word*>(q)));
  return acc;
}

// A weight group's scales s (f16 or bf16) and z·s, 16 rows of a tile.
struct GroupScales512 {
  __m512 scale, zero_scale;
};
WHITTLE_AVX512 inline __attribute__((always_inline)) GroupScales512 group_scales512(
    const PackedInt4& w, const TileView& v, int64_t g) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.scales + g * TR));
  const __m512 scale = w.scale_dtype == DType::F16
                           ? _mm512_cvtph_ps(raw)
                           : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  const __m512 zero = v.zeros ? _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                                    reinterpret_cast<const __m128i*>(v.zeros + g * TR))))
                              : _mm512_set1_ps(8.0f);
  return {scale, _mm512_mul_ps(zero, scale)};
}
// block_step and group_step, 16 rows at once.
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512 block_step512(__m512i dot,
                                                                          float act_scale,
                                                                          __m512 t) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(act_scale), t);
}
WHITTLE_AVX512 inline __attribute__((always_inline)) __m512 group_step512(__m512 t,
                                                                          const GroupScales512& s,
                                                                          float c, __m512 acc) {
  return _mm512_fnmadd_ps(s.zero_scale, _mm512_set1_ps(c), _mm512_fmadd_ps(s.scale, t, acc));
}

// AVX-512, MB activation rows: one 64-byte block is 16 rows x 8 inputs, dpbusd takes 4 of them per
// 32-bit lane; each unpacked block serves every activation row. Up to 5 rows, two accumulator
// chains per row (low and high nibbles): with one, a row's two dependent dpbusd per block left 4
// rows latency-bound. From 6 rows on, one chain per row (the integer sums are exact in any order,
// so the bits are the same): the 2·MB dpbusd of a block outlast a chain's two latencies, and one
// vector add per row and activation block is saved (the adds take the dpbusd's ports). The output
// rows live in `out` (L1) and are updated once per weight group, which leaves registers for 12
// rows: 12 chains, 12 group sums, the two unpacked halves.
template <int MB>
WHITTLE_AVX512 void tile_avx512(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                const float* corr, float (*out)[TR]) {
  constexpr bool kTwoChains = MB <= 5;
  constexpr int kChains = kTwoChains ? MB : 1;  // second-chain registers in use
  const TileView v = view(w, t);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 12
  for (int i = 0; i < MB; ++i) _mm512_store_ps(out[i], _mm512_setzero_ps());
  const uint8_t* block = v.codes;
  const int8_t* q = &x.q[m * x.cols];
  const float* act = &x.scale[m * x.groups];
  int64_t kb = 0;
  for (int64_t g = 0; g < w.groups; ++g) {
    __m512 sum[MB];
#pragma GCC unroll 12
    for (int i = 0; i < MB; ++i) sum[i] = _mm512_setzero_ps();
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size, ++kb) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      __m512i lo_dot[MB], hi_dot[kChains];
#pragma GCC unroll 12
      for (int i = 0; i < MB; ++i) lo_dot[i] = _mm512_setzero_si512();
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) hi_dot[i] = _mm512_setzero_si512();
      for (int64_t k = k0; k < k1; k += 8, block += PackedInt4::kBlockBytes) {
        _mm_prefetch(reinterpret_cast<const char*>(block) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i c = _mm512_load_si512(block);
        const __m512i lo = _mm512_and_si512(c, nibble);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble);
#pragma GCC unroll 12
        for (int i = 0; i < MB; ++i) {
          lo_dot[i] = dpbusd512(lo_dot[i], lo, q + i * x.cols + k);
          if constexpr (kTwoChains)
            hi_dot[i] = dpbusd512(hi_dot[i], hi, q + i * x.cols + k + 4);
          else
            lo_dot[i] = dpbusd512(lo_dot[i], hi, q + i * x.cols + k + 4);
        }
      }
#pragma GCC unroll 12
      for (int i = 0; i < MB; ++i) {
        __m512i dot = lo_dot[i];
        if constexpr (kTwoChains) dot = _mm512_add_epi32(dot, hi_dot[i]);
        sum[i] = block_step512(dot, act[i * x.groups + kb], sum[i]);
      }
    }
    const GroupScales512 s = group_scales512(w, v, g);
#pragma GCC unroll 12
    for (int i = 0; i < MB; ++i)
      _mm512_store_ps(out[i],
                      group_step512(sum[i], s, corr[i * w.groups + g], _mm512_load_ps(out[i])));
  }
}

// Up to 4 activation rows against two adjacent tiles: each broadcast activation word serves both
// tiles, which halves the broadcast loads per dpbusd against tile_avx512. out[i] for tile t, out[MB
// + i] for tile t + 1.
template <int MB>
WHITTLE_AVX512 void tile2_avx512(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                 const float* corr, float (*out)[TR]) {
  const TileView va = view(w, t), vb = view(w, t + 1);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 8
  for (int i = 0; i < 2 * MB; ++i) _mm512_store_ps(out[i], _mm512_setzero_ps());
  const uint8_t *ba = va.codes, *bb = vb.codes;
  const int8_t* q = &x.q[m * x.cols];
  const float* act = &x.scale[m * x.groups];
  int64_t kb = 0;
  for (int64_t g = 0; g < w.groups; ++g) {
    __m512 sum_a[MB], sum_b[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) sum_a[i] = sum_b[i] = _mm512_setzero_ps();
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size, ++kb) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      __m512i da[MB], db[MB];
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) da[i] = db[i] = _mm512_setzero_si512();
      for (int64_t k = k0; k < k1;
           k += 8, ba += PackedInt4::kBlockBytes, bb += PackedInt4::kBlockBytes) {
        _mm_prefetch(reinterpret_cast<const char*>(ba) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(bb) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i ca = _mm512_load_si512(ba), cb = _mm512_load_si512(bb);
        const __m512i lo_a = _mm512_and_si512(ca, nibble), lo_b = _mm512_and_si512(cb, nibble);
        const __m512i hi_a = _mm512_and_si512(_mm512_srli_epi16(ca, 4), nibble);
        const __m512i hi_b = _mm512_and_si512(_mm512_srli_epi16(cb, 4), nibble);
#pragma GCC unroll 4
        for (int i = 0; i < MB; ++i) {
          da[i] = dpbusd512(da[i], lo_a, q + i * x.cols + k);
          db[i] = dpbusd512(db[i], lo_b, q + i * x.cols + k);
        }
#pragma GCC unroll 4
        for (int i = 0; i < MB; ++i) {
          da[i] = dpbusd512(da[i], hi_a, q + i * x.cols + k + 4);
          db[i] = dpbusd512(db[i], hi_b, q + i * x.cols + k + 4);
        }
      }
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) {
        sum_a[i] = block_step512(da[i], act[i * x.groups + kb], sum_a[i]);
        sum_b[i] = block_step512(db[i], act[i * x.groups + kb], sum_b[i]);
      }
    }
    const GroupScales512 s_a = group_scales512(w, va, g), s_b = group_scales512(w, vb, g);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const float c = corr[i * w.groups + g];
      _mm512_store_ps(out[i], group_step512(sum_a[i], s_a, c, _mm512_load_ps(out[i])));
      _mm512_store_ps(out[MB + i], group_step512(sum_b[i], s_b, c, _mm512_load_ps(out[MB + i])));
    }
  }
}

// One activation row against NT adjacent tiles at once: NT streams of code blocks in flight (one
// stream left the kernel at ~70 % of the bandwidth two cores can pull, and four streams per core
// read faster than two; docs/BENCHMARKS.md), and each broadcast activation word serves every tile.
// Each tile's sums run as tile_avx512<1>'s: the same bits.
template <int NT>
WHITTLE_AVX512 void tiles_row_avx512(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                     const float* corr, float (*out)[TR]) {
  TileView v[NT];
  const uint8_t* block[NT];
  __m512 acc[NT];
#pragma GCC unroll 4
  for (int j = 0; j < NT; ++j) {
    v[j] = view(w, t + j);
    block[j] = v[j].codes;
    acc[j] = _mm512_setzero_ps();
  }
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const int8_t* q = &x.q[m * x.cols];
  const float* act = &x.scale[m * x.groups];
  int64_t kb = 0;
  for (int64_t g = 0; g < w.groups; ++g) {
    __m512 sum[NT];
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j) sum[j] = _mm512_setzero_ps();
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
         k0 += x.group_size, ++kb) {
      const int64_t k1 = std::min(end, k0 + x.group_size);
      __m512i lo[NT], hi[NT];
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j) lo[j] = hi[j] = _mm512_setzero_si512();
      for (int64_t k = k0; k < k1; k += 8) {
        const __m512i x0 = _mm512_set1_epi32(load_i32(q + k));
        const __m512i x1 = _mm512_set1_epi32(load_i32(q + k + 4));
#pragma GCC unroll 4
        for (int j = 0; j < NT; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(block[j]) + kPrefetchBytes, _MM_HINT_T0);
          const __m512i c = _mm512_load_si512(block[j]);
          block[j] += PackedInt4::kBlockBytes;
          lo[j] = dpbusd512(lo[j], _mm512_and_si512(c, nibble), x0);
          hi[j] = dpbusd512(hi[j], _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble), x1);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j)
        sum[j] = block_step512(_mm512_add_epi32(lo[j], hi[j]), act[kb], sum[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < NT; ++j)
      acc[j] = group_step512(sum[j], group_scales512(w, v[j], g), corr[g], acc[j]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < NT; ++j) _mm512_storeu_ps(out[j], acc[j]);
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
  int64_t kb = 0;                                                                                   \
  for (int64_t g = 0; g < w.groups; ++g) {                                                          \
    __m256 sum[MB][2];                                                                              \
    for (int i = 0; i < MB; ++i) sum[i][0] = sum[i][1] = _mm256_setzero_ps();                       \
    for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;                     \
         k0 += x.group_size, ++kb) {                                                                \
      const int64_t k1 = std::min(end, k0 + x.group_size);                                          \
      __m256i d[MB][2];                                                                             \
      for (int i = 0; i < MB; ++i) d[i][0] = d[i][1] = _mm256_setzero_si256();                      \
      for (int64_t k = k0; k < k1; k += 8, block += PackedInt4::kBlockBytes) {                      \
        for (int h = 0; h < 2; ++h) {                                                               \
          const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(block + 32 * h));    \
          const __m256i lo = _mm256_and_si256(c, nibble);                                           \
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble);                     \
          for (int i = 0; i < MB; ++i) {                                                            \
            const int8_t* qb = &x.q[(m + i) * x.cols + k];                                          \
            d[i][h] = DOT(d[i][h], lo, _mm256_set1_epi32(load_i32(qb)));                            \
            d[i][h] = DOT(d[i][h], hi, _mm256_set1_epi32(load_i32(qb + 4)));                        \
          }                                                                                         \
        }                                                                                           \
      }                                                                                             \
      for (int i = 0; i < MB; ++i) {                                                                \
        const __m256 a = _mm256_set1_ps(x.scale[(m + i) * x.groups + kb]);                          \
        for (int h = 0; h < 2; ++h)                                                                 \
          sum[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[i][h]), a, sum[i][h]);                   \
      }                                                                                             \
    }                                                                                               \
    for (int h = 0; h < 2; ++h) {                                                                   \
      const __m128i raw =                                                                           \
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(v.scales + g * TR + 8 * h));             \
      const __m256 scale = w.scale_dtype == DType::F16                                              \
                     ? _mm256_cvtph_ps(raw)                                                         \
                     : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));      \
      __m256 zero = _mm256_set1_ps(8.0f);                                                           \
      if (v.zeros) {                                                                                \
        int64_t z;                                                                                  \
        std::memcpy(&z, v.zeros + g * TR + 8 * h, 8);                                               \
        zero = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(z)));                      \
      }                                                                                             \
      const __m256 zero_scale = _mm256_mul_ps(zero, scale);                                         \
      for (int i = 0; i < MB; ++i)                                                                  \
        acc[i][h] = _mm256_fnmadd_ps(zero_scale, _mm256_set1_ps(corr[i * w.groups + g]),            \
                                     _mm256_fmadd_ps(scale, sum[i][h], acc[i][h]));                 \
    }                                                                                               \
  }                                                                                                 \
  for (int i = 0; i < MB; ++i) {                                                                    \
    _mm256_storeu_ps(out[i], acc[i][0]);                                                            \
    _mm256_storeu_ps(out[i] + 8, acc[i][1]);                                                        \
  }
// clang-format on

template <int MB>
WHITTLE_AVX2 void tile_avx2(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                            const float* corr, float (*out)[TR]) {
  WHITTLE_TILE256_BODY(dot_avx2)
}

template <int MB>
WHITTLE_AVXVNNI void tile_avxvnni(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m,
                                  const float* corr, float (*out)[TR]) {
  WHITTLE_TILE256_BODY(dot_vnni)
}
#undef WHITTLE_TILE256_BODY

// AMX int8, for 16 and more activation rows. Per weight tile, the codes are unpacked once into the
// tile unit's B operand as unsigned bytes 0..15: activation block b takes block/4 rows of 64 bytes,
// row j holding inputs 4j .. 4j+3 of the 16 weight rows, which is a packed block's low nibbles for
// even j and its high ones for odd j. Each 16 activation rows are the A operand, read in place from
// Int8Acts (int8, `cols` bytes apart), and one `tdpbsud` gives the 16 x 16 exact int32 dot products
// of an activation block. The float steps are block_step512's and group_step512's, so the bits
// equal every other kernel set's. Used where every activation block is whole (amx_fits; else the
// VNNI kernels).
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

// sum[i] = block_step of activation block kb's products (c, from a C tile) for rows m .. m + 15.
WHITTLE_AMX inline __attribute__((always_inline)) void amx_block(const Int8Acts& x, int64_t m,
                                                                 int64_t kb, const int32_t (*c)[TR],
                                                                 __m512* sum) {
#pragma GCC unroll 16
  for (int64_t i = 0; i < kAmxRows; ++i)
    sum[i] = block_step512(_mm512_load_si512(c[i]), x.scale[(m + i) * x.groups + kb], sum[i]);
}

// out[i] = group_step of weight group g for rows m .. m + 15; sum starts again from zero.
WHITTLE_AMX inline __attribute__((always_inline)) void amx_group(const PackedInt4& w,
                                                                 const TileView& v, int64_t g,
                                                                 const float* corr, __m512* sum,
                                                                 float (*out)[TR]) {
  const GroupScales512 s = group_scales512(w, v, g);
#pragma GCC unroll 16
  for (int64_t i = 0; i < kAmxRows; ++i) {
    _mm512_store_ps(out[i],
                    group_step512(sum[i], s, corr[i * w.groups + g], _mm512_load_ps(out[i])));
    sum[i] = _mm512_setzero_ps();
  }
}

// out[i][r] for activation rows m .. m + 15 of tile t, whose B operand is `unpacked`.
WHITTLE_AMX void tile_amx(const PackedInt4& w, int64_t t, const uint8_t* unpacked,
                          const Int8Acts& x, int64_t m, const float* corr, float (*out)[TR]) {
  const TileView v = view(w, t);
  const int64_t block = x.group_size, blocks = x.groups, b_bytes = block * TR;
  const int64_t per_group = w.group_size / block;  // whole (amx_fits); the last group may be short
  const int8_t* a = &x.q[m * x.cols];
  alignas(64) int32_t c[2][2][kAmxRows][TR];  // [step parity][chain]
  __m512 sum[kAmxRows];
  for (__m512& r : sum) r = _mm512_setzero_ps();
  for (int64_t i = 0; i < kAmxRows; ++i) std::fill_n(out[i], TR, 0.0f);
  // Step s flushes the products of step s - 1, then issues the tile products of blocks 2s and
  // 2s + 1 (in this order the flush's loads do not queue behind the new tile stores). Measured on
  // the dev box (GLM-5 expert [2048, 6144], 128 rows, one thread): 167 GMAC/s against 104 for the
  // AVX-512 VNNI kernel; the tile products alone ran at 338 and the flushes alone at 307, so the
  // two overlap little yet (docs/BENCHMARKS.md).
  for (int64_t kb = 0; kb < blocks + 2; kb += 2) {
    int32_t(*now)[kAmxRows][TR] = c[kb / 2 % 2];
    int32_t(*last)[kAmxRows][TR] = c[(kb / 2 + 1) % 2];
    for (int64_t j = kb - 2; j >= 0 && j < std::min(kb, blocks); ++j) {
      amx_block(x, m, j, last[j - (kb - 2)], sum);
      if ((j + 1) % per_group == 0 || j + 1 == blocks)  // the group's last block
        amx_group(w, v, j / per_group, corr, sum, out);
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
}
#endif  // __x86_64__

// Activation rows of tile t, up to kMaxRows (AVX-512, scalar) or 2 (256-bit: 16 vector registers)
// at a time.
void tile_rows(const PackedInt4& w, int64_t t, const Int8Acts& x, int64_t m, int64_t rows,
               const float* corr, float (*out)[TR], Isa isa) {
#if defined(__x86_64__)
  switch (isa) {
    case Isa::kAvx512Vnni:
    case Isa::kAmx: {
      using Kernel = void (*)(const PackedInt4&, int64_t, const Int8Acts&, int64_t, const float*,
                              float(*)[TR]);
      static constexpr Kernel kByRows[kMaxRows] = {
          tile_avx512<1>, tile_avx512<2>,  tile_avx512<3>,  tile_avx512<4>,
          tile_avx512<5>, tile_avx512<6>,  tile_avx512<7>,  tile_avx512<8>,
          tile_avx512<9>, tile_avx512<10>, tile_avx512<11>, tile_avx512<12>};
      return kByRows[std::min(rows, kMaxRows) - 1](w, t, x, m, corr, out);
    }
    case Isa::kAvxVnni:
      return rows == 1 ? tile_avxvnni<1>(w, t, x, m, corr, out)
                       : tile_avxvnni<2>(w, t, x, m, corr, out);
    case Isa::kAvx2:
      return rows == 1 ? tile_avx2<1>(w, t, x, m, corr, out) : tile_avx2<2>(w, t, x, m, corr, out);
    case Isa::kScalar:
      break;
  }
#endif
  tile_scalar(w, t, x, m, rows, corr, out);
}

int64_t rows_per_call(Isa isa) {
  return isa >= Isa::kAvx512Vnni || isa == Isa::kScalar ? kMaxRows : 2;
}

// C_g = Σ_b (Σq)_b · a_b over weight group g's activation blocks, fma in block order, for rows
// m0 .. m1 - 1 ([rows][w.groups]): the zero point's share, the same for every output.
void group_sums(const PackedInt4& w, const Int8Acts& x, int64_t m0, int64_t m1, float* corr) {
  for (int64_t m = m0; m < m1; ++m) {
    int64_t kb = 0;
    for (int64_t g = 0; g < w.groups; ++g) {
      float c = 0.0f;
      for (int64_t k0 = g * w.group_size, end = k0 + w.group_length(g); k0 < end;
           k0 += x.group_size, ++kb)
        c = block_step(x.sum[m * x.groups + kb], x.scale[m * x.groups + kb], c);
      corr[(m - m0) * w.groups + g] = c;
    }
  }
}

// One activation block: a = max |x| / 127, q = round(x / a) clamped to ±127 (a NaN input to -127,
// the same on both paths), Σq. The vector path gives the same bits: max is exact in any order and
// cvtps rounds to nearest even as nearbyint does.
void quantize_block(const float* x, int64_t n, int8_t* q, float& scale, int32_t& sum) {
  float amax = 0.0f;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(x[k]));
  if (!std::isfinite(amax)) amax = 0.0f;  // a NaN or inf input poisons the output either way
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    q[k] = static_cast<int8_t>(std::nearbyint(std::fmin(std::fmax(x[k] * inv, -127.0f), 127.0f)));
    sum += q[k];
  }
  scale = amax / 127.0f;
}

#if defined(__x86_64__)
// n a multiple of 16.
WHITTLE_AVX512 void quantize_block_avx512(const float* x, int64_t n, int8_t* q, float& scale,
                                          int32_t& sum) {
  __m512 amax = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 16)  // max(|x|, amax): a NaN |x| keeps amax, as std::max does
    amax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + k)), amax);
  float a = _mm512_reduce_max_ps(amax);
  if (!std::isfinite(a)) a = 0.0f;
  const __m512 inv = _mm512_set1_ps(a > 0.0f ? 127.0f / a : 0.0f);
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  __m512i total = _mm512_setzero_si512();
  for (int64_t k = 0; k < n; k += 16) {
    // max(v, -127): a NaN v gives -127, as std::fmax does.
    const __m512 v =
        _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + k), inv), lo), hi);
    const __m512i r = _mm512_cvtps_epi32(v);
    total = _mm512_add_epi32(total, r);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtsepi32_epi8(r));
  }
  sum = _mm512_reduce_add_epi32(total);
  scale = a / 127.0f;
}
#endif

}  // namespace

int64_t int4_act_block(const PackedInt4& w) {
  return std::gcd<int64_t>(kActBlock, w.group_size);
}

void quantize_acts(const float* x, int64_t M, int64_t K, int64_t group_size, Int8Acts& out,
                   Isa isa) {
  if (group_size < 1) fail("internal: activation group size {}", group_size);
  out.rows = M;
  out.cols = K;
  out.group_size = group_size;
  out.groups = (K + group_size - 1) / group_size;
  out.q.resize(static_cast<size_t>(M * K));
  out.scale.resize(static_cast<size_t>(M * out.groups));
  out.sum.resize(out.scale.size());
#if defined(__x86_64__)
  const bool vector = isa >= Isa::kAvx512Vnni;
#endif
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < out.groups; ++g) {
      const int64_t k0 = g * group_size, n = std::min(K, k0 + group_size) - k0;
      const float* xs = x + m * K + k0;
      int8_t* q = &out.q[m * K + k0];
      float& scale = out.scale[m * out.groups + g];
      int32_t& sum = out.sum[m * out.groups + g];
#if defined(__x86_64__)
      if (vector && n % 16 == 0) {
        quantize_block_avx512(xs, n, q, scale, sum);
        continue;
      }
#endif
      quantize_block(xs, n, q, scale, sum);
    }
}

void int4_tiles(const PackedInt4& w, const Int8Acts& x, int64_t m0, int64_t m1, int64_t t0,
                int64_t t1, float* y, int64_t ldy, bool accumulate, Isa isa) {
  // Many rows: blocks of rows whose activations fit in a quarter of L2, against blocks of tiles
  // that fit in half of it, so that each tile's pass over the rows reads its activations from L2
  // (a 512-token prompt's 3 MB of a 6144-wide input do not fit; every tile read them from L3
  // again). A row's bits do not depend on the rows beside it.
  const int64_t row_block =
      std::max(kMaxRows, kCacheActBytes / std::max<int64_t>(1, w.cols) / kMaxRows * kMaxRows);
  if (m1 - m0 > row_block && isa != Isa::kAmx) {
    const int64_t tile_block =
        std::max<int64_t>(1, kCacheTileBytes / static_cast<int64_t>(w.tile_bytes));
    for (int64_t tb = t0; tb < t1; tb += tile_block)
      for (int64_t mb = m0; mb < m1; mb += row_block)
        int4_tiles(w, x, mb, std::min(m1, mb + row_block), tb, std::min(t1, tb + tile_block), y,
                   ldy, accumulate, isa);
    return;
  }
  alignas(64) float out[16][TR];
  auto store = [&](int64_t t, int64_t m, int64_t rows, float(*tile_out)[TR]) {
    const int64_t n0 = t * TR, width = std::min(TR, w.rows - n0);
    for (int64_t i = 0; i < rows; ++i) {
      float* dst = y + (m + i) * ldy + n0;
      const float* src = tile_out[i];
      if (accumulate)
        for (int64_t r = 0; r < width; ++r) dst[r] += src[r];
      else
        std::copy_n(src, width, dst);
    }
  };
  thread_local std::vector<float> corr_buf;  // grows only: no allocation once warm
  if (corr_buf.size() < static_cast<size_t>((m1 - m0) * w.groups))
    corr_buf.resize(static_cast<size_t>((m1 - m0) * w.groups));
  float* corr = corr_buf.data();
  group_sums(w, x, m0, m1, corr);
  auto corr_of = [&](int64_t m) { return corr + (m - m0) * w.groups; };
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
  // Rows per kernel call: at most what a call takes, in as few calls as that allows, spread evenly
  // (64 rows as 11 × 5 and 9 rather than 12 × 5 and 4: a call of a few rows is the least
  // efficient).
  const int64_t most = rows_per_call(isa), calls = (m1 - m_vnni + most - 1) / most;
  const int64_t per_call = calls > 0 ? (m1 - m_vnni + calls - 1) / calls : most;
  for (int64_t t = t0; t < t1; ++t) {
#if defined(__x86_64__)
    if (amx) {
      amx_unpack(w, t, unpacked.data());
      for (int64_t m = m0; m < m_vnni; m += kAmxRows) {
        tile_amx(w, t, unpacked.data(), x, m, corr_of(m), out);
        store(t, m, kAmxRows, out);
      }
    }
    if (isa >= Isa::kAvx512Vnni && m1 - m0 == 1 && t + 1 < t1) {
      const bool four = t + kRowTiles <= t1;
      (four ? tiles_row_avx512<kRowTiles> : tiles_row_avx512<2>)(w, t, x, m0, corr, out);
      const int64_t n = four ? kRowTiles : 2;
      for (int64_t j = 0; j < n; ++j) store(t + j, m0, 1, out + j);
      t += n - 1;
      continue;
    }
    // 4 to 7 rows (a few sequences decoding together): two tiles per call, so that each broadcast
    // activation word serves both (from 8 rows on, tile_avx512's 8 or more rows per unpacked block
    // win).
    if (!amx && isa >= Isa::kAvx512Vnni && t + 1 < t1 && m1 - m0 >= 4 && m1 - m0 < 8) {
      tile2_avx512<4>(w, t, x, m0, corr, out);
      store(t, m0, 4, out);
      store(t + 1, m0, 4, out + 4);
      if (const int64_t rest = m1 - m0 - 4; rest > 0)
        for (int64_t u = t; u < t + 2; ++u) {
          tile_rows(w, u, x, m0 + 4, rest, corr_of(m0 + 4), out, isa);
          store(u, m0 + 4, rest, out);
        }
      ++t;
      continue;
    }
#endif
    for (int64_t m = m_vnni; m < m1; m += per_call) {
      const int64_t rows = std::min(per_call, m1 - m);
      tile_rows(w, t, x, m, rows, corr_of(m), out, isa);
      store(t, m, rows, out);
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
