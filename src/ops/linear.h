// linear: y = x · Wᵀ for a Weight in any stored format — the one entry point the model calls for
// every Linear layer. This is the correct path, not the fast one: each block of output rows is
// converted to float32 (`Weight::rows_to_f32`) into a per-thread buffer of ~256 KB and multiplied
// with OpenBLAS, so no weight is ever held whole in fp32 (aligned F32 weights are used in place).
// The fast int4 kernels replace the inner step per format later; this stays their oracle.
#pragma once

#include <cstdint>

#include "tensor/weight.h"

namespace whittle {

class ThreadPool;

// y[M, w.rows()] = x[M, w.cols()] · Wᵀ (+ y when accumulate). Output rows are split into blocks
// whose size depends on w.cols() only, so results do not depend on the thread count. Large
// products run on the pool; do not pass the pool from inside one of its own parallel_for jobs.
void linear(const Weight& w, const float* x, int64_t M, float* y, bool accumulate = false,
            ThreadPool* pool = nullptr);

// The fast path: the int4 kernels for a weight packed at load (ops/int4_linear.h), the
// widening GEMV for dense BF16 / F16 weights and decode batches of up to kDense16BatchRows rows
// (ops/dense16_gemv.h, kDense16MaxRows rows per pass over W), linear() for everything else. Within
// int8_error_bound of linear() for packed weights, within float rounding for the others.
void linear_fast(const Weight& w, const float* x, int64_t M, float* y, bool accumulate = false,
                 ThreadPool* pool = nullptr);

// Bytes of weights one linear_fast call reads for `w` (the packed copy when there is one).
size_t linear_fast_bytes(const Weight& w);

// Rows of W converted per block by linear() for M activation rows.
int64_t linear_block_rows(int64_t cols, int64_t M);

// The same product with the whole weight converted and double accumulation; slow, for tests.
void linear_reference(const Weight& w, const float* x, int64_t M, float* y,
                      bool accumulate = false);

}  // namespace whittle
