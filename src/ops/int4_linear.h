// int4_linear: y = x · Wᵀ for a GPTQ int4 weight packed by tensor/packed_int4.h, with the
// activations quantized to int8 per group of the weight's inputs and integer dot products (VNNI
// `dpbusd` on AVX-512 or AVX-VNNI, `maddubs` on AVX2, plain C++ otherwise; ops/cpu_isa.h).
//
// Activations are quantized per block b of 32 inputs (kActBlock; fewer when the weight's group size
// is not a multiple of 32), a block lying inside one weight group g. Per output n, row m:
//   x[m,k] ≈ a[m,b]·q[m,k],  q int8 in [-127, 127],  a[m,b] = max_k∈b |x[m,k]| / 127
//   y[m,n] = Σ_g s[g,n]·T[g] − z[g,n]·s[g,n]·C[g],  T[g] = Σ_b∈g a[m,b]·(Σ_k∈b u[n,k]·q[m,k]),
//                                                   C[g] = Σ_b∈g a[m,b]·(Σ_k∈b q[m,k])
// The inner sums are exact int32; T and C are fma chains over the blocks and each group adds two
// fmas, in the same order on every ISA, so all kernel sets give the same bits (tests). C does not
// depend on n: it is computed once per row, and the per-block float work is one convert and one fma
// per 16 outputs (the integer dot products dominate). Against the float product x · Wᵀ, the only
// error beyond float rounding is the activations' rounding, |x − a·q| ≤ a/2 per input, hence
//   |y_int4 − y_f32| ≤ Σ_b (a[m,b]/2) · Σ_k∈b |W[n,k]|    (int8_error_bound; tested)
// which is about 1/254 of Σ|W||x| at worst and ~100× less in practice (errors of random sign).
// Blocks of 32 rather than whole groups of 128: one outlier of a hidden state (LLMs have a few,
// 100× the rest) then coarsens only its own 32 inputs; on the bundled model's int4 export, whole
// groups left the logits ~0.5 from the reference path and changed greedy tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cpu_isa.h"
#include "tensor/packed_int4.h"

namespace whittle {

class ThreadPool;

inline constexpr int64_t kActBlock = 32;

// Activations of `rows` rows quantized per block of `group_size` inputs (the last block shorter).
struct Int8Acts {
  int64_t rows = 0, cols = 0, group_size = 0, groups = 0;
  std::vector<int8_t> q;     // [rows, cols]
  std::vector<float> scale;  // [rows, groups]: a
  std::vector<int32_t> sum;  // [rows, groups]: Σ q over the block
};

// The activation block for weight w: gcd(kActBlock, w.group_size).
int64_t int4_act_block(const PackedInt4& w);

// Quantizes x [M, K] in blocks of `group_size` (int4_act_block of the weight it will meet);
// `out`'s buffers are reused (no allocation once they are large enough). Every ISA gives the same
// bits (AVX-512 for blocks of a multiple of 16 inputs).
void quantize_acts(const float* x, int64_t M, int64_t K, int64_t group_size, Int8Acts& out,
                   Isa isa = active_isa());

// y [M, w.rows] = x · Wᵀ (+ y when accumulate), x [M, w.cols]. Output tiles are spread over the
// pool; results do not depend on the thread count.
void int4_linear(const PackedInt4& w, const float* x, int64_t M, float* y, bool accumulate,
                 ThreadPool* pool, Isa isa = active_isa());
// The same with activations already quantized for this weight's groups (several weights that
// share an input quantize it once).
void int4_linear(const PackedInt4& w, const Int8Acts& x, float* y, bool accumulate,
                 ThreadPool* pool, Isa isa = active_isa());

// Output tiles [t0, t1) of `w` for activation rows [m0, m1) into y (rows ldy apart), on the calling
// thread: the unit of work of int4_linear, for callers that schedule several weights in one job.
void int4_tiles(const PackedInt4& w, const Int8Acts& x, int64_t m0, int64_t m1, int64_t t0,
                int64_t t1, float* y, int64_t ldy, bool accumulate, Isa isa = active_isa());

// Σ_g (a[m,g]/2) · Σ_k∈g |W[n,k]| for every m, n: the bound above, from the dequantized weight
// dense [N, K] (tests).
std::vector<float> int8_error_bound(const std::vector<float>& dense, int64_t N, const Int8Acts& x);

}  // namespace whittle
