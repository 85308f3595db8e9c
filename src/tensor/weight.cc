#include "tensor/weight.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "util/error.h"

namespace whittle {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; whittle reads it in place");

namespace {

// Scale values (FP8 scale_inv, GPTQ scales) of any float dtype.
float scale_at(std::span<const std::byte> scales, DType dtype, int64_t i) {
  const std::byte* p = scales.data() + static_cast<size_t>(i) * dtype_size(dtype);
  switch (dtype) {
    case DType::F32:
      return load_unaligned<float>(p);
    case DType::BF16:
      return bf16_to_f32(load_unaligned<uint16_t>(p));
    case DType::F16:
      return f16_to_f32(load_unaligned<uint16_t>(p));
    default:
      fail("internal: scale dtype {}", dtype_name(dtype));
  }
}

void check_bytes(const std::string& module, std::string_view what, std::span<const std::byte> bytes,
                 size_t expected) {
  if (bytes.size() != expected)
    fail("{}: {} holds {} bytes, expected {}", module, what, bytes.size(), expected);
}

bool is_scale_dtype(DType d) {
  return d == DType::F32 || d == DType::BF16 || d == DType::F16;
}

}  // namespace

Weight::Weight(std::string module, WeightFormat format, DType dtype, int64_t rows, int64_t cols,
               std::span<const std::byte> data)
    : module_(std::move(module)),
      format_(format),
      dtype_(dtype),
      rows_(rows),
      cols_(cols),
      stored_rows_(rows),
      data_(data) {}

Weight Weight::dense(std::string module, DType dtype, std::span<const std::byte> bytes,
                     int64_t rows, int64_t cols) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail("{}: weight dtype {} is not supported (expected F32, BF16, F16, block FP8 or GPTQ)",
         module, dtype_name(dtype));
  check_bytes(module, "the weight", bytes, static_cast<size_t>(rows * cols) * dtype_size(dtype));
  return Weight(std::move(module), WeightFormat::kDense, dtype, rows, cols, bytes);
}

Weight Weight::fp8_block(std::string module, std::span<const std::byte> e4m3, int64_t rows,
                         int64_t cols, DType scale_dtype, std::span<const std::byte> scale_inv) {
  if (!is_scale_dtype(scale_dtype))
    fail("{}: weight_scale_inv has dtype {}, expected F32, BF16 or F16", module,
         dtype_name(scale_dtype));
  check_bytes(module, "the FP8 weight", e4m3, static_cast<size_t>(rows * cols));
  const int64_t br = (rows + kFp8Block - 1) / kFp8Block, bc = (cols + kFp8Block - 1) / kFp8Block;
  check_bytes(module, "weight_scale_inv", scale_inv,
              static_cast<size_t>(br * bc) * dtype_size(scale_dtype));
  Weight w(std::move(module), WeightFormat::kFp8Block, DType::F8_E4M3, rows, cols, e4m3);
  w.scales_ = scale_inv;
  w.scale_dtype_ = scale_dtype;
  return w;
}

Weight Weight::gptq(std::string module, const GptqTensors& t, int64_t rows, int64_t cols,
                    const GptqParams& params) {
  if (params.bits != 4 && params.bits != 8)
    fail("{}: GPTQ with {} bits is not supported (expected 4 or 8)", module, params.bits);
  const int64_t pack = 32 / params.bits;
  if (cols % pack != 0 || rows % pack != 0)
    fail("{}: GPTQ {}-bit needs in_features ({}) and out_features ({}) divisible by {}", module,
         params.bits, cols, rows, pack);
  if (!is_scale_dtype(t.scale_dtype))
    fail("{}: scales have dtype {}, expected F16, BF16 or F32", module, dtype_name(t.scale_dtype));
  if (t.groups < 1) fail("{}: GPTQ scales have no groups", module);
  check_bytes(module, "qweight", t.qweight, static_cast<size_t>(cols / pack * rows) * 4);
  if (!params.sym || !t.qzeros.empty())
    check_bytes(module, "qzeros", t.qzeros, static_cast<size_t>(t.groups * (rows / pack)) * 4);
  check_bytes(module, "scales", t.scales,
              static_cast<size_t>(t.groups * rows) * dtype_size(t.scale_dtype));
  if (t.g_idx.empty()) {
    if (params.group_size < 1)
      fail("{}: GPTQ group size {} without g_idx", module, params.group_size);
    const int64_t groups = (cols + params.group_size - 1) / params.group_size;
    if (groups != t.groups)
      fail("{}: {} inputs in groups of {} make {} groups, but scales have {} rows", module, cols,
           params.group_size, groups, t.groups);
  } else {
    // Its values are checked where they are read (gptq_rows_to_f32): binding a model must not read
    // every module's g_idx (about 1.5 GB spread over a 744B checkpoint).
    check_bytes(module, "g_idx", t.g_idx, static_cast<size_t>(cols) * 4);
  }
  Weight w(std::move(module), WeightFormat::kGptq, DType::I32, rows, cols, t.qweight);
  w.qzeros_ = t.qzeros;
  w.scales_ = t.scales;
  w.g_idx_ = t.g_idx;
  w.scale_dtype_ = t.scale_dtype;
  w.groups_ = t.groups;
  w.gptq_ = params;
  return w;
}

