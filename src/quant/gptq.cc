#include "quant/gptq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "tensor/dtype.h"
#include "util/error.h"
#include "util/thread_pool.h"

// LAPACK as OpenBLAS exports it (Debian's libopenblas carries it; there is no lapacke.h to
// include). The trailing length is gfortran's hidden string argument; OpenBLAS's C dpotrf ignores
// it.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t);
}

namespace whittle {

namespace {

// matmul.h's policy: OpenBLAS single-threaded, parallelism from ThreadPool. Repeated here because
// a binary may link this file without matmul.cc (a test does), and OpenBLAS's own threads would
// then spin beside the pool's workers.
[[maybe_unused]] const bool kBlasSingleThreaded = [] {
  openblas_set_num_threads(1);
  return true;
}();

// Column panels of the Hessian for HessianAccumulator::add: wide enough for an efficient GEMM,
// narrow enough that pairing panel p with panel P-1-p balances the triangle's work over workers.
constexpr int64_t kHessianPanel = 256;

int checked_int(int64_t v, const std::string& what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    fail("{} = {} does not fit BLAS's int", what, v);
  return static_cast<int>(v);
}

// Calls fn(p) for p in [0, panels) over the pool. Panel p's work shrinks with p (a triangle's
// columns), so each job takes panel p and its mirror panels-1-p: equal work per job.
void for_panels(int64_t panels, ThreadPool* pool, const std::function<void(int64_t)>& fn) {
  const int64_t pairs = (panels + 1) / 2;
  auto job = [&](size_t begin, size_t end) {
    for (size_t j = begin; j < end; ++j) {
      const int64_t p = static_cast<int64_t>(j), mirror = panels - 1 - p;
      fn(p);
      if (mirror != p) fn(mirror);
    }
  };
  if (pool == nullptr || pool->size() < 2 || pairs < 2)
    job(0, static_cast<size_t>(pairs));
  else
    pool->parallel_for(static_cast<size_t>(pairs), job);
}

// Panel width of the blocked Cholesky and triangular inverse: each GEMM/TRSM call is then large
// enough to run near BLAS speed, and a K = 6144 factor has 24 panels to spread over workers.
constexpr int64_t kFactorPanel = 256;

// `a` (n x n, float64, symmetric; column-major = row-major) is J (H + λI) J. Writes the float32
// U = J L⁻¹ J (upper, row-major) where L is a's lower Cholesky factor. Both steps are the
// right-looking blocked algorithms LAPACK's dpotrf and a column-panel dtrtri use, written out so
// that their GEMM and TRSM work goes over the pool (OpenBLAS itself is single-threaded in
// whittle, matmul.h); the result does not depend on the pool. `a` is overwritten.
// `what` names the matrix in errors.
void factor_inverse_upper(const std::string& what, std::vector<double>& a, int64_t cols,
                          ThreadPool* pool, std::vector<float>& u) {
  const int n = static_cast<int>(cols);
  double* A = a.data();
  auto at = [&](int64_t r, int64_t c) { return A + c * cols + r; };  // column-major (r, c)
  for (int64_t j0 = 0; j0 < cols; j0 += kFactorPanel) {
    const int jb = static_cast<int>(std::min(kFactorPanel, cols - j0));
    int info = 0;
    dpotrf_("L", &jb, at(j0, j0), &n, &info, 1);
    // The factorization runs from the last input backwards (a = J (H + λI) J).
    if (info > 0)
      fail(
          "{} is not positive definite (Cholesky failed at input {} of {}); the inputs behind H "
          "are wrong, or damping must be larger",
          what, cols - (j0 + info), cols);
    if (info < 0) fail("{}: LAPACK dpotrf rejected argument {}", what, -info);
    const int64_t m = cols - j0 - jb;
    if (m == 0) break;
    // L21 = A21 · L11⁻ᵀ, by row chunks.
    const int64_t row_chunks = (m + kFactorPanel - 1) / kFactorPanel;
    for_panels(row_chunks, pool, [&](int64_t p) {
      const int64_t r0 = j0 + jb + p * kFactorPanel, rn = std::min(kFactorPanel, cols - r0);
      cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit,
                  static_cast<int>(rn), jb, 1.0, at(j0, j0), n, at(r0, j0), n);
    });
    // A22 -= L21 · L21ᵀ, lower part, by column panels (the diagonal tiles' upper halves are
    // updated too and never read).
    for_panels(row_chunks, pool, [&](int64_t p) {
      const int64_t c0 = j0 + jb + p * kFactorPanel, cn = std::min(kFactorPanel, cols - c0);
      cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, static_cast<int>(cols - c0),
                  static_cast<int>(cn), jb, -1.0, at(c0, j0), n, at(c0, j0), n, 1.0, at(c0, c0), n);
    });
  }
  // L⁻¹ by column panels: columns [c0, c0+cn) of L⁻¹ solve L[c0:, c0:] X = I[c0:, c0:c0+cn]. Each
  // panel is independent; it is solved transposed, Y = Xᵀ from Y L[c0:, c0:]ᵀ = I, so that Y
  // (column-major [cn, m]) holds each row of L⁻¹'s panel contiguously, and goes straight into U:
  // U[K-1-r][K-1-c] = L⁻¹(r, c), one contiguous (reversed) stretch of a U row per r.
  const int64_t panels = (cols + kFactorPanel - 1) / kFactorPanel;
  for_panels(panels, pool, [&](int64_t p) {
    const int64_t c0 = p * kFactorPanel, cn = std::min(kFactorPanel, cols - c0), m = cols - c0;
    std::vector<double> y(static_cast<size_t>(cn * m), 0.0);
    for (int64_t c = 0; c < cn; ++c) y[static_cast<size_t>(c * cn + c)] = 1.0;
    cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit,
                static_cast<int>(cn), static_cast<int>(m), 1.0, at(c0, c0), n, y.data(),
                static_cast<int>(cn));
    for (int64_t r = 0; r < m; ++r) {
      float* urow = u.data() + (cols - 1 - (c0 + r)) * cols + (cols - 1 - c0);
      const double* yr = y.data() + r * cn;
      for (int64_t c = 0; c <= std::min(r, cn - 1); ++c) urow[-c] = static_cast<float>(yr[c]);
    }
  });
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t cols) : cols_(cols) {
  if (cols <= 0) fail("HessianAccumulator: cols must be positive, got {}", cols);
  checked_int(cols * cols, "HessianAccumulator: cols²");
  sum_.assign(static_cast<size_t>(cols * cols), 0.0f);
}

