#include "io/safetensors.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "io/json_excerpt.h"
#include "util/error.h"

namespace whittle {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {
// safetensors itself refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(std::span<const int64_t> shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::optional<int64_t> checked_numel(std::span<const int64_t> shape) {
  int64_t bound = 1, numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(bound, std::max<int64_t>(d, 1), &bound))
      return std::nullopt;
    numel *= d;  // cannot overflow: |numel| <= bound
  }
  return numel;
}

SafeTensorsHeader parse_safetensors_header(std::span<const std::byte> file,
                                           const std::string& src) {
  if (file.size() < 8)
    fail("{}: truncated safetensors file: {} bytes, the 8-byte header length is missing", src,
         file.size());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(file[i]);
  if (header_len > file.size() - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes)", src, header_len,
         file.size());
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} exceeds the {} byte limit", src, header_len, kMaxHeaderBytes);
  if (header_len < 2) fail("{}: header of {} bytes cannot hold a JSON object", src, header_len);

  const char* text = reinterpret_cast<const char*>(file.data() + 8);
  if (text[0] != '{') fail("{}: header is not a JSON object (it does not start with '{{')", src);
  json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail("{}: malformed header JSON ({} bytes)", src, header_len);
  if (!header.is_object()) fail("{}: header JSON is not an object", src);

  SafeTensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = file.size() - out.data_offset;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: __metadata__ is not an object", src);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          fail("{}: __metadata__ field '{}' is not a string", src, m.key());
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail("{}: tensor '{}': entry is not an object", src, name);
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string())
      fail("{}: tensor '{}': missing or non-string 'dtype'", src, name);
    if (sh == entry.end() || !sh->is_array())
      fail("{}: tensor '{}': missing or non-array 'shape'", src, name);
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      fail("{}: tensor '{}': 'data_offsets' must be an array [begin, end]", src, name);

    TensorInfo t;
    t.name = name;
    auto dtype = parse_dtype(dt->get<std::string>());
    if (!dtype) fail("{}: tensor '{}': unknown dtype '{}'", src, name, dt->get<std::string>());
    t.dtype = *dtype;

    for (const json& d : *sh) {
      if (!d.is_number_unsigned())
        fail("{}: tensor '{}': shape element {} is {}; dimensions must be non-negative integers",
             src, name, t.shape.size(), json_excerpt(d));
      uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("{}: tensor '{}': shape overflows at element {} ({})", src, name, t.shape.size(), v);
      t.shape.push_back(static_cast<int64_t>(v));
    }
    std::optional<int64_t> numel = checked_numel(t.shape);
    uint64_t nbytes = 0;
    if (!numel || mul_overflows(static_cast<uint64_t>(*numel), dtype_size(t.dtype), &nbytes))
      fail("{}: tensor '{}': shape {} overflows", src, name, shape_str(t.shape));

    for (const json& o : *off)
      if (!o.is_number_unsigned())
        fail("{}: tensor '{}': data_offsets element {} is not a non-negative integer", src, name,
             json_excerpt(o));
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end)
      fail("{}: tensor '{}': data_offsets [{}, {}] end before they begin", src, name, begin, end);
    if (end > data_size)
      fail(
          "{}: tensor '{}': data_offsets [{}, {}] lie outside the data section ({} bytes); the "
          "file "
          "is truncated or corrupt",
          src, name, begin, end, data_size);
    if (end - begin != nbytes)
      fail("{}: tensor '{}': {} {} needs {} bytes but data_offsets [{}, {}] hold {}", src, name,
           dtype_name(t.dtype), shape_str(t.shape), nbytes, begin, end, end - begin);
    t.begin = begin;
    t.nbytes = nbytes;
    out.tensors.push_back(std::move(t));
  }

  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < out.tensors.size(); ++i) {
    const TensorInfo& prev = out.tensors[i - 1];
    const TensorInfo& cur = out.tensors[i];
    if (prev.nbytes > 0 && cur.nbytes > 0 && cur.begin < prev.begin + prev.nbytes)
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", src, prev.name, prev.begin,
           prev.begin + prev.nbytes, cur.name, cur.begin, cur.begin + cur.nbytes);
  }
  return out;
}

SafeTensorsFile::SafeTensorsFile(const fs::path& path)
    : file_(path), header_(parse_safetensors_header(file_.bytes(), path.string())) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

const TensorInfo* SafeTensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

TensorView SafeTensorsFile::view(const TensorInfo& info) const {
  return TensorView{&info, file_.bytes().subspan(header_.data_offset + info.begin, info.nbytes),
                    &file_.path()};
}

