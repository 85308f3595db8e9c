// Weight: one weight matrix [rows = out_features, cols = in_features] where it lies. It knows its
// stored format — dense F32 / BF16 / F16, block-scaled FP8 (E4M3 with 128x128 `weight_scale_inv`),
// GPTQ int4/int8 (`qweight`, `qzeros`, `scales`, optional `g_idx`) — and points into the mapped
// checkpoint. Nothing is converted at load: kernels convert a block of rows at a time
// (`rows_to_f32`, the scalar reference of every format), so no path holds a whole model in fp32.
// A Weight owns memory only when made from a buffer (tests, synthetic weights); copies share it.
//
// GPTQ layout (spec autoround_gptq.md §3), K = cols, N = rows, P = 32 / bits values per int32:
//   qweight int32 [K/P, N]       packed along K, the lowest k in the lowest bits
//   qzeros  int32 [groups, N/P]  packed along N; v1 ("gptq") stores zero - 1 (as gptqmodel writes
//                                it: the word minus 0x11111111, borrows included), v2 the zero
//   scales  f16/bf16/f32 [groups, N], any sign
//   g_idx   int32 [K]            group of input k (act-order permutes it); absent: k / group_size
//   W[n, k] = scales[g, n] * (u[k, n] - zero[g, n]),  g = g_idx[k]; symmetric: zero = 2^(bits-1)
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace whittle {

struct PackedInt4;

enum class WeightFormat { kDense, kFp8Block, kGptq };

// Side of the square tiles of block-scaled FP8 (DeepSeek-V3 / GLM-5 `weight_scale_inv`).
inline constexpr int64_t kFp8Block = 128;

struct GptqTensors {
  std::span<const std::byte> qweight, qzeros, scales, g_idx;  // g_idx may be empty
  DType scale_dtype = DType::F16;
  int64_t groups = 0;  // rows of scales and qzeros
};

struct GptqParams {
  int bits = 4;            // 4 or 8
  int64_t group_size = 0;  // inputs per group when g_idx is absent (the file's -1: cols)
  bool v2_zeros = false;   // checkpoint_format "gptq_v2": qzeros hold the zero itself
  // Symmetric: the zero is 2^(bits-1) and qzeros are not read, as vLLM's GPTQ kernels do (Marlin's
  // uint4b8 / uint8b128). Symmetric exports store exactly that zero (0x77777777 in v1).
  bool sym = false;
};

class Weight {
 public:
  Weight() = default;

  // Row-major [rows, cols] of F32, BF16 or F16 at `bytes` (any alignment).
  static Weight dense(std::string module, DType dtype, std::span<const std::byte> bytes,
                      int64_t rows, int64_t cols);
  // E4M3 [rows, cols] with scale_inv [ceil(rows/128), ceil(cols/128)] of F32 / BF16 / F16.
  static Weight fp8_block(std::string module, std::span<const std::byte> e4m3, int64_t rows,
                          int64_t cols, DType scale_dtype, std::span<const std::byte> scale_inv);
  // Sizes are checked here; g_idx values against `groups` when rows are read (an Error naming the
  // module), so unpacking never reads out of bounds and binding reads no weight data.
  static Weight gptq(std::string module, const GptqTensors& tensors, int64_t rows, int64_t cols,
                     const GptqParams& params);
  // An owned float32 matrix (synthetic and test weights).
  static Weight owned_f32(std::string module, std::vector<float> values, int64_t rows,
                          int64_t cols);

  // Rows [r0, r1) as a Weight over the same storage (a fused expert tensor's slices).
  Weight slice_rows(int64_t r0, int64_t r1, std::string module) const;

  bool empty() const { return rows_ == 0 && cols_ == 0; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  WeightFormat format() const { return format_; }
  DType dtype() const { return dtype_; }  // dense: the element type; FP8: F8_E4M3; GPTQ: I32
  const GptqParams& gptq_params() const { return gptq_; }
  // The Hugging Face module name ("model.layers.3.mlp.experts.7.down_proj"): what observers and
  // per-module quantization rules see.
  const std::string& module() const { return module_; }
  // "bf16", "fp8 block", "int4 g128", "int4 act-order"...
  std::string describe() const;

  // The scalar reference of every format: rows [r0, r1) as float32 into dst [(r1 - r0), cols].
  void rows_to_f32(int64_t r0, int64_t r1, float* dst) const;
  // All rows converted (tests and small matrices only).
  std::vector<float> to_f32() const;
  // The rows themselves when stored as aligned float32 (used without any copy), else nullptr.
  const float* f32_rows() const;
  // Dense formats: the bytes of row 0 of this view (rows follow cols * dtype_size apart, any
  // alignment); nullptr for the others.
  const std::byte* dense_rows() const;

  // GPTQ only. Rows [r0, r1) as the kernels' packers want them: codes [r1 - r0, cols] (0 .. 2^bits
  // - 1, row-major), zeros [groups, r1 - r0] (the zero point: 2^(bits-1) when symmetric), scales
  // [groups, r1 - r0] as stored (16 or 32 bit, scale_dtype()). Any of the three may be null.
  void gptq_unpack(int64_t r0, int64_t r1, uint8_t* codes, uint8_t* zeros, void* scales) const;
  // GPTQ only: the group of input k is k / group_size (no g_idx, or one that says so; reads g_idx).
  bool gptq_plain_groups() const;
  DType scale_dtype() const { return scale_dtype_; }
  int64_t groups() const { return groups_; }

  // A copy of the weight repacked for the fast kernels (ops/int4_linear.h), or null. The stored
  // format stays readable through rows_to_f32 (the oracle); slices drop the packed copy.
  const PackedInt4* packed() const { return packed_.get(); }
  Weight with_packed(std::shared_ptr<const PackedInt4> packed) const;

  // Every byte range this weight reads (for madvise); ranges may overlap with other weights'.
  void for_each_range(const std::function<void(std::span<const std::byte>)>& fn) const;
  // Bytes read to use the whole weight.
  size_t stored_bytes() const;

 private:
  Weight(std::string module, WeightFormat format, DType dtype, int64_t rows, int64_t cols,
         std::span<const std::byte> data);
  void gptq_rows_to_f32(int64_t r0, int64_t r1, float* dst) const;
  std::vector<int32_t> gptq_group_of_input() const;  // checked against groups_

  std::string module_;
  WeightFormat format_ = WeightFormat::kDense;
  DType dtype_ = DType::F32;
  int64_t rows_ = 0, cols_ = 0;
  int64_t row0_ = 0;         // first row inside the stored matrix (row slices)
  int64_t stored_rows_ = 0;  // rows of the stored matrix
  std::span<const std::byte>
      data_;  // dense values / E4M3 / qweight, from row 0 of the stored matrix
  std::span<const std::byte> scales_, qzeros_, g_idx_;
  DType scale_dtype_ = DType::F32;
  int64_t groups_ = 0;
  GptqParams gptq_;
  std::shared_ptr<const std::vector<float>> owned_;
  std::shared_ptr<const PackedInt4> packed_;
};

}  // namespace whittle
