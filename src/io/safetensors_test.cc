// Tests of the safetensors reader: every kind of bad input gives one whittle::Error naming the file
// and the tensor or field; good files written by Python safetensors / huggingface_hub / torch
// (golden files from tools/oracle/make_io_golden.py) read back exactly, block FP8 included.
#include "io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "io/npy.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" / "io";

// A safetensors file from a header text and data bytes, bypassing any writer.
std::string raw_safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 0xff);
  return out + header + data;
}

class SafeTensorsBadInput : public ::testing::Test {
 protected:
  fs::path write(const std::string& name, const std::string& bytes) {
    fs::path p = dir_.path() / name;
    write_file_atomic(p, bytes);
    return p;
  }
  // Opens a file with the given header and data and expects the error to name the file and `parts`.
  void expect_bad(const std::string& header, const std::string& data,
                  std::vector<std::string> parts) {
    fs::path p = write("bad.safetensors", raw_safetensors(header, data));
    parts.push_back(p.string());
    expect_error([&] { SafeTensorsFile f(p); }, parts);
  }
  ScratchDir dir_;
};

TEST_F(SafeTensorsBadInput, FileShorterThanTheLengthField) {
  fs::path p = write("short.safetensors", std::string("\x05\x00\x00", 3));
  expect_error([&] { SafeTensorsFile f(p); }, {p.string(), "truncated", "3 bytes"});
  fs::path empty = write("empty.safetensors", "");
  expect_error([&] { SafeTensorsFile f(empty); }, {empty.string(), "truncated", "0 bytes"});
}

TEST_F(SafeTensorsBadInput, DataSectionCutShort) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", std::string(12, '\0'),
             {"tensor 'w'", "outside the data section", "truncated"});
}

TEST_F(SafeTensorsBadInput, HeaderLengthPastTheEnd) {
  std::string bytes =
      raw_safetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  bytes[0] = static_cast<char>(0xff);
  bytes[1] = static_cast<char>(0xff);
  fs::path p = write("long_header.safetensors", bytes);
  expect_error([&] { SafeTensorsFile f(p); },
               {p.string(), "header length 65535 runs past the end"});
  bytes[7] = static_cast<char>(0x80);  // 2^63 + ...: must not wrap around
  p = write("huge_header.safetensors", bytes);
  expect_error([&] { SafeTensorsFile f(p); }, {p.string(), "runs past the end"});
}

TEST_F(SafeTensorsBadInput, MalformedHeaderJson) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", "abcd",
             {"malformed header JSON"});
  expect_bad(std::string("{\"w\":\0}", 7), "", {"malformed header JSON"});
}

TEST_F(SafeTensorsBadInput, HeaderNotAnObject) {
  expect_bad(R"([{"dtype":"F32","shape":[1],"data_offsets":[0,4]}])", "abcd",
             {"not a JSON object"});
  expect_bad(R"({"w":[1,2]})", "", {"tensor 'w'", "not an object"});
  expect_bad(R"({"__metadata__":{"format":7}})", "", {"__metadata__", "'format'", "not a string"});
}

TEST_F(SafeTensorsBadInput, MissingFields) {
  expect_bad(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd", {"tensor 'w'", "'dtype'"});
  expect_bad(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd", {"tensor 'w'", "'shape'"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd",
             {"tensor 'w'", "data_offsets"});
}

TEST_F(SafeTensorsBadInput, UnknownDtype) {
  expect_bad(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", "abcd",
             {"tensor 'w'", "unknown dtype 'F12'"});
}

TEST_F(SafeTensorsBadInput, NegativeOrNonIntegerShape) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd",
             {"tensor 'w'", "shape element 0 is -1", "non-negative integers"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[1,2.5],"data_offsets":[0,4]}})", "abcd",
             {"tensor 'w'", "shape element 1 is 2.5"});
  expect_bad(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,4]}})", "abcd",
             {"tensor 'w'", "shape"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
             "abcd", {"tensor 'w'", "overflows"});
  // No elements, but TensorInfo::numel() would overflow int64_t before reaching the 0.
  expect_bad(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", "",
             {"tensor 'w'", "overflows"});
}