// The sum is kept in float32, not float64: a layer's 256 experts each hold one for a K = 6144
// input (151 MB in float32 each, 38 GB per layer), and float32's relative error, at most about
// 1e-5 after 262k tokens, is three orders of magnitude below the 1 % damping that decides how much
// H's weak directions count. The sum is scaled by 2/n once at the end instead of being kept as a
// running average, which saves the original's per-batch rescaling and its rounding.
void HessianAccumulator::add(const float* x, int64_t rows, ThreadPool* pool) {
  if (rows < 0) fail("HessianAccumulator::add: negative row count {}", rows);
  if (rows == 0) return;
  const int n_rows = checked_int(rows, "HessianAccumulator::add: rows");
  const int K = static_cast<int>(cols_);
  count_ += rows;
  // Rows [i0, i1) of the upper triangle: a SYRK for the diagonal tile, a GEMM right of it. The
  // same panels with a pool or without, so that the sum does not depend on it.
  for_panels((cols_ + kHessianPanel - 1) / kHessianPanel, pool, [&](int64_t p) {
    const int64_t i0 = p * kHessianPanel, i1 = std::min(cols_, i0 + kHessianPanel);
    const int w = static_cast<int>(i1 - i0);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, w, n_rows, 1.0f, x + i0, K, 1.0f,
                sum_.data() + i0 * cols_ + i0, K);
    if (i1 < cols_)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w, static_cast<int>(cols_ - i1), n_rows,
                  1.0f, x + i0, K, x + i1, K, 1.0f, sum_.data() + i0 * cols_ + i1, K);
  });
}

std::vector<float> HessianAccumulator::hessian() const {
  if (count_ == 0)
    fail(
        "HessianAccumulator: no calibration rows were added, so H is undefined (quantize a Linear "
        "that no calibration token reached with quantize_rtn)");
  const double scale = 2.0 / static_cast<double>(count_);
  std::vector<float> h(sum_.size());
  // Mirrored tile by tile: the transposed writes of a whole row would miss the cache every time.
  constexpr int64_t T = 64;
  for (int64_t i0 = 0; i0 < cols_; i0 += T)
    for (int64_t j0 = i0; j0 < cols_; j0 += T)
      for (int64_t i = i0; i < std::min(cols_, i0 + T); ++i)
        for (int64_t j = std::max(i, j0); j < std::min(cols_, j0 + T); ++j) {
          const float v = static_cast<float>(sum_[static_cast<size_t>(i * cols_ + j)] * scale);
          h[static_cast<size_t>(i * cols_ + j)] = v;
          h[static_cast<size_t>(j * cols_ + i)] = v;
        }
  return h;
}

