#include "ops/dense16_gemv.h"

// GCC 12 warns inside its own AVX-512 headers (their _mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "util/error.h"
#include "util/thread_pool.h"

namespace whittle {

namespace {

constexpr int64_t kRowBlock = 4;  // rows of W per step: four fma chains per activation row
// Rows of W per unit of work on the pool, and per pass of more than kDense16MaxRows activation
// rows (a multiple of kRowBlock).
constexpr int64_t kRowUnit = 8;
// Software prefetch distance in each row's stream (as in ops/int4_linear.cc).
constexpr int64_t kPrefetchBytes = 8192;
// The BF16 kernel's, into L1: one row of a GLM-5-shaped decode (3 GB per token, 2.35 of them bf16)
// went from 7.48 / 7.17 / 7.61 / 7.58 / 7.80 / 6.33 to 7.50 / 7.95 / 7.85 / 8.67 / 7.91 / 7.96
// tokens/s, runs alternated (docs/BENCHMARKS.md); the hardware prefetcher alone fell behind.
constexpr int64_t kPairsPrefetchBytes = 2048;

template <bool Bf16>
float widen(uint16_t bits) {
  return Bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}

template <bool Bf16>
void rows_scalar(const uint16_t* w, int64_t K, const float* x, int64_t M, int64_t n0, int64_t n1,
                 float* y, int64_t ldy, bool accumulate) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(widen<Bf16>(w[n * K + k]), x[m * K + k], s);
      float& out = y[m * ldy + n];
      out = accumulate ? out + s : s;
    }
}

#if defined(__x86_64__)
#define WHITTLE_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define WHITTLE_AVX2 __attribute__((target("avx2,fma,f16c")))

// F16 (BF16 takes rows_bf16_pairs_avx512 below): rows widened by cvtph, 16 per load.
template <int MB>
WHITTLE_AVX512 void rows_f16_avx512(const uint16_t* w, int64_t K, const float* x, int64_t n0,
                                    int64_t n1, float* y, int64_t ldy, bool accumulate) {
  for (int64_t n = n0; n < n1; n += kRowBlock) {
    const int64_t rb = std::min(kRowBlock, n1 - n);
    __m512 acc[kRowBlock][MB];
    for (auto& row : acc)
      for (__m512& a : row) a = _mm512_setzero_ps();
    const uint16_t* wr[kRowBlock];
    for (int64_t r = 0; r < kRowBlock; ++r) wr[r] = w + (n + std::min(r, rb - 1)) * K;
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 mask = K - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (K - k)) - 1);
      __m512 xv[MB];
      for (int m = 0; m < MB; ++m) xv[m] = _mm512_maskz_loadu_ps(mask, x + m * K + k);
      for (int64_t r = 0; r < kRowBlock; ++r) {
        if (k % 32 == 0)
          _mm_prefetch(reinterpret_cast<const char*>(wr[r] + k) + kPrefetchBytes, _MM_HINT_T2);
        const __m512 wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, wr[r] + k));
        for (int m = 0; m < MB; ++m) acc[r][m] = _mm512_fmadd_ps(wv, xv[m], acc[r][m]);
      }
    }
    for (int64_t r = 0; r < rb; ++r)
      for (int m = 0; m < MB; ++m) {
        const float s = _mm512_reduce_add_ps(acc[r][m]);
        float& out = y[m * ldy + n + r];
        out = accumulate ? out + s : s;
      }
  }
}

// BF16 without widening loads: one 64-byte load holds 16 pairs (k even, k odd) of a row; the high
// half of each 32-bit lane, masked, is the odd element as float32 and the lane shifted left by 16
// the even one. Two ALU operations and two fma per 32 weights (the widening loads took three and
// two per 16), against activations split once per call into even and odd halves.
// `Prefetch`: ask for W's lines ahead (not when a second set of rows reads a chunk already in L1);
// near a row's end, the same row of the next block of kRowBlock rows (W's rows are `row_bytes`
// apart): past its end a row's prefetch would land in the next row, which its own stream has
// already read, and the next block's rows 1-3 would start with their first lines unrequested.
template <int MB, bool Prefetch = true>
WHITTLE_AVX512 inline __attribute__((always_inline)) void pairs_span(
    __m512 (&acc)[kRowBlock][MB], const uint16_t* const (&wr)[kRowBlock], const float* xe,
    const float* xo, int64_t pairs, int64_t j0, int64_t j1, int64_t row_bytes) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  // The chains in locals whose address is never taken: updated in `acc` itself, GCC stored every
  // chain back to memory after each fma (__m512 may alias the float activations it loads).
  __m512 a[kRowBlock][MB];