TEST_F(SafeTensorsBadInput, DeeplyNestedShapeDoesNotCrash) {
  const int depth = 1 << 20;
  std::string header = R"({"w":{"dtype":"F32","shape":)" + std::string(depth, '[') +
                       std::string(depth, ']') + R"(,"data_offsets":[0,4]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  expect_bad(header, "abcd", {"tensor 'w'", "shape element 0 is an array"});
}

TEST_F(SafeTensorsBadInput, OffsetOutsideTheFile) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", std::string(8, '\0'),
             {"tensor 'w'", "data_offsets [8, 12]", "outside the data section (8 bytes)"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", std::string(8, '\0'),
             {"tensor 'w'", "data_offsets element -4"});
}

TEST_F(SafeTensorsBadInput, BeginAfterEnd) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", std::string(8, '\0'),
             {"tensor 'w'", "data_offsets [4, 0]", "end before they begin"});
}

TEST_F(SafeTensorsBadInput, ByteSizeNotShapeTimesDtype) {
  expect_bad(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'),
             {"tensor 'w'", "BF16 [3] needs 6 bytes", "hold 8"});
}

TEST_F(SafeTensorsBadInput, OverlappingTensors) {
  expect_bad(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      std::string(12, '\0'), {"'a' [0, 8)", "'b' [4, 12)", "overlap"});
}

class TensorStoreBadInput : public SafeTensorsBadInput {
 protected:
  // Two shards: a (F32 [2,3]) in the first, b (I64 [2]) in the second.
  void write_two_shards() {
    write("model-00001-of-00002.safetensors",
          raw_safetensors(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
                          std::string(24, '\0')));
    write("model-00002-of-00002.safetensors",
          raw_safetensors(R"({"b":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
                          std::string(16, '\0')));
  }
  fs::path index() const { return dir_.path() / "model.safetensors.index.json"; }
};

TEST_F(TensorStoreBadInput, MissingTensor) {
  write_two_shards();
  TensorStore store(dir_.path());
  expect_error([&] { store.get("c"); }, {dir_.path().string(), "missing tensor 'c'"});
}

TEST_F(TensorStoreBadInput, WrongShape) {
  write_two_shards();
  TensorStore store(dir_.path());
  const std::vector<int64_t> expected = {3, 2};
  expect_error([&] { store.get("a", expected); },
               {"model-00001-of-00002.safetensors", "tensor 'a'", "shape [2, 3], expected [3, 2]"});
  expect_error([&] { store.load_f32("a", {6}); }, {"tensor 'a'", "expected [6]"});
}

TEST_F(TensorStoreBadInput, IndexNamesAMissingShard) {
  write_two_shards();
  write(
      "model.safetensors.index.json",
      R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00003-of-00003.safetensors"}})");
  expect_error([&] { TensorStore s(dir_.path()); },
               {index().string(), "shard 'model-00003-of-00003.safetensors'", "does not exist"});
}

TEST_F(TensorStoreBadInput, IndexNamesATensorNotInItsShard) {
  write_two_shards();
  write(
      "model.safetensors.index.json",
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  expect_error([&] { TensorStore s(dir_.path()); },
               {index().string(), "tensor 'b'", "model-00001-of-00002.safetensors"});
  write(
      "model.safetensors.index.json",
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  expect_error([&] { TensorStore s(dir_.path()); },
               {index().string(), "tensor 'c'", "does not hold it"});
}

TEST_F(TensorStoreBadInput, MalformedIndex) {
  write_two_shards();
  write("model.safetensors.index.json",
        R"({"weight_map":{"a":"model-00001-of-00002.safetensors",)");
  expect_error([&] { TensorStore s(dir_.path()); }, {index().string(), "malformed JSON"});
  write("model.safetensors.index.json", R"({"metadata":{}})");
  expect_error([&] { TensorStore s(dir_.path()); }, {index().string(), "'weight_map'"});
  write("model.safetensors.index.json",
        R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})");
  expect_error([&] { TensorStore s(dir_.path()); },
               {index().string(), "weight_map['a']", "not a file in the folder"});
}

TEST_F(TensorStoreBadInput, DuplicateTensorAcrossShards) {
  write_two_shards();
  write("model-00003-of-00003.safetensors",
        raw_safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                        std::string(4, '\0')));
  expect_error([&] { TensorStore s(dir_.path()); },
               {dir_.path().string(), "tensor 'a'", "model-00001-of-00002.safetensors",
                "model-00003-of-00003.safetensors"});
}