GptqFactor gptq_factor(const std::string& module, std::vector<float> hessian, int64_t cols,
                       const GptqOptions& opt, ThreadPool* pool) {
  if (cols <= 0) fail("{}: GPTQ needs at least one input column, got {}", module, cols);
  if (static_cast<int64_t>(hessian.size()) != cols * cols)
    fail("{}: the Hessian has {} values, expected {} x {} = {} for {} input columns", module,
         hessian.size(), cols, cols, cols * cols, cols);
  if (!(opt.damp >= 0.0) || !std::isfinite(opt.damp))
    fail("{}: GPTQ damping must be a finite value >= 0, got {}", module, opt.damp);
  checked_int(cols * cols, module + ": cols²");
  for (size_t i = 0; i < hessian.size(); ++i)
    if (!std::isfinite(hessian[i]))
      fail("{}: the Hessian holds a non-finite value {} at [{}, {}]", module, hessian[i],
           static_cast<int64_t>(i) / cols, static_cast<int64_t>(i) % cols);

  GptqFactor f;
  f.cols = cols;
  f.dead.assign(static_cast<size_t>(cols), 0);
  // Dead inputs: an input that was 0 on every calibration row has H_kk = 0 (and its whole row and
  // column 0); H_kk = 1 keeps the factorization defined, and the weight column is zeroed later.
  double diag_sum = 0.0;
  for (int64_t k = 0; k < cols; ++k) {
    float& hkk = hessian[static_cast<size_t>(k * cols + k)];
    if (hkk == 0.0f) {
      hkk = 1.0f;
      f.dead[static_cast<size_t>(k)] = 1;
      ++f.dead_columns;
    }
    diag_sum += hkk;
  }
  f.damp = opt.damp * diag_sum / static_cast<double>(cols);

  // a = J (H + λI) J in float64; symmetric, so row- and column-major read the same.
  std::vector<double> a(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j)
      a[static_cast<size_t>(i * cols + j)] =
          static_cast<double>(
              hessian[static_cast<size_t>((cols - 1 - i) * cols + (cols - 1 - j))]) +
          (i == j ? f.damp : 0.0);
  std::vector<float>().swap(hessian);  // K² floats not needed while the float64 copy is factored

  f.u.assign(static_cast<size_t>(cols * cols), 0.0f);
  factor_inverse_upper(fmt::format("{}: the Hessian plus damping λ = {:.6g} ({} x mean diagonal)",
                                   module, f.damp, opt.damp),
                       a, cols, pool, f.u);
  return f;
}

namespace {

// GPTQ of rows [0, nr) of the working weight `w` (row stride cols, already dead-fixed), writing
// codes to q (row stride cols) and scales to `scales` (row stride ng); returns Σ err².
double gptq_rows(float* w, int64_t nr, int64_t cols, const float* u, const QuantSpec& spec,
                 int64_t block, int8_t* q, uint16_t* scales) {
  const int64_t G = spec.group(cols), ng = spec.groups(cols);
  std::vector<float> w1(static_cast<size_t>(nr * block)), e1(static_cast<size_t>(nr * block));
  std::vector<float> s(static_cast<size_t>(nr));
  double loss = 0.0;
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(cols, i1 + block), nb = i2 - i1;
    // The block's working copy; w itself keeps the block-start values the group scales read.
    for (int64_t r = 0; r < nr; ++r)
      std::copy(w + r * cols + i1, w + r * cols + i2, w1.data() + r * nb);
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t k = i1 + i;
      if (k % G == 0) {
        const int64_t g = k / G, len = std::min(cols, k + G) - k;
        for (int64_t r = 0; r < nr; ++r) {
          float lo, hi;
          group_extremes(w + r * cols + k, len, lo, hi);
          const uint16_t s16 = full_range_scale(lo, hi, 1.0f, 1.0f, spec.bits);
          scales[r * ng + g] = s16;
          s[static_cast<size_t>(r)] = f16_to_f32(s16);
        }
      }
      const float d = u[k * cols + k];
      const float* urow = u + k * cols + i1;
      for (int64_t r = 0; r < nr; ++r) {
        float* x = w1.data() + r * nb;
        const float sr = s[static_cast<size_t>(r)];
        const int code = quantize_value(x[i], sr, 0.0f, spec);
        q[r * cols + k] = static_cast<int8_t>(code);
        const float err = (x[i] - sr * static_cast<float>(code)) / d;
        loss += static_cast<double>(err) * err;
        e1[static_cast<size_t>(r * nb + i)] = err;
        // Error feedback inside the block, one rank-1 update per column (the original's W1 update).
        for (int64_t j = i + 1; j < nb; ++j) x[j] -= err * urow[j];
      }
    }
    // The lazy update: every column right of the block at once, W[:, i2:] -= E1 · U[i1:i2, i2:].
    if (i2 < cols)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr),
                  static_cast<int>(cols - i2), static_cast<int>(nb), -1.0f, e1.data(),
                  static_cast<int>(nb), u + i1 * cols + i2, static_cast<int>(cols), 1.0f, w + i2,
                  static_cast<int>(cols));
  }
  return loss;
}

}  // namespace