TensorStore::TensorStore(const fs::path& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) fail("{}: not a model folder (no such directory)", dir.string());
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::vector<fs::path> shard_paths;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index_path)) {
    MappedFile f(index_path);
    auto b = f.bytes();
    json index = json::parse(reinterpret_cast<const char*>(b.data()),
                             reinterpret_cast<const char*>(b.data() + b.size()), nullptr, false);
    if (index.is_discarded() || !index.is_object()) fail("{}: malformed JSON", index_path.string());
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object())
      fail("{}: missing object field 'weight_map'", index_path.string());
    std::set<std::string> shards;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        fail("{}: weight_map['{}'] is not a file name", index_path.string(), it.key());
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == ".." || shard.empty())
        fail("{}: weight_map['{}'] = '{}' is not a file in the folder", index_path.string(),
             it.key(), shard);
      weight_map[it.key()] = shard;
      shards.insert(shard);
    }
    for (const auto& s : shards) {
      // Follows symlinks (a Hugging Face cache links shards to blobs); a FIFO or device is refused
      // here, before anything opens it.
      std::error_code ec;
      const fs::file_status st = fs::status(dir / s, ec);
      if (!fs::exists(st))
        fail("{}: shard '{}' named in the index does not exist", index_path.string(), s);
      if (!fs::is_regular_file(st))
        fail("{}: shard '{}' named in the index is not a regular file; expected a file",
             index_path.string(), s);
      shard_paths.push_back(dir / s);
    }
  } else {
    // Anything but a folder named *.safetensors is taken, so that a FIFO, a device or a dangling
    // link there is refused by name when opened rather than silently skipped.
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors" && !e.is_directory())
        shard_paths.push_back(e.path());
    std::sort(shard_paths.begin(), shard_paths.end());
    if (shard_paths.empty()) fail("{}: no *.safetensors files in the model folder", dir.string());
  }

  for (const auto& p : shard_paths) {
    files_.push_back(std::make_unique<SafeTensorsFile>(p));
    size_t fi = files_.size() - 1;
    for (const TensorInfo& t : files_.back()->tensors()) {
      auto [it, inserted] = index_.emplace(t.name, std::make_pair(fi, &t));
      if (!inserted)
        fail("{}: tensor '{}' appears in both {} and {}", dir.string(), t.name,
             files_[it->second.first]->path().filename().string(), p.filename().string());
    }
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = index_.find(name);
    if (it == index_.end())
      fail("{}: index says tensor '{}' is in {}, but that file does not hold it",
           index_path.string(), name, shard);
    if (files_[it->second.first]->path().filename() != shard)
      fail("{}: index says tensor '{}' is in {}, but it is in {}", index_path.string(), name, shard,
           files_[it->second.first]->path().filename().string());
  }
}

bool TensorStore::contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, _] : index_) out.push_back(name);
  return out;
}

TensorView TensorStore::get(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: missing tensor '{}'", dir_.string(), name);
  return files_[it->second.first]->view(*it->second.second);
}

TensorView TensorStore::get(std::string_view name, std::span<const int64_t> expected) const {
  TensorView v = get(name);
  if (!std::equal(v.shape().begin(), v.shape().end(), expected.begin(), expected.end()))
    fail("{}: tensor '{}' has shape {}, expected {}", v.file->string(), name, shape_str(v.shape()),
         shape_str(expected));
  return v;
}

void TensorStore::advise(std::span<const std::byte> range, MemoryAdvice advice) const {
  for (const auto& f : files_)
    if (f->mapping().contains(range)) return f->mapping().advise(range, advice);
}

std::vector<float> TensorStore::load_f32(std::string_view name,
                                         std::span<const int64_t> expected) const {
  TensorView v = get(name, expected);
  if (!dtype_is_float(v.dtype()))
    fail("{}: tensor '{}' has dtype {}, expected a floating-point type", v.file->string(), name,
         dtype_name(v.dtype()));
  std::vector<float> out(static_cast<size_t>(v.numel()));
  convert_to_f32(v.dtype(), v.bytes.data(), out.size(), out.data());
  if (v.dtype() != DType::F8_E4M3) return out;

  // Block FP8: weight [rows, cols] with scale_inv [ceil(rows/128), ceil(cols/128)].
  const std::string scale_name = std::string(name) + "_scale_inv";
  if (v.shape().size() != 2)
    fail("{}: FP8 tensor '{}' has shape {}; block scaling needs a matrix", v.file->string(), name,
         shape_str(v.shape()));
  const int64_t rows = v.shape()[0], cols = v.shape()[1];
  const int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  if (!contains(scale_name))
    fail("{}: FP8 tensor '{}' has no companion '{}'", dir_.string(), name, scale_name);
  std::vector<float> scale = load_f32(scale_name, {br, bc});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] *= scale[(r / 128) * bc + c / 128];
  return out;
}

}  // namespace whittle
