// GPTQ (Frantar et al. 2022; IST-DASLab/gptq `fasterquant`, spec autoround_gptq.md §6) on
// whittle's full-range symmetric int grid (int_quant.h), so that its result packs and loads exactly
// as RTN's and AutoRound's do. Two parts, because several Linears read one input (gate_proj and
// up_proj of an expert; q_a_proj, kv_a_proj_with_mqa and the indexer's wk on one normed input):
//   HessianAccumulator  H = (2/n)·Σ x xᵀ over the calibration rows of one input;
//   gptq_factor         dead inputs, damping, U = upper Cholesky factor of H⁻¹ (once per input);
//   gptq_quantize       the column loop with error feedback (once per Linear).
// What follows the original exactly, and where it departs from it, is said at each declaration.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "quant/int_quant.h"

namespace whittle {

class ThreadPool;

// Σ x xᵀ over rows of x [rows, cols], and the row count. Holds cols² floats (151 MB at 6144).
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t cols);

  // Adds the rows of x [rows, cols] (row-major). With a pool, the product is split over its
  // workers (from inside one of the pool's own jobs it runs on the calling thread); the sum is
  // the same either way.
  void add(const float* x, int64_t rows, ThreadPool* pool = nullptr);

  int64_t cols() const { return cols_; }
  int64_t count() const { return count_; }
  // H = (2/n)·Σ x xᵀ, symmetric [cols, cols], n = count() rows. (The original's n counts the
  // batch's first dimension, sequences rather than tokens: a uniform factor on H, which leaves
  // codes and scales unchanged in exact arithmetic, damping being relative, and scales the losses.)
  // Throws Error when no row was added: an all-zero H would make every input dead and GPTQ would
  // zero the whole weight (an expert that no calibration token reached must be quantized with
  // quantize_rtn instead).
  std::vector<float> hessian() const;

 private:
  int64_t cols_;
  int64_t count_ = 0;
  std::vector<float> sum_;  // upper triangle of Σ x xᵀ (row-major [cols, cols]; the rest unused)
};

struct GptqOptions {
  double damp = 0.01;  // λ = damp · mean(diag H), the original's `percdamp`
  int64_t block_size = 128;
};

// Upper triangular U [cols, cols] (row-major, float32) with Uᵀ U = (H + λI)⁻¹, H after the dead
// input fix, and what it took to get there.
struct GptqFactor {
  int64_t cols = 0;
  std::vector<float> u;
  std::vector<uint8_t> dead;  // [cols]: 1 where H_kk was 0 (the input was always 0)
  double damp = 0.0;          // λ added to the diagonal
  int64_t dead_columns = 0;
};

// Dead inputs (H_kk = 0 → H_kk = 1), λ = opt.damp · mean(diag H) after that fix, then U. The
// factorization is in float64 (the original's is float32): with 1 % damping the condition number
// of H + λI can reach ~100·K (1.2e6 for K = 12288), where float32 loses most digits of U in the
// weak directions. U is computed as J·chol(J (H+λI) J)⁻¹·J (J reverses the index order), one
// Cholesky and one triangular inverse instead of the original's Cholesky, inverse and second
// Cholesky: the same unique factor for half the flops. A pool splits the factorization's GEMM and
// TRSM work over its workers (the result does not depend on it). Takes cols² doubles while it
// runs, besides the cols² floats of U. Throws Error naming `module` when
// the size is not cols², a value is not finite, or H + λI is not positive definite.
GptqFactor gptq_factor(const std::string& module, std::vector<float> hessian, int64_t cols,
                       const GptqOptions& opt = {}, ThreadPool* pool = nullptr);

struct GptqStats {
  // Σ over columns of err² = tr((W' − Q)(H + λI)(W' − Q)ᵀ), W' the weight after the dead
  // input fix: twice the original's `Losses.sum()`, and what GPTQ minimises greedily.
  double damped_loss = 0.0;
  double damp = 0.0;
  int64_t dead_columns = 0;
  // tr((W − Q) H (W − Q)ᵀ) with the given (undamped) H and the original W, for GPTQ and for
  // quantize_rtn on the same W: only the overload that is given H fills these.
  double loss = std::numeric_limits<double>::quiet_NaN();
  double rtn_loss = std::numeric_limits<double>::quiet_NaN();
};

// GPTQ of w [rows, cols] (row-major float32) with a factor from gptq_factor, no act-order, columns
// in blocks of opt.block_size with the batched (lazy) update of the columns right of each block.
// A group's scale is taken when its first column k comes up, from columns [k, k + G) as they stood
// when the current block began (the original reads them from W, not from the block's working
// copy): with G = block_size = 128 that is exactly the error-updated weight; with a smaller G the
// later groups of a block miss the updates from the block's earlier columns, as in the original.
// Rows are independent given U; a pool splits them over its workers.
QuantizedLinear gptq_quantize(std::string module, const float* w, int64_t rows, int64_t cols,
                              const GptqFactor& factor, const QuantSpec& spec,
                              const GptqOptions& opt = {}, GptqStats* stats = nullptr,
                              ThreadPool* pool = nullptr);

// gptq_factor then gptq_quantize; with `stats`, also the losses on H of GPTQ and of RTN.
QuantizedLinear gptq_quantize(std::string module, const float* w, int64_t rows, int64_t cols,
                              std::vector<float> hessian, const QuantSpec& spec,
                              const GptqOptions& opt = {}, GptqStats* stats = nullptr,
                              ThreadPool* pool = nullptr);

// tr((W − W~) H (W − W~)ᵀ) for w, wq [rows, cols] and h [cols, cols], in float64: GPTQ drives the
// error into H's weak directions, so the quadratic form is a small difference of large terms.
double gptq_proxy_loss(const float* w, const float* wq, int64_t rows, int64_t cols, const float* h);

}  // namespace whittle
