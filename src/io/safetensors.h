// Reading safetensors checkpoints: one file (SafeTensorsFile) or a model folder with one or many
// shards (TensorStore). Files are memory-mapped; nothing is copied until a caller converts a
// tensor. Every header is validated before use: length against file size, JSON, dtypes, offsets
// inside the data section, no overlaps, byte size == shape x dtype.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/dtype.h"
#include "util/mapped_file.h"

namespace whittle {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin = 0;   // offset of the first byte, relative to the start of the data section
  size_t nbytes = 0;  // == product(shape) * dtype_size(dtype)
  int64_t numel() const;
};

std::string shape_str(std::span<const int64_t> shape);

// product(shape), or nullopt when a dimension is negative or the product of the non-zero dimensions
// exceeds int64_t: numel() multiplies left to right in int64_t, so a shape like [2^40, 2^40, 0]
// must be refused even though it holds no elements.
std::optional<int64_t> checked_numel(std::span<const int64_t> shape);

// A view of one tensor's bytes inside a mapped file, with enough context for error messages.
struct TensorView {
  const TensorInfo* info = nullptr;
  std::span<const std::byte> bytes;
  const std::filesystem::path* file = nullptr;
  DType dtype() const { return info->dtype; }
  const std::vector<int64_t>& shape() const { return info->shape; }
  int64_t numel() const { return info->numel(); }
};

// Parses and validates a safetensors header against a buffer of `file_size` bytes whose first bytes
// are `prefix`. `source` names the file in error messages. Exposed for the fuzzer.
struct SafeTensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order
  std::map<std::string, std::string> metadata;
  size_t data_offset = 0;  // 8 + header length
};
SafeTensorsHeader parse_safetensors_header(std::span<const std::byte> file_bytes,
                                           const std::string& source);

class SafeTensorsFile {
 public:
  explicit SafeTensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;
  TensorView view(const TensorInfo& info) const;
  const MappedFile& mapping() const { return file_; }

 private:
  MappedFile file_;
  SafeTensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// All the tensors of a model folder: `model.safetensors.index.json` when present (every shard it
// names must exist and hold the tensors it says), else every `*.safetensors` file in the folder.
class TensorStore {
 public:
  explicit TensorStore(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  bool contains(std::string_view name) const;
  // Sorted names of every tensor in every shard.
  std::vector<std::string> names() const;
  // Throws Error naming the folder and the tensor when it is missing.
  TensorView get(std::string_view name) const;
  // get() plus a check of the shape; the error names tensor, file, expected and actual shape.
  TensorView get(std::string_view name, std::span<const int64_t> expected_shape) const;

  // The tensor converted to float32, shape-checked. A float8 tensor `X.weight` with a companion
  // `X.weight_scale_inv` (DeepSeek/GLM block FP8, 128x128 tiles) is dequantized.
  std::vector<float> load_f32(std::string_view name, std::span<const int64_t> expected_shape) const;
  std::vector<float> load_f32(std::string_view name,
                              std::initializer_list<int64_t> expected_shape) const {
    return load_f32(name, std::span<const int64_t>(expected_shape.begin(), expected_shape.size()));
  }

  // Advice for a range of tensor bytes (MappedFile::advise); ranges outside the store's files (an
  // owned buffer) are left alone, so advice can never discard memory the store does not map.
  void advise(std::span<const std::byte> range, MemoryAdvice advice) const;

  size_t file_count() const { return files_.size(); }
  const SafeTensorsFile& file(size_t i) const { return *files_[i]; }

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> index_;
};

}  // namespace whittle
