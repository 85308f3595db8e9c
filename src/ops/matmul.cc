#include "ops/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <string_view>

#include "util/thread_pool.h"

namespace whittle {

std::string openblas_core() {
  std::string name = openblas_get_corename();
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

const char* openblas_better_core() {
#if defined(__x86_64__)
  const std::string core = openblas_core();
  auto one_of = [&](std::initializer_list<std::string_view> names) {
    for (std::string_view n : names)
      if (core == n) return true;
    return false;
  };
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return one_of({"skylakex", "cooperlake", "sapphirerapids"}) ? nullptr : "SKYLAKEX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return one_of({"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"}) ? nullptr
                                                                                  : "HASWELL";
#endif
  return nullptr;
}

namespace {

// OpenBLAS runs single-threaded in whittle; parallelism comes from ThreadPool (see matmul.h).
// Set before main() runs, so no BLAS call ever starts OpenBLAS's thread server.
[[maybe_unused]] const bool kBlasSingleThreaded = [] {
  openblas_set_num_threads(1);
  return true;
}();

// Columns [n0, n1) of y: rows n0..n1 of W, written with row stride N.
void matmul_nt_columns(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                       bool accumulate, int64_t n0, int64_t n1) {
  matmul_nt_strided(x, w + n0 * K, y + n0, M, K, n1 - n0, N, accumulate);
}

}  // namespace

void matmul_nt_strided(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                       int64_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  const float beta = accumulate ? 1.0f : 0.0f;
  if (M == 1) {
    // GEMV is what decode does; sgemv avoids sgemm's packing overhead.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f, w,
                static_cast<int>(K), x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), w, static_cast<int>(K), beta, y,
              static_cast<int>(ldy));
}

namespace {

// Output columns [0, N) split over the pool in blocks of a multiple of 16 (whole cache lines of y
// and SIMD widths of the BLAS kernel), about two per worker so an uneven split costs little; one
// call on this thread when the product is small. fn(n0, n1) computes one block.
template <typename Columns>
void split_columns(int64_t M, int64_t K, int64_t N, ThreadPool* pool, Columns fn) {
  if (pool == nullptr || pool->size() < 2 || M * N * K < kParallelMatmulFlops || N < 2) {
    fn(0, N);
    return;
  }
  const int64_t blocks = static_cast<int64_t>(pool->size()) * 2;
  const int64_t width = std::max<int64_t>(16, (N + blocks - 1) / blocks + 15) / 16 * 16;
  const int64_t n_blocks = (N + width - 1) / width;
  pool->parallel_for(static_cast<size_t>(n_blocks), [&](size_t begin, size_t end) {
    for (size_t b = begin; b < end; ++b) {
      const int64_t n0 = static_cast<int64_t>(b) * width;
      fn(n0, std::min(N, n0 + width));
    }
  });
}

}  // namespace

void matmul_nt(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate, ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  split_columns(M, K, N, pool, [&](int64_t n0, int64_t n1) {
    matmul_nt_columns(x, w, y, M, K, N, accumulate, n0, n1);
  });
}

void matmul_nn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate) {
  matmul_nn(x, w, y, M, K, N, accumulate, nullptr);
}

void matmul_nn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate, ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  split_columns(M, K, N, pool, [&](int64_t n0, int64_t n1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M),
                static_cast<int>(n1 - n0), static_cast<int>(K), 1.0f, x, static_cast<int>(K),
                w + n0, static_cast<int>(N), accumulate ? 1.0f : 0.0f, y + n0, static_cast<int>(N));
  });
}

void matmul_tn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate, ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: sgemm with k = 0 would still scale y by beta, but say it plainly
    if (!accumulate) std::fill_n(y, M * N, 0.0f);
    return;
  }
  split_columns(M, K, N, pool, [&](int64_t n0, int64_t n1) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(M),
                static_cast<int>(n1 - n0), static_cast<int>(K), 1.0f, x, static_cast<int>(M),
                w + n0, static_cast<int>(N), accumulate ? 1.0f : 0.0f, y + n0, static_cast<int>(N));
  });
}

void matmul_tn_reference(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                         bool accumulate) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = accumulate ? y[m * N + n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[k * M + m]) * w[k * N + n];
      y[m * N + n] = static_cast<float>(acc);
    }
}

void matmul_nt_reference(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                         bool accumulate) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = accumulate ? y[m * N + n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[m * K + k]) * w[n * K + k];
      y[m * N + n] = static_cast<float>(acc);
    }
}

}  // namespace whittle
