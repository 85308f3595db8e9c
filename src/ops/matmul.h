// Dense float32 matrix products in the layout weights come in: y[M,N] = x[M,K] · W[N,K]^T.
// The fast path is single-threaded OpenBLAS sgemm/sgemv on column blocks that whittle's own
// ThreadPool spreads over its workers: one set of threads in the process. (OpenBLAS's own threads
// spin between calls; next to whittle's workers, or on a machine with other load, they made decode
// 300x slower, measured on the 2-core dev box.) The scalar reference is the oracle for both.
#pragma once

#include <cstdint>
#include <string>

namespace whittle {

class ThreadPool;

// OpenBLAS picks its kernels once, when it is loaded, from the CPU's model number; on a virtual
// machine that reports a generic model it falls back to Prescott (SSE3) kernels: sgemm ~3x slower
// on an AVX-512 machine (prefill of a GLM-5-shaped model 26 -> 38 tokens/s). Returns the core
// OpenBLAS should be told to use through OPENBLAS_CORETYPE (read only at load) when the one it
// chose is below what the CPU supports ("SKYLAKEX" for AVX-512, "HASWELL" for AVX2), else null.
const char* openblas_better_core();
// The kernel set OpenBLAS chose ("skylakex", "prescott", ...).
std::string openblas_core();

// y = x · W^T (+ y when accumulate). x: [M, K] row-major, W: [N, K] row-major, y: [M, N].
// With a pool, products of at least kParallelMatmulFlops are split over its workers by output
// column; do not pass the pool from inside one of its own parallel_for jobs.
void matmul_nt(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate = false, ThreadPool* pool = nullptr);

// Smaller products run on the calling thread: waking workers costs more than they save.
inline constexpr int64_t kParallelMatmulFlops = int64_t{1} << 18;

// Single-threaded y[:, 0:N] = x · W^T (+ y) where y's rows are `ldy` floats apart: the block of
// output columns that one row block of a weight produces.
void matmul_nt_strided(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                       int64_t ldy, bool accumulate = false);

// Same contract, plain loops with double accumulation; slow, for tests.
void matmul_nt_reference(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                         bool accumulate = false);

// y = x · W (no transpose). x: [M, K], W: [K, N], y: [M, N]. Single-threaded.
void matmul_nn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate = false);

// The same product split by output column over a pool's workers (products of at least
// kParallelMatmulFlops): the input gradient dx = dy · W of a Linear, W [out, in] as stored.
void matmul_nn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate, ThreadPool* pool);

// y = xᵀ · W (+ y when accumulate). x: [K, M] row-major, W: [K, N] row-major, y: [M, N]: the weight
// gradient dW [out, in] = dyᵀ · x of a Linear over K rows (dy [K, out], x [K, in]). With a pool,
// split by output column like matmul_nt.
void matmul_tn(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
               bool accumulate = false, ThreadPool* pool = nullptr);

// Same contract as matmul_tn, plain loops with double accumulation; slow, for tests.
void matmul_tn_reference(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N,
                         bool accumulate = false);

}  // namespace whittle
