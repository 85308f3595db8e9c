// NumPy .npy files (format 1.0): writing float32/int64/int32 arrays atomically, byte-identical to
// numpy.save, and reading them back with a validated header. Golden logits and input ids travel in
// this format between the Python oracles and the C++ tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace whittle {

// A whole .npy array: C order, little-endian elements of `dtype` (F32, I64, I32, F16, I8, BOOL).
struct NpyArray {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // empty for a 0-d array (one element)
  std::vector<std::byte> bytes;
  int64_t numel() const;
};

// Writes `values` (product(shape) elements, C order) as a .npy file, under a temporary name renamed
// when complete. Throws Error naming the file when the count does not match the shape.
void write_npy(const std::filesystem::path& path, std::span<const float> values,
               std::span<const int64_t> shape);
void write_npy(const std::filesystem::path& path, std::span<const int64_t> values,
               std::span<const int64_t> shape);
void write_npy(const std::filesystem::path& path, std::span<const int32_t> values,
               std::span<const int64_t> shape);

// Parses a whole .npy file held in memory; `source` names it in errors. Accepts versions 1.0, 2.0
// and 3.0, descr '<f4', '<i8', '<i4', '<f2', '|i1' or '|b1', fortran_order False, and exactly
// product(shape) x itemsize data bytes. Everything else throws Error naming the source and the
// field. Exposed for the fuzzer.
NpyArray parse_npy(std::span<const std::byte> file, const std::string& source);
NpyArray read_npy(const std::filesystem::path& path);

// read_npy plus a check of the dtype (Error naming the file and both dtypes); the shape goes to
// `*shape` when given.
std::vector<float> read_npy_f32(const std::filesystem::path& path,
                                std::vector<int64_t>* shape = nullptr);
std::vector<int64_t> read_npy_i64(const std::filesystem::path& path,
                                  std::vector<int64_t>* shape = nullptr);
std::vector<int32_t> read_npy_i32(const std::filesystem::path& path,
                                  std::vector<int64_t>* shape = nullptr);

}  // namespace whittle