Weight Weight::owned_f32(std::string module, std::vector<float> values, int64_t rows,
                         int64_t cols) {
  if (static_cast<int64_t>(values.size()) != rows * cols)
    fail("{}: {} values for a [{}, {}] weight", module, values.size(), rows, cols);
  auto owned = std::make_shared<const std::vector<float>>(std::move(values));
  Weight w = dense(std::move(module), DType::F32,
                   std::as_bytes(std::span<const float>(owned->data(), owned->size())), rows, cols);
  w.owned_ = std::move(owned);
  return w;
}

Weight Weight::slice_rows(int64_t r0, int64_t r1, std::string module) const {
  if (r0 < 0 || r1 < r0 || r1 > rows_)
    fail("internal: rows [{}, {}) of {} with {} rows", r0, r1, module_, rows_);
  Weight w = *this;
  w.module_ = std::move(module);
  w.row0_ = row0_ + r0;
  w.rows_ = r1 - r0;
  w.packed_ = nullptr;
  return w;
}

std::string Weight::describe() const {
  switch (format_) {
    case WeightFormat::kDense:
      return fmt::format("{}", dtype_name(dtype_));
    case WeightFormat::kFp8Block:
      return "F8_E4M3 block-scaled";
    case WeightFormat::kGptq:
      if (!g_idx_.empty() && gptq_.group_size < 1)
        return fmt::format("int{} g_idx ({} groups)", gptq_.bits, groups_);
      return fmt::format("int{} g{}{}", gptq_.bits, gptq_.group_size, gptq_.sym ? "" : " asym");
  }
  return "?";
}

void Weight::rows_to_f32(int64_t r0, int64_t r1, float* dst) const {
  if (r0 < 0 || r1 < r0 || r1 > rows_)
    fail("internal: rows [{}, {}) of {} with {} rows", r0, r1, module_, rows_);
  const int64_t n = r1 - r0, first = row0_ + r0;
  switch (format_) {
    case WeightFormat::kDense:
      convert_to_f32(dtype_, data_.data() + static_cast<size_t>(first * cols_) * dtype_size(dtype_),
                     static_cast<size_t>(n * cols_), dst);
      return;
    case WeightFormat::kFp8Block: {
      const int64_t bc = (cols_ + kFp8Block - 1) / kFp8Block;
      convert_to_f32(DType::F8_E4M3, data_.data() + static_cast<size_t>(first * cols_),
                     static_cast<size_t>(n * cols_), dst);
      for (int64_t r = 0; r < n; ++r) {
        const int64_t block_row = (first + r) / kFp8Block;
        float* row = dst + r * cols_;
        for (int64_t c = 0; c < cols_; ++c)
          row[c] *= scale_at(scales_, scale_dtype_, block_row * bc + c / kFp8Block);
      }
      return;
    }
    case WeightFormat::kGptq:
      gptq_rows_to_f32(first, first + n, dst);
      return;
  }
}

void Weight::gptq_unpack(int64_t r0, int64_t r1, uint8_t* codes, uint8_t* zeros,
                         void* scales) const {
  if (format_ != WeightFormat::kGptq) fail("internal: gptq_unpack on {} ({})", module_, describe());
  if (r0 < 0 || r1 < r0 || r1 > rows_)
    fail("internal: rows [{}, {}) of {} with {} rows", r0, r1, module_, rows_);
  const int bits = gptq_.bits;
  const int64_t pack = 32 / bits, N = stored_rows_, K = cols_, n0 = row0_ + r0, R = r1 - r0;
  const uint32_t mask = (1u << bits) - 1;
  const uint32_t v1_add = gptq_.v2_zeros ? 0u : (bits == 4 ? 0x11111111u : 0x01010101u);
  auto word = [](std::span<const std::byte> s, int64_t i) {
    return load_unaligned<uint32_t>(s.data() + 4 * i);
  };
  if (codes)
    for (int64_t pr = 0; pr < K / pack; ++pr)
      for (int64_t n = n0; n < n0 + R; ++n) {
        const uint32_t q = word(data_, pr * N + n);
        for (int64_t j = 0; j < pack; ++j)
          codes[(n - n0) * K + pr * pack + j] = static_cast<uint8_t>((q >> (bits * j)) & mask);
      }
  if (zeros)
    for (int64_t g = 0; g < groups_; ++g)
      for (int64_t n = n0; n < n0 + R; ++n) {
        uint8_t z = static_cast<uint8_t>(1 << (bits - 1));
        if (!gptq_.sym) {
          // v1 stores zero - 1 per field. Adding 1 to every field of the whole word (carries
          // included) is how gptqmodel reads v1 (convert_gptq_v1_to_v2_format) and undoes how it
          // writes it: a zero of 0 is stored as field 15 with a borrow from the next field. It
          // agrees with adding 1 per field (vLLM's reading) except at such a field.
          const uint32_t packed = word(qzeros_, g * (N / pack) + n / pack) + v1_add;
          z = static_cast<uint8_t>((packed >> (bits * (n % pack))) & mask);
        }
        zeros[g * R + (n - n0)] = z;
      }
  if (scales) {
    const size_t size = dtype_size(scale_dtype_);
    for (int64_t g = 0; g < groups_; ++g)
      std::memcpy(static_cast<std::byte*>(scales) + static_cast<size_t>(g * R) * size,
                  scales_.data() + static_cast<size_t>(g * N + n0) * size, R * size);
  }
}