TEST_F(TensorStoreBadInput, FifoShardOrIndexIsRefusedWithoutBlocking) {
  write_two_shards();
  const fs::path shard2 = dir_.path() / "model-00002-of-00002.safetensors";
  fs::remove(shard2);
  ASSERT_EQ(::mkfifo(shard2.c_str(), 0600), 0);
  write(
      "model.safetensors.index.json",
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  std::string error = error_reading_fifo(shard2, [&] { TensorStore s(dir_.path()); });
  EXPECT_THAT(error, HasSubstr("'model-00002-of-00002.safetensors'"));
  EXPECT_THAT(error, HasSubstr("not a regular file"));
  EXPECT_THAT(error, HasSubstr(index().string()));
  error = error_reading_fifo(shard2, [&] { SafeTensorsFile f(shard2); });
  EXPECT_THAT(error, HasSubstr(shard2.string() + ": not a regular file"));

  // The index itself a FIFO.
  fs::remove(index());
  ASSERT_EQ(::mkfifo(index().c_str(), 0600), 0);
  error = error_reading_fifo(index(), [&] { TensorStore s(dir_.path()); });
  EXPECT_THAT(error, HasSubstr(index().string() + ": not a regular file"));

  // Without an index a FIFO named *.safetensors is refused by name too (never silently skipped).
  fs::remove(index());
  error = error_reading_fifo(shard2, [&] { TensorStore s(dir_.path()); });
  EXPECT_THAT(error, HasSubstr(shard2.string() + ": not a regular file (it is a FIFO)"));
}

TEST_F(TensorStoreBadInput, IndexNamesAFolder) {
  write_two_shards();
  fs::create_directories(dir_.path() / "sub.safetensors");
  write("model.safetensors.index.json",
        R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"sub.safetensors"}})");
  expect_error([&] { TensorStore s(dir_.path()); },
               {index().string(), "shard 'sub.safetensors'", "not a regular file"});
}

TEST_F(TensorStoreBadInput, NotAFolderOrEmpty) {
  expect_error([&] { TensorStore s(dir_.path() / "nope"); }, {"nope", "not a model folder"});
  expect_error([&] { TensorStore s(dir_.path()); },
               {dir_.path().string(), "no *.safetensors files"});
}

// The value formula of tools/oracle/make_io_golden.py: element i is k = (7 i) mod 23, then
// (k - 11) / 4 for floats, k - 11 for signed ints, k for uint8, i mod 3 == 0 for bool.
double pattern_value(DType dtype, int64_t i) {
  const int64_t k = (i * 7) % 23;
  if (dtype == DType::BOOL) return i % 3 == 0 ? 1 : 0;
  if (dtype == DType::U8) return static_cast<double>(k);
  if (dtype_is_float(dtype)) return static_cast<double>(k - 11) / 4;
  return static_cast<double>(k - 11);
}

