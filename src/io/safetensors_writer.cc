#include "io/safetensors_writer.h"

#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little, "safetensors stores little-endian bytes");

namespace {
constexpr size_t kCopyBufferBytes = 4u << 20;
constexpr std::string_view kIndexName = "model.safetensors.index.json";

// The position of each dtype in the Rust `safetensors::Dtype` enum. safetensors 0.8.0 lays tensors
// out by this rank, largest first, then by name: since element sizes fall with the rank, every
// tensor starts at a multiple of its element size without padding (the format forbids gaps).
int official_dtype_rank(DType dtype) {
  switch (dtype) {
    case DType::BOOL:
      return 0;
    case DType::U8:
      return 4;
    case DType::I8:
      return 5;
    case DType::F8_E4M3:
      return 7;
    case DType::F16:
      return 11;
    case DType::BF16:
      return 12;
    case DType::I32:
      return 13;
    case DType::F32:
      return 15;
    case DType::F64:
      return 17;
    case DType::I64:
      return 18;
  }
  return -1;
}

bool is_checkpoint_file(const std::string& name) {
  if (name == kIndexName) return true;
  return name.starts_with("model") && name.ends_with(".safetensors");
}

std::string shard_file_name(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  return fmt::format("model-{:05}-of-{:05}.safetensors", index + 1, count);
}

// A JSON string literal; throws Error (not nlohmann's type_error) for bytes that are not UTF-8.
std::string json_string(std::string_view text, std::string_view what) {
  try {
    return json(text).dump();
  } catch (const json::exception&) {
    fail("{} is not valid UTF-8", what);
  }
}
}  // namespace

SafeTensorsWriter::SafeTensorsWriter(fs::path out_dir, uint64_t max_shard_bytes,
                                     std::map<std::string, std::string> metadata)
    : out_dir_(std::move(out_dir)),
      staging_tag_(fmt::format("{:08x}{:08x}", std::random_device{}(), std::random_device{}())),
      max_shard_bytes_(max_shard_bytes),
      metadata_(std::move(metadata)) {
  if (max_shard_bytes_ == 0) fail("{}: max_shard_bytes must be positive", out_dir_.string());
  metadata_.try_emplace("format", "pt");
  for (const auto& [key, value] : metadata_) {
    json_string(key, fmt::format("{}: metadata key", out_dir_.string()));
    json_string(value, fmt::format("{}: metadata['{}']", out_dir_.string(), key));
  }
  std::error_code ec;
  fs::create_directories(out_dir_, ec);
  if (ec) fail("{}: cannot create folder: {}", out_dir_.string(), ec.message());
  for (const auto& entry : fs::directory_iterator(out_dir_)) {
    std::string name = entry.path().filename().string();
    if (is_checkpoint_file(name))
      fail("{}: already holds {}; refusing to write a checkpoint over another one",
           out_dir_.string(), name);
  }
}

SafeTensorsWriter::~SafeTensorsWriter() {
  discard(current_);
  remove_staged();
}

void SafeTensorsWriter::add(std::string_view name, DType dtype, std::span<const int64_t> shape,
                            std::span<const std::byte> bytes) {
  const std::string& dir = out_dir_.string();
  if (finished_) fail("{}: tensor '{}' added after finish()", dir, name);
  if (failed_) fail("{}: tensor '{}' refused: an earlier write failed", dir, name);
  if (name.empty()) fail("{}: a tensor name is empty", dir);
  if (name == "__metadata__") fail("{}: '__metadata__' is reserved, not a tensor name", dir);
  json_string(name, fmt::format("{}: tensor name '{}'", dir, name));
  if (names_.find(name) != names_.end()) fail("{}: tensor '{}' added twice", dir, name);

  for (int64_t d : shape)
    if (d < 0)
      fail("{}: tensor '{}': shape {} has a negative dimension", dir, name, shape_str(shape));
  std::optional<int64_t> numel = checked_numel(shape);
  if (!numel) fail("{}: tensor '{}': shape {} overflows", dir, name, shape_str(shape));
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(*numel), dtype_size(dtype), &nbytes) ||
      nbytes != bytes.size())
    fail("{}: tensor '{}': {} {} needs {} bytes, got {}", dir, name, dtype_name(dtype),
         shape_str(shape), nbytes, bytes.size());

  PendingTensor tensor{std::string(name), dtype, std::vector<int64_t>(shape.begin(), shape.end()),
                       0, nbytes};
  try {
    if (nbytes > max_shard_bytes_) {
      // As huggingface_hub does: an oversized tensor is a shard of its own, numbered before the
      // shard still being filled.
      OpenShard solo;
      try {
        append(solo, std::move(tensor), bytes);
        close_shard(solo);
      } catch (...) {
        discard(solo);
        throw;
      }
    } else {
      if (!current_.tensors.empty() && current_.nbytes + nbytes > max_shard_bytes_)
        close_shard(current_);
      append(current_, std::move(tensor), bytes);
    }
  } catch (...) {
    failed_ = true;
    throw;
  }
  names_.emplace(name);
  total_bytes_ += nbytes;
}

void SafeTensorsWriter::open_shard(OpenShard& shard) {
  // The scratch file lives in the output folder (same disk, not a tmpfs in RAM) and is unlinked at
  // once, so a killed process leaves nothing behind.
  std::string pattern = (out_dir_ / ".whittle-scratch-XXXXXX").string();
  int fd = ::mkstemp(pattern.data());
  if (fd < 0) fail("{}: cannot create a scratch file: {}", out_dir_.string(), std::strerror(errno));
  ::unlink(pattern.c_str());
  shard.scratch = ::fdopen(fd, "w+b");
  if (!shard.scratch) {
    int err = errno;
    ::close(fd);
    fail("{}: cannot open a scratch file: {}", out_dir_.string(), std::strerror(err));
  }
}