#pragma GCC unroll 4
  for (int64_t r = 0; r < kRowBlock; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) a[r][m] = acc[r][m];
  for (int64_t j = j0; j < j1; j += 16) {
    const __mmask16 mask = j1 - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (j1 - j)) - 1);
    __m512 even[MB], odd[MB];
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) {
      even[m] = _mm512_maskz_loadu_ps(mask, xe + m * pairs + j);
      odd[m] = _mm512_maskz_loadu_ps(mask, xo + m * pairs + j);
    }
    const int64_t ahead = 4 * j + kPairsPrefetchBytes;
    const int64_t next_block = ahead >= row_bytes ? (kRowBlock - 1) * row_bytes : 0;
#pragma GCC unroll 4
    for (int64_t r = 0; r < kRowBlock; ++r) {
      if constexpr (Prefetch)
        _mm_prefetch(reinterpret_cast<const char*>(wr[r]) + ahead + next_block, _MM_HINT_T0);
      const __m512i v = _mm512_maskz_loadu_epi32(mask, wr[r] + 2 * j);
      const __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      const __m512 hi = _mm512_castsi512_ps(_mm512_and_si512(v, high));
#pragma GCC unroll 8
      for (int m = 0; m < MB; ++m) {
        a[r][m] = _mm512_fmadd_ps(lo, even[m], a[r][m]);
        a[r][m] = _mm512_fmadd_ps(hi, odd[m], a[r][m]);
      }
    }
  }
#pragma GCC unroll 4
  for (int64_t r = 0; r < kRowBlock; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) acc[r][m] = a[r][m];
}

template <int MB>
WHITTLE_AVX512 void pairs_store(__m512 (&acc)[kRowBlock][MB],
                                const uint16_t* const (&wr)[kRowBlock], int64_t K, const float* x,
                                int64_t rb, float* y, int64_t ldy, bool accumulate) {
  for (int64_t r = 0; r < std::min(rb, kRowBlock); ++r)
    for (int m = 0; m < MB; ++m) {
      float s = _mm512_reduce_add_ps(acc[r][m]);
      if (K % 2 != 0) s = std::fma(bf16_to_f32(wr[r][K - 1]), x[m * K + K - 1], s);
      float& out = y[m * ldy + r];
      out = accumulate ? out + s : s;
    }
}

// pairs_span in a call of its own, for the 5-8-row kernel's two sets of chains, each kept in
// memory between its passes: inlined, GCC kept both sets live and spilled chains inside the loop.
template <int M, bool Prefetch>
WHITTLE_AVX512 __attribute__((noinline)) void pairs_span_kept(
    __m512 (&kept)[kRowBlock][M], const uint16_t* const (&wr)[kRowBlock], const float* xe,
    const float* xo, int64_t pairs, int64_t j0, int64_t j1, int64_t row_bytes) {
  pairs_span<M, Prefetch>(kept, wr, xe, xo, pairs, j0, j1, row_bytes);
}

// The chains of 4 rows of W with 4 activation rows fill the registers. With 5 to 8 rows the pairs
// run in chunks: per chunk, rows 0-3, then rows 4 .. MB-1 while the chunk of W is still in L1,
// each set of chains kept in memory between its passes; the weight is read from memory once per 8
// rows. Each chain is still one accumulator over K in order: a row's bits do not depend on the
// others.
template <int MB>
WHITTLE_AVX512 void rows_bf16_pairs_avx512(const uint16_t* w, int64_t K, const float* x,
                                           const float* xe, const float* xo, int64_t n0, int64_t n1,
                                           float* y, int64_t ldy, bool accumulate) {
  constexpr int MA = MB < 4 ? MB : 4;
  constexpr int MC = MB > 4 ? MB - 4 : 1;
  constexpr int64_t kChunkPairs = 256;  // 1 KB of each row of W; 16 KB of 8 activation rows
  const int64_t pairs = K / 2;
  for (int64_t n = n0; n < n1; n += kRowBlock) {
    const int64_t rb = std::min(kRowBlock, n1 - n);
    __m512 acc[kRowBlock][MA], keep[kRowBlock][MC];
    for (auto& row : acc)
      for (__m512& a : row) a = _mm512_setzero_ps();
    for (auto& row : keep)
      for (__m512& a : row) a = _mm512_setzero_ps();
    const uint16_t* wr[kRowBlock];
    for (int64_t r = 0; r < kRowBlock; ++r) wr[r] = w + (n + std::min(r, rb - 1)) * K;
    if constexpr (MB <= 4) {
      pairs_span<MA>(acc, wr, xe, xo, pairs, 0, pairs, 2 * K);
    } else {
      for (int64_t c = 0; c < pairs; c += kChunkPairs) {
        const int64_t c1 = std::min(pairs, c + kChunkPairs);
        pairs_span_kept<MA, true>(acc, wr, xe, xo, pairs, c, c1, 2 * K);
        pairs_span_kept<MC, /*Prefetch=*/false>(keep, wr, xe + 4 * pairs, xo + 4 * pairs, pairs, c,
                                                c1, 2 * K);
      }
      pairs_store<MC>(keep, wr, K, x + 4 * K, rb, y + 4 * ldy + n, ldy, accumulate);
    }
    pairs_store<MA>(acc, wr, K, x, rb, y + n, ldy, accumulate);
  }
}

