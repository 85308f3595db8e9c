#include "io/npy.h"

#include <fmt/ranges.h>

#include <bit>
#include <cctype>
#include <climits>
#include <cstring>
#include <optional>

#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace whittle {
namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, ".npy data is written little-endian");

namespace {
constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kAlign = 64;             // numpy's ARRAY_ALIGN
constexpr size_t kGrowthAxisDigits = 21;  // numpy's GROWTH_AXIS_MAX_DIGITS

std::string_view npy_descr(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "<f4";
    case DType::I64:
      return "<i8";
    case DType::I32:
      return "<i4";
    case DType::BOOL:
      return "|b1";
    default:
      fail("internal: .npy supports F32, I64, I32 and BOOL, not {}", dtype_name(dtype));
  }
}

// The header numpy.save writes: the dict in sorted key order, spare spaces so the first axis can
// grow in place, then spaces and '\n' up to a multiple of 64 bytes (a whole extra 64 when already
// aligned).
std::string npy_header(DType dtype, std::span<const int64_t> shape) {
  std::string shape_repr;
  if (shape.empty())
    shape_repr = "()";
  else if (shape.size() == 1)
    shape_repr = fmt::format("({},)", shape[0]);
  else
    shape_repr = fmt::format("({})", fmt::join(shape, ", "));
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                 npy_descr(dtype), shape_repr);
  if (!shape.empty()) dict.append(kGrowthAxisDigits - std::to_string(shape[0]).size(), ' ');
  const size_t text_len = dict.size() + 1;  // + '\n'
  const size_t pad = kAlign - (kMagic.size() + 4 + text_len) % kAlign;
  dict.append(pad, ' ');
  dict += '\n';
  if (dict.size() > 0xffff)
    fail("internal: .npy header of {} bytes does not fit version 1.0", dict.size());
  std::string out(kMagic);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  return out + dict;
}

void write_npy_bytes(const fs::path& path, DType dtype, std::span<const std::byte> data,
                     size_t count, std::span<const int64_t> shape) {
  std::optional<int64_t> numel = checked_numel(shape);
  if (!numel) fail("{}: invalid shape {}", path.string(), shape_str(shape));
  if (static_cast<uint64_t>(*numel) != count)
    fail("{}: shape {} holds {} elements, but {} were given", path.string(), shape_str(shape),
         *numel, count);
  AtomicFile file(path);
  file.write(npy_header(dtype, shape));
  file.write(data);
  file.commit();
}

// A cursor over the header's Python dict literal, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class DictParser {
 public:
  DictParser(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  bool at_end() const { return pos_ >= text_.size(); }
  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, std::string_view where) {
    if (!accept(c)) fail("{}: malformed .npy header: expected '{}' {}", source_, c, where);
  }
  std::string string_literal(std::string_view where) {
    skip_space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"'))
      fail("{}: malformed .npy header: expected a quoted string {}", source_, where);
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos)
      fail("{}: malformed .npy header: unterminated string {}", source_, where);
    std::string out(text_.substr(pos_, end - pos_));
    if (out.find('\\') != std::string::npos)
      fail("{}: malformed .npy header: escape sequences are not supported {}", source_, where);
    pos_ = end + 1;
    return out;
  }
  std::string_view word() {
    skip_space();
    size_t start = pos_;
    while (pos_ < text_.size() && std::isalpha(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  std::vector<int64_t> shape_tuple() {
    expect('(', "to open 'shape'");
    std::vector<int64_t> shape;
    while (!accept(')')) {
      skip_space();
      size_t start = pos_;
      uint64_t v = 0;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        if (__builtin_mul_overflow(v, 10u, &v) ||
            __builtin_add_overflow(v, uint64_t(text_[pos_] - '0'), &v) ||
            v > static_cast<uint64_t>(INT64_MAX))
          fail("{}: .npy header 'shape' has a dimension that overflows", source_);
        ++pos_;
      }
      if (pos_ == start)
        fail("{}: .npy header 'shape' must be a tuple of non-negative integers", source_);
      shape.push_back(static_cast<int64_t>(v));
      if (!accept(',')) {
        expect(')', "to close 'shape'");
        break;
      }
    }
    return shape;
  }

 private:
  std::string_view text_;
  const std::string& source_;
  size_t pos_ = 0;
};

uint64_t read_le(std::span<const std::byte> bytes) {
  uint64_t v = 0;
  for (size_t i = bytes.size(); i-- > 0;) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}
}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void write_npy(const fs::path& path, std::span<const float> values,
               std::span<const int64_t> shape) {
  write_npy_bytes(path, DType::F32, std::as_bytes(values), values.size(), shape);
}
void write_npy(const fs::path& path, std::span<const int64_t> values,
               std::span<const int64_t> shape) {
  write_npy_bytes(path, DType::I64, std::as_bytes(values), values.size(), shape);
}
void write_npy(const fs::path& path, std::span<const int32_t> values,
               std::span<const int64_t> shape) {
  write_npy_bytes(path, DType::I32, std::as_bytes(values), values.size(), shape);
}

