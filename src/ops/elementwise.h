// Small vector kernels of the transformer block: norms, activations, softmax, top-k.
#pragma once

#include <cstdint>
#include <vector>

namespace whittle {

// out = x * rsqrt(mean(x^2) + eps) * weight, over one row of n values. out may alias x.
void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps);
// Row-wise over `rows` rows of n values.
void rms_norm_rows(const float* x, const float* weight, float* out, int64_t rows, int64_t n,
                   float eps);

// out = (x - mean) * rsqrt(var + eps) * weight + bias (biased variance, as torch's LayerNorm).
void layer_norm(const float* x, const float* weight, const float* bias, float* out, int64_t n,
                float eps);

// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);

// In-place softmax over n values; -inf entries get probability 0. At least one entry must be
// finite.
void softmax(float* x, int64_t n);

// Indices of the k largest values (k <= n), in descending value order; ties go to the lower index.
std::vector<int32_t> top_k(const float* x, int64_t n, int64_t k);
// The same into `out` (reusing its memory).
void top_k(const float* x, int64_t n, int64_t k, std::vector<int32_t>& out);
// Makes this thread's top_k scratch hold n values, so that calls up to n allocate nothing.
void top_k_reserve(int64_t n);

}  // namespace whittle
