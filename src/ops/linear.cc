#include "ops/linear.h"

#include <algorithm>
#include <vector>

#include "ops/dense16_gemv.h"
#include "ops/int4_linear.h"
#include "ops/matmul.h"
#include "util/thread_pool.h"

namespace whittle {

namespace {
constexpr int64_t kBlockFloats = int64_t{1} << 16;  // 256 KB of converted rows per thread
// From kWideRows activation rows on, blocks of 8 MB: sgemm packs the activations again for every
// block, which with 16-row blocks of a 6144-wide weight cost as much as the products.
constexpr int64_t kWideRows = 64;
constexpr int64_t kWideBlockFloats = int64_t{1} << 21;
}  // namespace

int64_t linear_block_rows(int64_t cols, int64_t M) {
  const int64_t floats = M >= kWideRows ? kWideBlockFloats : kBlockFloats;
  return std::max<int64_t>(16, floats / std::max<int64_t>(cols, 1) / 16 * 16);
}

void linear(const Weight& w, const float* x, int64_t M, float* y, bool accumulate,
            ThreadPool* pool) {
  const int64_t N = w.rows(), K = w.cols();
  if (M == 0 || N == 0) return;
  const int64_t block = linear_block_rows(K, M), blocks = (N + block - 1) / block;
  const float* in_place = w.f32_rows();
  auto run = [&](size_t b0, size_t b1) {
    thread_local std::vector<float> buffer;
    for (size_t b = b0; b < b1; ++b) {
      const int64_t r0 = static_cast<int64_t>(b) * block, r1 = std::min(N, r0 + block);
      const float* rows = in_place ? in_place + r0 * K : nullptr;
      if (!rows) {
        buffer.resize(static_cast<size_t>((r1 - r0) * K));
        w.rows_to_f32(r0, r1, buffer.data());
        rows = buffer.data();
      }
      matmul_nt_strided(x, rows, y + r0, M, K, r1 - r0, N, accumulate);
    }
  };
  if (pool != nullptr && pool->size() > 1 && blocks > 1 && M * N * K >= kParallelMatmulFlops)
    pool->parallel_for(static_cast<size_t>(blocks), run);
  else
    run(0, static_cast<size_t>(blocks));
}

void linear_fast(const Weight& w, const float* x, int64_t M, float* y, bool accumulate,
                 ThreadPool* pool) {
  if (M == 0 || w.rows() == 0) return;
  if (const PackedInt4* packed = w.packed()) return int4_linear(*packed, x, M, y, accumulate, pool);
  if (M <= kDense16BatchRows && dense16_supported(w))
    return dense16_gemv(w, x, M, y, accumulate, pool);
  linear(w, x, M, y, accumulate, pool);
}

size_t linear_fast_bytes(const Weight& w) {
  if (const PackedInt4* packed = w.packed()) return packed->bytes();
  return w.stored_bytes();
}

void linear_reference(const Weight& w, const float* x, int64_t M, float* y, bool accumulate) {
  const std::vector<float> dense = w.to_f32();
  matmul_nt_reference(x, dense.data(), y, M, w.cols(), w.rows(), accumulate);
}

}  // namespace whittle
