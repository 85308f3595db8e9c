#include "ops/memory_bandwidth.h"

// GCC 12 warns inside its own AVX-512 headers (their _mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ops/cpu_isa.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace whittle {

namespace {

#if defined(__x86_64__)
// Four streams (the quarters of the range), each prefetched 2 KB ahead: the fastest way to read
// found on the dev box (two streams prefetched 512 bytes ahead read 5-10 % less, one plain stream
// ~85 % of it; docs/BENCHMARKS.md), so that the ratio kernels are held to is against the best this
// code knows how to read.
__attribute__((target("avx512f"))) uint64_t read_avx512(const std::byte* p, size_t n) {
  constexpr size_t kAhead = 2048;
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  const size_t quarter = n / 4 / 64 * 64;
  const std::byte *p0 = p, *p1 = p + quarter, *p2 = p1 + quarter, *p3 = p2 + quarter;
  for (size_t i = 0; i < quarter; i += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p0 + i) + kAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p1 + i) + kAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p2 + i) + kAhead, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p3 + i) + kAhead, _MM_HINT_T0);
    a = _mm512_xor_si512(a, _mm512_load_si512(p0 + i));
    b = _mm512_xor_si512(b, _mm512_load_si512(p1 + i));
    c = _mm512_xor_si512(c, _mm512_load_si512(p2 + i));
    d = _mm512_xor_si512(d, _mm512_load_si512(p3 + i));
  }
  return static_cast<uint64_t>(
      _mm512_reduce_add_epi64(_mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d))));
}

__attribute__((target("avx2"))) uint64_t read_avx2(const std::byte* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i + 128 <= n; i += 128) {
    a = _mm256_xor_si256(a, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    b = _mm256_xor_si256(b, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    c = _mm256_xor_si256(c, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    d = _mm256_xor_si256(d, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i x = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
  return static_cast<uint64_t>(_mm256_extract_epi64(x, 0) ^ _mm256_extract_epi64(x, 1) ^
                               _mm256_extract_epi64(x, 2) ^ _mm256_extract_epi64(x, 3));
}
#endif

uint64_t read_scalar(const std::byte* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    s ^= v;
  }
  return s;
}

uint64_t read_block(const std::byte* p, size_t n) {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512Vnni) return read_avx512(p, n);
  if (isa != Isa::kScalar) return read_avx2(p, n);
#endif
  return read_scalar(p, n);
}

}  // namespace

Bandwidth measure_read_bandwidth(ThreadPool& pool, size_t bytes, int passes) {
  bytes = std::max<size_t>(bytes / (1 << 21) * (1 << 21), 1 << 21);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) fail("cannot allocate {} bytes to measure memory bandwidth", bytes);
  madvise(mem, bytes, MADV_HUGEPAGE);
  auto* p = static_cast<std::byte*>(mem);
  // Distinct values per page, so no page is shared with the zero page.
  pool.parallel_for(bytes / 4096, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) std::memset(p + i * 4096, static_cast<int>(i), 4096);
  });
  const size_t threads = pool.size(), share = bytes / threads / 256 * 256;
  std::atomic<uint64_t> sink{0};
  std::vector<double> gbs;
  for (int pass = 0; pass <= passes; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(
        threads,
        [&](size_t b, size_t e) {
          for (size_t i = b; i < e; ++i) sink ^= read_block(p + i * share, share);
        },
        1);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass > 0) gbs.push_back(static_cast<double>(share * threads) / s / 1e9);
  }
  munmap(mem, bytes);
  std::sort(gbs.begin(), gbs.end());
  Bandwidth b;
  b.best_gbs = gbs.back();
  b.median_gbs = gbs[gbs.size() / 2];
  b.bytes = share * threads;
  b.passes = passes;
  return b;
}

}  // namespace whittle
