// dense16_gemv: y = x · Wᵀ for a few activation rows (decode) and a dense BF16 or F16 weight read
// where it lies (lm_head, the dense MLPs, the protected modules). Rows of W are widened to float32
// in registers, which is exact, and multiplied with float32 activations by fma: only the order of
// the sums differs from the float32 reference. (AVX-512 BF16's dot product would round the
// activations to bf16; split into high and low halves to keep their precision it needs as many
// instructions per byte as the widening does, and decode is bound by memory, not by these.)
#pragma once

#include <cstdint>

#include "ops/cpu_isa.h"
#include "tensor/weight.h"

namespace whittle {

class ThreadPool;

// Activation rows this kernel takes at once.
inline constexpr int64_t kDense16MaxRows = 4;
// linear_fast runs up to this many rows (a server's batched decode step) as groups of
// kDense16MaxRows, reading the weight once per group; more (a prefill) go to the converted-block
// sgemm of linear(). Each row's sums run in the same order whatever the other rows, so a sequence
// decodes the same bits alone or batched.
inline constexpr int64_t kDense16BatchRows = 32;

// True for dense BF16 / F16 weights (2-byte aligned, as safetensors lays them out).
bool dense16_supported(const Weight& w);

// y [M, N] = x [M, K] · Wᵀ (+ y), M ≤ kDense16MaxRows. Rows of W are spread over the pool.
void dense16_gemv(const Weight& w, const float* x, int64_t M, float* y, bool accumulate,
                  ThreadPool* pool, Isa isa = active_isa());

}  // namespace whittle