TEST(SafeTensorsGolden, ReadsWhatPythonSafetensorsWrote) {
  SafeTensorsFile file(kGolden / "python_dtypes.safetensors");
  struct Expected {
    const char* name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Expected> expected = {
      {"model.norm.weight", DType::BF16, {3, 5}},
      {"half", DType::F16, {2, 2, 3}},
      {"float", DType::F32, {7}},
      {"double", DType::F64, {2, 3}},
      {"long", DType::I64, {4}},
      {"int", DType::I32, {3, 2}},
      {"char", DType::I8, {5}},
      {"byte", DType::U8, {6}},
      {"mask", DType::BOOL, {4}},
      {"fp8.weight", DType::F8_E4M3, {3, 3}},
      {"scalar", DType::F32, {}},
      {"empty", DType::F32, {0, 3}},
  };
  ASSERT_EQ(file.tensors().size(), expected.size());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (const Expected& e : expected) {
    SCOPED_TRACE(e.name);
    const TensorInfo* info = file.find(e.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, e.dtype);
    EXPECT_EQ(info->shape, e.shape);
    TensorView view = file.view(*info);
    std::vector<double> values(static_cast<size_t>(info->numel()));
    if (e.dtype == DType::BOOL) {
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(view.bytes[i]);
    } else if (e.dtype == DType::I64) {  // exact, without a trip through float
      for (size_t i = 0; i < values.size(); ++i) {
        int64_t v;
        std::memcpy(&v, view.bytes.data() + 8 * i, 8);
        values[i] = static_cast<double>(v);
      }
    } else {
      std::vector<float> f(values.size());
      convert_to_f32(e.dtype, view.bytes.data(), f.size(), f.data());
      values.assign(f.begin(), f.end());
    }
    for (size_t i = 0; i < values.size(); ++i)
      EXPECT_EQ(values[i], pattern_value(e.dtype, static_cast<int64_t>(i))) << "element " << i;
  }
}

TEST(SafeTensorsGolden, ReadsAHuggingfaceHubShardedCheckpoint) {
  TensorStore store(kGolden / "python_sharded");
  EXPECT_EQ(store.file_count(), 3u);
  EXPECT_EQ(store.names().size(), 7u);
  std::vector<float> big = store.load_f32("model.layers.1.big", {32, 16});
  for (size_t i = 0; i < big.size(); ++i)
    ASSERT_EQ(big[i], pattern_value(DType::F32, static_cast<int64_t>(i)));
  std::vector<float> embed = store.load_f32("model.embed_tokens.weight", {16, 8});
  for (size_t i = 0; i < embed.size(); ++i)
    ASSERT_EQ(embed[i], pattern_value(DType::BF16, static_cast<int64_t>(i)));
  TensorView ids = store.get("model.layers.1.ids", std::vector<int64_t>{10});
  EXPECT_EQ(ids.file->filename(), "model-00003-of-00003.safetensors");
}

TEST(SafeTensorsGolden, LoadsEmptyTensors) {
  // "empty" is F32 [0, 3]: converting zero elements must not hand memcpy a null pointer (UBSan
  // finding of the fuzzer; this test catches it under `make asan`).
  fs::path dir = fs::temp_directory_path() / fmt::format("whittle-empty-golden-{}", ::getpid());
  fs::create_directories(dir);
  fs::copy_file(kGolden / "python_dtypes.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  TensorStore store(dir);
  EXPECT_TRUE(store.load_f32("empty", {0, 3}).empty());
  EXPECT_EQ(store.load_f32("scalar", std::span<const int64_t>()),
            std::vector<float>{static_cast<float>(pattern_value(DType::F32, 0))});
  fs::remove_all(dir);
}

TEST(SafeTensorsGolden, BlockFp8DequantMatchesTorch) {
  // fp8_block.safetensors: F8_E4M3 [130, 200] weight, F32 [2, 2] scale_inv; 130 x 200 cuts both
  // tile dimensions short, so the partial tiles are covered.
  fs::path dir = fs::temp_directory_path() / fmt::format("whittle-fp8-golden-{}", ::getpid());
  fs::create_directories(dir);
  fs::copy_file(kGolden / "fp8_block.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  TensorStore store(dir);
  std::vector<float> got = store.load_f32("layer.weight", {130, 200});
  std::vector<int64_t> shape;
  std::vector<float> want = read_npy_f32(kGolden / "fp8_block_dequant.npy", &shape);
  fs::remove_all(dir);
  ASSERT_EQ(shape, (std::vector<int64_t>{130, 200}));
  ASSERT_EQ(got.size(), want.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0 && ++mismatches < 5)
      ADD_FAILURE() << "element " << i << " (row " << i / 200 << ", col " << i % 200
                    << "): " << got[i] << " != torch " << want[i];
  EXPECT_EQ(mismatches, 0u);
}

}  // namespace
}  // namespace whittle
