#include "ops/matmul.h"

#include <cblas.h>

namespace whittle {

void matmul_nt(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (M == 1) {
    // GEMV is what decode does; sgemv avoids sgemm's packing overhead.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f, w,
                static_cast<int>(K), x, 1, accumulate ? 1.0f : 0.0f, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), w, static_cast<int>(K),
              accumulate ? 1.0f : 0.0f, y, static_cast<int>(N));
}

void matmul_nn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, bool accumulate) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), w, static_cast<int>(N),
              accumulate ? 1.0f : 0.0f, y, static_cast<int>(N));
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