template <bool Bf16>
WHITTLE_AVX2 inline __attribute__((always_inline)) __m256 widen8(__m128i raw) {
  if constexpr (Bf16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  else
    return _mm256_cvtph_ps(raw);
}

WHITTLE_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 256-bit: one activation row per pass (16 vector registers), the tail of K in scalar code.
template <bool Bf16>
WHITTLE_AVX2 void rows_avx2(const uint16_t* w, int64_t K, const float* x, int64_t M, int64_t n0,
                            int64_t n1, float* y, int64_t ldy, bool accumulate) {
  const int64_t K8 = K / 8 * 8;
  for (int64_t n = n0; n < n1; n += kRowBlock) {
    const int64_t rb = std::min(kRowBlock, n1 - n);
    for (int64_t m = 0; m < M; ++m) {
      __m256 acc[kRowBlock];
      for (__m256& a : acc) a = _mm256_setzero_ps();
      const float* xm = x + m * K;
      for (int64_t k = 0; k < K8; k += 8) {
        const __m256 xv = _mm256_loadu_ps(xm + k);
        for (int64_t r = 0; r < rb; ++r) {
          const __m128i raw =
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (n + r) * K + k));
          acc[r] = _mm256_fmadd_ps(widen8<Bf16>(raw), xv, acc[r]);
        }
      }
      for (int64_t r = 0; r < rb; ++r) {
        float s = hsum8(acc[r]);
        for (int64_t k = K8; k < K; ++k) s = std::fma(widen<Bf16>(w[(n + r) * K + k]), xm[k], s);
        float& out = y[m * ldy + n + r];
        out = accumulate ? out + s : s;
      }
    }
  }
}
#endif  // __x86_64__

// `xe` / `xo`: the activations' even and odd inputs, [M][K/2] each (the AVX-512 BF16 kernel's).
template <bool Bf16>
void rows(const uint16_t* w, int64_t K, const float* x, const float* xe, const float* xo, int64_t M,
          int64_t n0, int64_t n1, float* y, int64_t ldy, bool accumulate, Isa isa) {
#if defined(__x86_64__)
  if (Bf16 && isa >= Isa::kAvx512Vnni) {
    using Kernel = void (*)(const uint16_t*, int64_t, const float*, const float*, const float*,
                            int64_t, int64_t, float*, int64_t, bool);
    static constexpr Kernel kByRows[kDense16MaxRows] = {
        rows_bf16_pairs_avx512<1>, rows_bf16_pairs_avx512<2>, rows_bf16_pairs_avx512<3>,
        rows_bf16_pairs_avx512<4>, rows_bf16_pairs_avx512<5>, rows_bf16_pairs_avx512<6>,
        rows_bf16_pairs_avx512<7>, rows_bf16_pairs_avx512<8>};
    return kByRows[std::min(M, kDense16MaxRows) - 1](w, K, x, xe, xo, n0, n1, y, ldy, accumulate);
  }
  if (!Bf16 && isa >= Isa::kAvx512Vnni) {
    using Kernel =
        void (*)(const uint16_t*, int64_t, const float*, int64_t, int64_t, float*, int64_t, bool);
    static constexpr Kernel kByRows[kRowBlock] = {rows_f16_avx512<1>, rows_f16_avx512<2>,
                                                  rows_f16_avx512<3>, rows_f16_avx512<4>};
    for (int64_t m0 = 0; m0 < M; m0 += kRowBlock)
      kByRows[std::min(kRowBlock, M - m0) - 1](w, K, x + m0 * K, n0, n1, y + m0 * ldy, ldy,
                                               accumulate);
    return;
  }
  if (isa != Isa::kScalar) return rows_avx2<Bf16>(w, K, x, M, n0, n1, y, ldy, accumulate);
#endif
  rows_scalar<Bf16>(w, K, x, M, n0, n1, y, ldy, accumulate);
}

}  // namespace

