// Dense float32 matrix products in the layout weights come in: y[M,N] = x[M,K] · W[N,K]^T.
// The fast path is OpenBLAS sgemm (multi-threaded over all cores); the scalar reference is the
// oracle the fast path is tested against.
#pragma once

#include <cstdint>

namespace whittle {

// y = x · W^T (+ y when accumulate). x: [M, K] row-major, W: [N, K] row-major, y: [M, N].
void matmul_nt(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate = false);

// Same contract, plain loops with double accumulation; slow, for tests.
void matmul_nt_reference(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                         bool accumulate = false);

// y = x · W (no transpose). x: [M, K], W: [K, N], y: [M, N].
void matmul_nn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate = false);

}  // namespace whittle