std::vector<int32_t> Weight::gptq_group_of_input() const {
  std::vector<int32_t> group(static_cast<size_t>(cols_));
  for (int64_t k = 0; k < cols_; ++k) {
    group[k] = g_idx_.empty() ? static_cast<int32_t>(k / gptq_.group_size)
                              : load_unaligned<int32_t>(g_idx_.data() + 4 * k);
    if (group[k] < 0 || group[k] >= groups_)
      fail("{}: g_idx[{}] = {} is outside the {} groups of scales", module_, k, group[k], groups_);
  }
  return group;
}

bool Weight::gptq_plain_groups() const {
  if (format_ != WeightFormat::kGptq) return false;
  if (g_idx_.empty()) return true;
  if (gptq_.group_size < 1) return false;
  const std::vector<int32_t> group = gptq_group_of_input();
  for (int64_t k = 0; k < cols_; ++k)
    if (group[k] != k / gptq_.group_size) return false;
  return true;
}

Weight Weight::with_packed(std::shared_ptr<const PackedInt4> packed) const {
  Weight w = *this;
  w.packed_ = std::move(packed);
  return w;
}

void Weight::gptq_rows_to_f32(int64_t n0, int64_t n1, float* dst) const {
  const int64_t K = cols_, R = n1 - n0;
  const std::vector<int32_t> group = gptq_group_of_input();
  std::vector<uint8_t> codes(static_cast<size_t>(K)), zeros(static_cast<size_t>(groups_));
  std::vector<std::byte> scale_bits(static_cast<size_t>(groups_) * dtype_size(scale_dtype_));
  std::vector<float> scale(static_cast<size_t>(groups_));
  for (int64_t n = n0; n < n0 + R; ++n) {
    // n counts from the stored matrix's first row; gptq_unpack from this view's.
    gptq_unpack(n - row0_, n - row0_ + 1, codes.data(), zeros.data(), scale_bits.data());
    convert_to_f32(scale_dtype_, scale_bits.data(), static_cast<size_t>(groups_), scale.data());
    float* row = dst + (n - n0) * K;
    for (int64_t k = 0; k < K; ++k)
      row[k] =
          scale[group[k]] * (static_cast<float>(codes[k]) - static_cast<float>(zeros[group[k]]));
  }
}

std::vector<float> Weight::to_f32() const {
  std::vector<float> out(static_cast<size_t>(rows_ * cols_));
  rows_to_f32(0, rows_, out.data());
  return out;
}

const float* Weight::f32_rows() const {
  if (format_ != WeightFormat::kDense || dtype_ != DType::F32) return nullptr;
  const std::byte* p = data_.data() + static_cast<size_t>(row0_ * cols_) * 4;
  if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) return nullptr;
  return reinterpret_cast<const float*>(p);
}

const std::byte* Weight::dense_rows() const {
  if (format_ != WeightFormat::kDense) return nullptr;
  return data_.data() + static_cast<size_t>(row0_ * cols_) * dtype_size(dtype_);
}

void Weight::for_each_range(const std::function<void(std::span<const std::byte>)>& fn) const {
  switch (format_) {
    case WeightFormat::kDense: {
      const size_t row_bytes = static_cast<size_t>(cols_) * dtype_size(dtype_);
      fn(data_.subspan(static_cast<size_t>(row0_) * row_bytes,
                       static_cast<size_t>(rows_) * row_bytes));
      return;
    }
    case WeightFormat::kFp8Block:
      fn(data_.subspan(static_cast<size_t>(row0_ * cols_), static_cast<size_t>(rows_ * cols_)));
      fn(scales_);
      return;
    case WeightFormat::kGptq:
      for (auto s : {data_, qzeros_, scales_, g_idx_})
        if (!s.empty()) fn(s);
      return;
  }
}

size_t Weight::stored_bytes() const {
  size_t n = 0;
  for_each_range([&](std::span<const std::byte> s) { n += s.size(); });
  return n;
}

}  // namespace whittle