bool dense16_supported(const Weight& w) {
  return w.format() == WeightFormat::kDense &&
         (w.dtype() == DType::BF16 || w.dtype() == DType::F16) &&
         reinterpret_cast<uintptr_t>(w.dense_rows()) % alignof(uint16_t) == 0;
}

void dense16_prepare(const Weight& w, const float* x, int64_t M, Dense16Acts& out, Isa isa) {
  const int64_t K = w.cols(), pairs = K / 2;
  out.x = x;
  out.rows = M;
  out.cols = K;
  out.dtype = w.dtype();
  out.isa = isa;
  out.split.clear();
  if (w.dtype() != DType::BF16 || isa < Isa::kAvx512Vnni) return;
  out.split.resize(static_cast<size_t>(2 * M * pairs));  // grows once, then reused
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < pairs; ++j) {
      out.split[m * pairs + j] = x[m * K + 2 * j];
      out.split[(M + m) * pairs + j] = x[m * K + 2 * j + 1];
    }
}

void dense16_rows(const Weight& w, const Dense16Acts& x, int64_t n0, int64_t n1, float* y,
                  bool accumulate, Isa isa) {
  const int64_t M = x.rows, N = w.rows(), K = w.cols();
  if (!dense16_supported(w) || K != x.cols || w.dtype() != x.dtype || isa != x.isa || n0 < 0 ||
      n1 > N)
    fail(
        "internal: dense16_rows on {} ({}) with activations of {} columns prepared for {} / {}, "
        "rows [{}, {})",
        w.module(), w.describe(), x.cols, dtype_name(x.dtype), isa_name(x.isa), n0, n1);
  if (M == 0 || n0 >= n1) return;
  // Rows are 2-byte aligned (dense16_supported); the vector kernels load them unaligned.
  const auto* data = reinterpret_cast<const uint16_t*>(w.dense_rows());
  const bool bf16 = w.dtype() == DType::BF16;
  const int64_t pairs = K / 2;
  // Activation rows [m0, m0 + count) against rows [a, b) of W.
  auto group = [&](int64_t m0, int64_t count, int64_t a, int64_t b) {
    const float* xm = x.x + m0 * K;
    const float* xe = x.split.empty() ? nullptr : x.split.data() + m0 * pairs;
    const float* xo = x.split.empty() ? nullptr : x.split.data() + (M + m0) * pairs;
    if (bf16)
      rows<true>(data, K, xm, xe, xo, count, a, b, y + m0 * N, N, accumulate, isa);
    else
      rows<false>(data, K, xm, xe, xo, count, a, b, y + m0 * N, N, accumulate, isa);
  };
  if (M <= kDense16MaxRows) return group(0, M, n0, n1);
  // More rows: every group of kDense16MaxRows against a few rows of W at a time, which the next
  // group then reads from cache.
  for (int64_t a = n0; a < n1; a += kRowUnit)
    for (int64_t m0 = 0; m0 < M; m0 += kDense16MaxRows)
      group(m0, std::min(kDense16MaxRows, M - m0), a, std::min(n1, a + kRowUnit));
}

void dense16_gemv(const Weight& w, const float* x, int64_t M, float* y, bool accumulate,
                  ThreadPool* pool, Isa isa) {
  if (!dense16_supported(w) || M < 1 || M > kDense16BatchRows)
    fail("internal: dense16_gemv on {} ({}) with {} rows", w.module(), w.describe(), M);
  thread_local Dense16Acts buffer;
  Dense16Acts& acts = buffer;  // the caller's: a worker naming `buffer` would get its own
  dense16_prepare(w, x, M, acts, isa);
  const int64_t N = w.rows(), K = w.cols();
  auto run = [&](size_t b0, size_t b1) {
    dense16_rows(w, acts, static_cast<int64_t>(b0) * kRowUnit,
                 std::min(N, static_cast<int64_t>(b1) * kRowUnit), y, accumulate, isa);
  };
  const size_t units = static_cast<size_t>((N + kRowUnit - 1) / kRowUnit);
  const size_t grain =
      static_cast<size_t>(std::max<int64_t>(1, (int64_t{1} << 15) / (kRowUnit * K * M)));
  if (pool != nullptr)
    pool->parallel_for(units, run, grain);
  else
    run(0, units);
}

}  // namespace whittle