void SafeTensorsWriter::append(OpenShard& shard, PendingTensor tensor,
                               std::span<const std::byte> bytes) {
  if (!shard.scratch) open_shard(shard);
  tensor.scratch_offset = shard.nbytes;
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), shard.scratch) != bytes.size())
    fail("{}: writing tensor '{}' to the scratch file failed: {}", out_dir_.string(), tensor.name,
         std::strerror(errno));
  shard.nbytes += tensor.nbytes;
  shard.tensors.push_back(std::move(tensor));
}

std::string SafeTensorsWriter::header_json(std::vector<PendingTensor>& tensors) const {
  std::sort(tensors.begin(), tensors.end(), [](const PendingTensor& a, const PendingTensor& b) {
    int ra = official_dtype_rank(a.dtype), rb = official_dtype_rank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });
  // Written by hand rather than through nlohmann::json so the key order is the one safetensors uses
  // (__metadata__ first, tensors in data order, fields dtype/shape/data_offsets).
  std::string out = "{\"__metadata__\":{";
  bool first = true;
  for (const auto& [key, value] : metadata_) {
    if (!first) out += ',';
    first = false;
    out += json(key).dump() + ":" + json(value).dump();
  }
  out += '}';
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors) {
    out += fmt::format(",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                       json(t.name).dump(), dtype_name(t.dtype), fmt::join(t.shape, ","), offset,
                       offset + t.nbytes);
    offset += t.nbytes;
  }
  out += '}';
  // Trailing spaces align the data section to 8 bytes, as safetensors pads it.
  out.append((8 - out.size() % 8) % 8, ' ');
  return out;
}

void SafeTensorsWriter::close_shard(OpenShard& shard) {
  if (!shard.scratch) open_shard(shard);
  if (std::fflush(shard.scratch) != 0)
    fail("{}: flushing the scratch file failed: {}", out_dir_.string(), std::strerror(errno));
  const fs::path staged =
      out_dir_ / fmt::format(".whittle-staged-{}-{:05}.shard", staging_tag_, staged_.size() + 1);
  const std::string header = header_json(shard.tensors);

  AtomicFile file(staged);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  file.write(std::as_bytes(std::span(length)));
  file.write(header);
  std::vector<std::byte> buffer(
      static_cast<size_t>(std::min<uint64_t>(kCopyBufferBytes, shard.nbytes)));
  for (const PendingTensor& t : shard.tensors) {
    if (::fseeko(shard.scratch, static_cast<off_t>(t.scratch_offset), SEEK_SET) != 0)
      fail("{}: seeking the scratch file failed: {}", out_dir_.string(), std::strerror(errno));
    for (uint64_t done = 0; done < t.nbytes;) {
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(buffer.size(), t.nbytes - done));
      if (std::fread(buffer.data(), 1, chunk, shard.scratch) != chunk)
        fail("{}: reading tensor '{}' back from the scratch file failed", out_dir_.string(),
             t.name);
      file.write(std::span<const std::byte>(buffer.data(), chunk));
      done += chunk;
    }
  }
  file.commit();

  staged_.push_back(staged);
  std::vector<std::string> names;
  for (const PendingTensor& t : shard.tensors) names.push_back(t.name);
  staged_names_.push_back(std::move(names));
  discard(shard);
}

void SafeTensorsWriter::discard(OpenShard& shard) {
  if (shard.scratch) std::fclose(shard.scratch);
  shard = OpenShard{};
}

void SafeTensorsWriter::remove_staged() {
  std::error_code ec;
  for (const fs::path& p : staged_) fs::remove(p, ec);
  staged_.clear();
  staged_names_.clear();
}

std::vector<fs::path> SafeTensorsWriter::finish() {
  if (finished_) fail("{}: finish() called twice", out_dir_.string());
  if (failed_) fail("{}: cannot finish: an earlier write failed", out_dir_.string());
  std::vector<fs::path> written;
  try {
    if (!current_.tensors.empty() || staged_.empty()) close_shard(current_);
    const size_t count = staged_.size();
    json weight_map = json::object();
    for (size_t i = 0; i < count; ++i) {
      const fs::path final_path = out_dir_ / shard_file_name(i, count);
      std::error_code ec;
      fs::rename(staged_[i], final_path, ec);
      if (ec)
        fail("{}: cannot rename to {}: {}", staged_[i].string(), final_path.string(), ec.message());
      written.push_back(final_path);
      for (const std::string& name : staged_names_[i])
        weight_map[name] = final_path.filename().string();
    }
    if (count > 1) {
      // The layout transformers writes: json.dumps(index, indent=2, sort_keys=True) + "\n".
      json index = {{"metadata", {{"total_size", total_bytes_}}},
                    {"weight_map", std::move(weight_map)}};
      const fs::path index_path = out_dir_ / kIndexName;
      write_file_atomic(index_path, index.dump(2, ' ', /*ensure_ascii=*/true) + "\n");
      written.push_back(index_path);
    }
  } catch (...) {
    failed_ = true;
    std::error_code ec;
    for (const fs::path& p : written) fs::remove(p, ec);
    throw;
  }
  staged_.clear();
  staged_names_.clear();
  finished_ = true;
  return written;
}

}  // namespace whittle
