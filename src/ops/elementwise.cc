#include "ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/error.h"

namespace whittle {

void rms_norm(const float* x, const float* weight, float* out, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * weight[i];
}

void rms_norm_rows(const float* x, const float* weight, float* out, int64_t rows, int64_t n,
                   float eps) {
  for (int64_t r = 0; r < rows; ++r) rms_norm(x + r * n, weight, out + r * n, n, eps);
}

void layer_norm(const float* x, const float* weight, const float* bias, float* out, int64_t n,
                float eps) {
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  double var = 0.0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  const float r = 1.0f / std::sqrt(static_cast<float>(var) + eps);
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(x[i] - mean) * r * weight[i] + bias[i];
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void softmax(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::isinf(x[i]) && x[i] < 0 ? 0.0f : std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

namespace {
std::vector<int32_t>& top_k_scratch() {
  thread_local std::vector<int32_t> idx;  // reused: the DSA indexer calls top_k per token and layer
  return idx;
}
}  // namespace

void top_k_reserve(int64_t n) {
  top_k_scratch().reserve(static_cast<size_t>(n));
}

void top_k(const float* x, int64_t n, int64_t k, std::vector<int32_t>& out) {
  if (k < 0 || k > n) fail("internal: top-{} of {} values", k, n);
  std::vector<int32_t>& idx = top_k_scratch();
  idx.resize(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto greater = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  // `greater` is a strict total order (ties go to the lower index), so selecting the k first and
  // sorting them gives exactly what partial_sort gives, in about half the comparisons.
  std::nth_element(idx.begin(), idx.begin() + k, idx.end(), greater);
  std::sort(idx.begin(), idx.begin() + k, greater);
  // Only k values into `out` (its capacity then stays near k): the DSA indexer keeps one selection
  // per token, and n-long ones made its memory O(T^2) (80 GB per layer at a 200k context).
  out.assign(idx.begin(), idx.begin() + k);
}

std::vector<int32_t> top_k(const float* x, int64_t n, int64_t k) {
  std::vector<int32_t> out;
  top_k(x, n, k, out);
  return out;
}

}  // namespace whittle