NpyArray parse_npy(std::span<const std::byte> file, const std::string& src) {
  if (file.size() < 10 || std::memcmp(file.data(), kMagic.data(), kMagic.size()) != 0)
    fail("{}: not a .npy file (the \\x93NUMPY magic is missing)", src);
  const int major = static_cast<int>(file[6]), minor = static_cast<int>(file[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    fail("{}: unsupported .npy version {}.{} (expected 1.0, 2.0 or 3.0)", src, major, minor);
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (file.size() < 8 + len_bytes)
    fail("{}: truncated .npy file: the header length is missing", src);
  const uint64_t header_len = read_le(file.subspan(8, len_bytes));
  const size_t header_start = 8 + len_bytes;
  if (header_len > file.size() - header_start)
    fail("{}: .npy header length {} runs past the end of the file ({} bytes)", src, header_len,
         file.size());
  const std::string_view header(reinterpret_cast<const char*>(file.data() + header_start),
                                header_len);

  DictParser p(header, src);
  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<int64_t>> shape;
  p.expect('{', "at the start of the header");
  while (!p.accept('}')) {
    std::string key = p.string_literal("as a header key");
    p.expect(':', fmt::format("after header key '{}'", key));
    if (key == "descr") {
      if (descr) fail("{}: .npy header repeats 'descr'", src);
      descr = p.string_literal("for 'descr'");
    } else if (key == "fortran_order") {
      if (fortran_order) fail("{}: .npy header repeats 'fortran_order'", src);
      std::string_view w = p.word();
      if (w != "True" && w != "False")
        fail("{}: .npy header 'fortran_order' must be True or False", src);
      fortran_order = w == "True";
    } else if (key == "shape") {
      if (shape) fail("{}: .npy header repeats 'shape'", src);
      shape = p.shape_tuple();
    } else {
      fail("{}: .npy header has an unexpected key '{}'", src, key);
    }
    if (!p.accept(',')) {
      p.expect('}', "to close the header");
      break;
    }
  }
  p.skip_space();
  if (!p.at_end()) fail("{}: malformed .npy header: text after the closing '}}'", src);
  if (!descr || !fortran_order || !shape)
    fail("{}: .npy header lacks '{}'", src,
         !descr           ? "descr"
         : !fortran_order ? "fortran_order"
                          : "shape");

  NpyArray out;
  if (*descr == "<f4")
    out.dtype = DType::F32;
  else if (*descr == "<i8")
    out.dtype = DType::I64;
  else if (*descr == "<i4")
    out.dtype = DType::I32;
  else if (*descr == "|b1")
    out.dtype = DType::BOOL;
  else if (*descr == "<f2")
    out.dtype = DType::F16;
  else if (*descr == "|i1")
    out.dtype = DType::I8;
  else
    fail(
        "{}: .npy dtype '{}' is not supported (expected '<f4', '<i8', '<i4', '<f2', '|i1' or "
        "'|b1')",
        src, *descr);
  if (*fortran_order) fail("{}: .npy array is in Fortran order; only C order is supported", src);
  out.shape = std::move(*shape);

  std::optional<int64_t> numel = checked_numel(out.shape);
  uint64_t nbytes = 0;
  if (!numel ||
      __builtin_mul_overflow(static_cast<uint64_t>(*numel), dtype_size(out.dtype), &nbytes))
    fail("{}: .npy shape {} overflows", src, shape_str(out.shape));
  const uint64_t data_start = header_start + header_len;
  const uint64_t available = file.size() - data_start;
  if (available != nbytes)
    fail("{}: .npy {} array of shape {} needs {} data bytes, the file holds {}", src, *descr,
         shape_str(out.shape), nbytes, available);
  out.bytes.assign(file.begin() + static_cast<ptrdiff_t>(data_start), file.end());
  return out;
}

NpyArray read_npy(const fs::path& path) {
  MappedFile file(path);
  return parse_npy(file.bytes(), path.string());
}

namespace {
template <typename T>
std::vector<T> read_npy_as(const fs::path& path, DType want, std::vector<int64_t>* shape) {
  NpyArray a = read_npy(path);
  if (a.dtype != want)
    fail("{}: .npy array has dtype {}, expected {}", path.string(), dtype_name(a.dtype),
         dtype_name(want));
  std::vector<T> out(a.bytes.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), a.bytes.data(), a.bytes.size());
  if (shape) *shape = std::move(a.shape);
  return out;
}
}  // namespace

std::vector<float> read_npy_f32(const fs::path& path, std::vector<int64_t>* shape) {
  return read_npy_as<float>(path, DType::F32, shape);
}
std::vector<int64_t> read_npy_i64(const fs::path& path, std::vector<int64_t>* shape) {
  return read_npy_as<int64_t>(path, DType::I64, shape);
}
std::vector<int32_t> read_npy_i32(const fs::path& path, std::vector<int64_t>* shape) {
  return read_npy_as<int32_t>(path, DType::I32, shape);
}

}  // namespace whittle