QuantizedLinear gptq_quantize(std::string module, const float* w, int64_t rows, int64_t cols,
                              const GptqFactor& factor, const QuantSpec& spec,
                              const GptqOptions& opt, GptqStats* stats, ThreadPool* pool) {
  if (spec.bits < 2 || spec.bits > 8) fail("{}: {} bits are not supported", module, spec.bits);
  if (rows <= 0 || cols <= 0) fail("{}: GPTQ of an empty weight [{}, {}]", module, rows, cols);
  if (factor.cols != cols || static_cast<int64_t>(factor.u.size()) != cols * cols)
    fail("{}: the weight has {} input columns but the GPTQ factor was made for {}", module, cols,
         factor.cols);
  if (opt.block_size <= 0)
    fail("{}: GPTQ block size must be positive, got {}", module, opt.block_size);
  checked_int(rows * cols, module + ": rows x cols");

  QuantizedLinear out{std::move(module), rows, cols, spec, {}, {}};
  const int64_t ng = out.groups();
  out.q.resize(static_cast<size_t>(rows * cols));
  out.scales.resize(static_cast<size_t>(rows * ng));
  std::vector<float> work(w, w + rows * cols);
  for (int64_t k = 0; k < cols; ++k)
    if (factor.dead[static_cast<size_t>(k)])
      for (int64_t r = 0; r < rows; ++r) work[static_cast<size_t>(r * cols + k)] = 0.0f;

  const int64_t chunks = pool == nullptr ? 1 : std::min<int64_t>(rows, pool->size());
  std::vector<double> losses(static_cast<size_t>(chunks), 0.0);
  auto run = [&](int64_t c) {
    const int64_t r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks;
    losses[static_cast<size_t>(c)] =
        gptq_rows(work.data() + r0 * cols, r1 - r0, cols, factor.u.data(), spec, opt.block_size,
                  out.q.data() + r0 * cols, out.scales.data() + r0 * ng);
  };
  if (chunks == 1)
    run(0);
  else
    pool->parallel_for(static_cast<size_t>(chunks), [&](size_t begin, size_t end) {
      for (size_t c = begin; c < end; ++c) run(static_cast<int64_t>(c));
    });
  if (stats) {
    stats->damped_loss = 0.0;
    for (double l : losses) stats->damped_loss += l;
    stats->damp = factor.damp;
    stats->dead_columns = factor.dead_columns;
    stats->loss = stats->rtn_loss = std::numeric_limits<double>::quiet_NaN();  // need H
  }
  return out;
}

QuantizedLinear gptq_quantize(std::string module, const float* w, int64_t rows, int64_t cols,
                              std::vector<float> hessian, const QuantSpec& spec,
                              const GptqOptions& opt, GptqStats* stats, ThreadPool* pool) {
  std::vector<float> h_for_stats;
  if (stats) h_for_stats = hessian;
  const GptqFactor factor = gptq_factor(module, std::move(hessian), cols, opt, pool);
  QuantizedLinear out = gptq_quantize(module, w, rows, cols, factor, spec, opt, stats, pool);
  if (stats) {
    stats->loss = gptq_proxy_loss(w, out.dequantize().data(), rows, cols, h_for_stats.data());
    stats->rtn_loss =
        gptq_proxy_loss(w, quantize_rtn(module, w, rows, cols, spec).dequantize().data(), rows,
                        cols, h_for_stats.data());
  }
  return out;
}

double gptq_proxy_loss(const float* w, const float* wq, int64_t rows, int64_t cols,
                       const float* h) {
  const int K = checked_int(cols, "gptq_proxy_loss: cols");
  std::vector<double> hd(h, h + cols * cols);
  constexpr int64_t kRows = 64;
  std::vector<double> d(static_cast<size_t>(kRows * cols)), t(d.size());
  double total = 0.0;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(rows, r0 + kRows) - r0;
    for (int64_t i = 0; i < nr * cols; ++i)
      d[static_cast<size_t>(i)] =
          static_cast<double>(w[r0 * cols + i]) - static_cast<double>(wq[r0 * cols + i]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr), K, K, 1.0,
                d.data(), K, hd.data(), K, 0.0, t.data(), K);
    for (int64_t i = 0; i < nr * cols; ++i)
      total += d[static_cast<size_t>(i)] * t[static_cast<size_t>(i)];
  }
  return total;
}

}  // namespace whittle
