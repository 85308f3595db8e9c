// dense16_gemv: y = x · Wᵀ for a few activation rows (decode) and a dense BF16 or F16 weight read
// where it lies (lm_head, the dense MLPs, the protected modules). Rows of W are widened to float32
// in registers, which is exact, and multiplied with float32 activations by fma: only the order of
// the sums differs from the float32 reference. (AVX-512 BF16's dot product dpbf16 would round the
// activations to bf16. Tried for decode batches, where 8 rows are bound by the multiply-adds: 8
// rows of a 1 GiB GEMV in ~90 ms against ~95 for this kernel, but the bundled model's int4 export
// then decoded other greedy tokens than the reference path, and its logits left transformers' by
// 1e-3 of their scale; split into high and low halves to keep the precision, it needs more
// instructions per byte than the widening does.)
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cpu_isa.h"
#include "tensor/weight.h"

namespace whittle {

class ThreadPool;

// Activation rows this kernel takes at once (reading W once for all of them).
inline constexpr int64_t kDense16MaxRows = 8;
// linear_fast runs up to this many rows (a server's batched decode step) as groups of
// kDense16MaxRows, W read from memory once; more (a prefill) go to the converted-block
// sgemm of linear(). Each row's sums run in the same order whatever the other rows, so a sequence
// decodes the same bits alone or batched.
inline constexpr int64_t kDense16BatchRows = 32;

// True for dense BF16 / F16 weights (2-byte aligned, as safetensors lays them out).
bool dense16_supported(const Weight& w);

// Activation rows as the kernels read them: x itself, and for BF16 weights on AVX-512 its even and
// odd inputs apart ([rows][cols/2] each). Reused from call to call (no allocation once grown).
struct Dense16Acts {
  const float* x = nullptr;  // [rows, cols], not owned
  int64_t rows = 0, cols = 0;
  DType dtype = DType::BF16;  // prepared for weights of this dtype, on this kernel set
  Isa isa = Isa::kScalar;
  std::vector<float> split;
};
// x [M, w.cols()] prepared for weights of w's dtype and shape (dense16_rows checks both).
void dense16_prepare(const Weight& w, const float* x, int64_t M, Dense16Acts& out,
                     Isa isa = active_isa());

// Columns [n0, n1) of y [x.rows, w.rows()] = x · Wᵀ (+ y) on the calling thread: a piece of a
// larger parallel job (the MoE layer's). Any number of rows, W read once per kDense16MaxRows of
// them; a row's bits do not depend on the others.
void dense16_rows(const Weight& w, const Dense16Acts& x, int64_t n0, int64_t n1, float* y,
                  bool accumulate, Isa isa = active_isa());

// y [M, N] = x [M, K] · Wᵀ (+ y), M ≤ kDense16BatchRows. Rows of W are spread over the pool.
void dense16_gemv(const Weight& w, const float* x, int64_t M, float* y, bool accumulate,
                  ThreadPool* pool, Isa isa = active_isa());

}  // namespace whittle
