// Tests of SafeTensorsWriter: byte-identical output to Python safetensors and huggingface_hub for
// the same tensors (golden files from tools/oracle/make_io_golden.py), round trips of every dtype
// through the reader, sharding, refusals that name the tensor, and nothing left behind without
// finish().
#include "io/safetensors_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" / "io";

class WriterTest : public ::testing::Test {
 protected:
  WriterTest() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / fmt::format("whittle-writer-{}-{}", info->name(), ::getpid());
    fs::remove_all(dir_);
  }
  ~WriterTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::vector<std::string> files_in(const fs::path& dir) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

uint8_t f32_to_f8e4m3_exact(float v) {
  for (int b = 0; b < 256; ++b)
    if (f8e4m3_to_f32(static_cast<uint8_t>(b)) == v &&
        std::signbit(f8e4m3_to_f32(static_cast<uint8_t>(b))) == std::signbit(v))
      return static_cast<uint8_t>(b);
  ADD_FAILURE() << v << " is not exact in F8_E4M3";
  return 0;
}

// The tensor bytes of the oracle's value formula (see tools/oracle/make_io_golden.py): element i is
// k = (7 i) mod 23, then (k - 11) / 4 for floats, k - 11 for signed ints, k for uint8, i mod 3 == 0
// for bool. The values are exact in every dtype, so encoding them needs no rounding.
std::vector<std::byte> pattern_bytes(DType dtype, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<std::byte> out(static_cast<size_t>(n) * dtype_size(dtype));
  auto put = [&](int64_t i, const auto& v) {
    std::memcpy(out.data() + i * sizeof(v), &v, sizeof(v));
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = (i * 7) % 23;
    const float f = static_cast<float>(k - 11) / 4;
    switch (dtype) {
      case DType::BF16:
        put(i, f32_to_bf16(f));
        break;
      case DType::F16:
        put(i, f32_to_f16(f));
        break;
      case DType::F32:
        put(i, f);
        break;
      case DType::F64:
        put(i, static_cast<double>(f));
        break;
      case DType::I64:
        put(i, static_cast<int64_t>(k - 11));
        break;
      case DType::I32:
        put(i, static_cast<int32_t>(k - 11));
        break;
      case DType::I8:
        put(i, static_cast<int8_t>(k - 11));
        break;
      case DType::U8:
        put(i, static_cast<uint8_t>(k));
        break;
      case DType::BOOL:
        put(i, static_cast<uint8_t>(i % 3 == 0));
        break;
      case DType::F8_E4M3:
        put(i, f32_to_f8e4m3_exact(f));
        break;
    }
  }
  return out;
}

struct Spec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

void add_pattern(SafeTensorsWriter& w, const Spec& s) {
  std::vector<std::byte> bytes = pattern_bytes(s.dtype, s.shape);
  w.add(s.name, s.dtype, s.shape, bytes);
}

std::string file_bytes(const fs::path& p) {
  return read_file(p);
}

TEST_F(WriterTest, MatchesPythonSafetensorsByteForByte) {
  // The tensors of python_dtypes.safetensors, added in the oracle's order.
  const std::vector<Spec> specs = {
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
  SafeTensorsWriter w(dir_, uint64_t{1} << 30);
  for (const Spec& s : specs) add_pattern(w, s);
  std::vector<fs::path> written = w.finish();
  ASSERT_EQ(written, std::vector<fs::path>{dir_ / "model.safetensors"});
  EXPECT_EQ(files_in(dir_), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(file_bytes(dir_ / "model.safetensors") ==
              file_bytes(kGolden / "python_dtypes.safetensors"))
      << "model.safetensors differs from what Python safetensors wrote for the same tensors";
}

TEST_F(WriterTest, ShardsLikeHuggingfaceHub) {
  // The tensors of python_sharded/, in the oracle's order, with its max_shard_size of 600 bytes.
  const std::vector<Spec> specs = {
      {"model.embed_tokens.weight", DType::BF16, {16, 8}},
      {"model.layers.0.mlp.weight", DType::F32, {8, 8}},
      {"model.layers.0.norm.weight", DType::BF16, {8}},
      {"model.layers.1.big", DType::F32, {32, 16}},
      {"model.layers.1.ids", DType::I64, {10}},
      {"model.layers.1.norm.weight", DType::F16, {8}},
      {"lm_head.weight", DType::BF16, {16, 8}},
  };
  SafeTensorsWriter w(dir_, 600);
  for (const Spec& s : specs) add_pattern(w, s);
  EXPECT_EQ(w.total_bytes(), 2928u);
  w.finish();
  const fs::path golden = kGolden / "python_sharded";
  EXPECT_EQ(files_in(dir_), files_in(golden));
  for (const std::string& shard : files_in(golden)) {
    if (!shard.ends_with(".safetensors")) continue;
    EXPECT_TRUE(file_bytes(dir_ / shard) == file_bytes(golden / shard))
        << shard << " differs from huggingface_hub's";
  }
  // huggingface_hub does not sort the index keys (transformers does, and so do we): compare as
  // JSON.
  using nlohmann::json;
  EXPECT_EQ(json::parse(file_bytes(dir_ / "model.safetensors.index.json")),
            json::parse(file_bytes(golden / "model.safetensors.index.json")));
  const std::string index = file_bytes(dir_ / "model.safetensors.index.json");
  EXPECT_TRUE(index.ends_with("}\n"));
  EXPECT_LT(index.find("\"lm_head.weight\""), index.find("\"model.embed_tokens.weight\""))
      << "keys not sorted";
}

TEST_F(WriterTest, EveryDtypeRoundTripsThroughTheReader) {
  const std::vector<Spec> specs = {
      {"bf16", DType::BF16, {5, 3}},  {"f16", DType::F16, {7}},
      {"f32", DType::F32, {2, 3, 4}}, {"f64", DType::F64, {3}},
      {"i32", DType::I32, {9}},       {"i64", DType::I64, {1, 1}},
      {"u8", DType::U8, {11}},        {"i8", DType::I8, {13}},
      {"bool", DType::BOOL, {3}},     {"f8", DType::F8_E4M3, {130, 3}},
      {"zero", DType::BF16, {4, 0}},  {"scalar", DType::I64, {}},
  };
  {
    SafeTensorsWriter w(dir_, uint64_t{1} << 20, {{"producer", "whittle test"}});
    for (const Spec& s : specs) add_pattern(w, s);
    w.finish();
  }
  SafeTensorsFile file(dir_ / "model.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("producer"), "whittle test");
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (const Spec& s : specs) {
    SCOPED_TRACE(s.name);
    const TensorInfo* info = file.find(s.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, s.dtype);
    EXPECT_EQ(info->shape, s.shape);
    TensorView v = file.view(*info);
    std::vector<std::byte> want = pattern_bytes(s.dtype, s.shape);
    ASSERT_EQ(v.bytes.size(), want.size());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), v.bytes.begin()));
    // Aligned for its element size in the file (the mapping is page-aligned).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.bytes.data()) % dtype_size(s.dtype), 0u);
  }
}

TEST_F(WriterTest, ManySmallShardsReadBackThroughTensorStore) {
  std::mt19937 rng(11);
  std::vector<std::pair<std::string, std::vector<std::byte>>> tensors;
  {
    SafeTensorsWriter w(dir_, 1000);
    for (int i = 0; i < 60; ++i) {
      std::vector<std::byte> bytes(4 * (1 + rng() % 400));  // some exceed the shard size alone
      for (auto& b : bytes) b = static_cast<std::byte>(rng());
      std::string name = fmt::format("layers.{}.weight", i);
      w.add(name, DType::F32, {static_cast<int64_t>(bytes.size() / 4)}, bytes);
      tensors.emplace_back(name, std::move(bytes));
    }
    w.finish();
  }
  TensorStore store(dir_);
  EXPECT_GT(store.file_count(), 10u);
  EXPECT_EQ(store.names().size(), tensors.size());
  for (const auto& [name, bytes] : tensors) {
    TensorView v = store.get(name);
    ASSERT_TRUE(std::equal(bytes.begin(), bytes.end(), v.bytes.begin(), v.bytes.end())) << name;
  }
  for (size_t i = 0; i < store.file_count(); ++i) {
    const std::string shard = store.file(i).path().filename().string();
    EXPECT_THAT(shard, ::testing::MatchesRegex(fmt::format(
                           "model-[0-9]{{5}}-of-{:05}\\.safetensors", store.file_count())));
  }
}

TEST_F(WriterTest, RefusalsNameTheTensorAndLeaveTheWriterUsable) {
  SafeTensorsWriter w(dir_, 1 << 20);
  std::vector<std::byte> six(6);
  expect_error([&] { w.add("w", DType::F32, {2}, six); },
               {dir_.string(), "tensor 'w'", "F32 [2] needs 8 bytes, got 6"});
  expect_error([&] { w.add("neg", DType::U8, {-1, 2}, six); }, {"tensor 'neg'", "negative"});
  expect_error(
      [&] {
        w.add("huge", DType::U8, {int64_t{1} << 40, int64_t{1} << 40, 0}, {});
      },
      {"tensor 'huge'", "overflows"});
  expect_error([&] { w.add("__metadata__", DType::U8, {6}, six); }, {"__metadata__", "reserved"});
  expect_error([&] { w.add("", DType::U8, {6}, six); }, {"empty"});
  expect_error([&] { w.add("bad\xff", DType::U8, {6}, six); }, {"UTF-8"});
  w.add("u", DType::U8, {6}, six);
  expect_error([&] { w.add("u", DType::U8, {2, 3}, six); }, {"tensor 'u'", "added twice"});
  w.finish();
  expect_error([&] { w.add("late", DType::U8, {6}, six); }, {"tensor 'late'", "after finish"});
  SafeTensorsFile f(dir_ / "model.safetensors");
  EXPECT_EQ(f.tensors().size(), 1u);
}

TEST_F(WriterTest, NoFinalFileWithoutFinish) {
  std::vector<std::byte> bytes(400);
  {
    SafeTensorsWriter w(dir_, 1000);
    for (int i = 0; i < 10; ++i)
      w.add(fmt::format("t{}", i), DType::F32, {100}, bytes);  // 3 shards closed
    EXPECT_FALSE(files_in(dir_).empty()) << "closed shards should be staged on disk";
    for (const std::string& f : files_in(dir_)) EXPECT_FALSE(f.ends_with(".safetensors")) << f;
  }
  EXPECT_TRUE(files_in(dir_).empty())
      << "left behind: " << ::testing::PrintToString(files_in(dir_));
}

TEST_F(WriterTest, NoFinalFileWhenTheCallerThrows) {
  std::vector<std::byte> bytes(400);
  try {
    SafeTensorsWriter w(dir_, 1000);
    for (int i = 0; i < 5; ++i) w.add(fmt::format("t{}", i), DType::F32, {100}, bytes);
    throw std::runtime_error("calibration failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(files_in(dir_).empty());
}

TEST_F(WriterTest, NothingPlantedAtTheOldStagingNamesGetsInTheWay) {
  // Staged shards used to be `.whittle-staged-<pid>-<n>.shard`: a folder planted there made the
  // write fail, a file there was taken over.
  fs::create_directories(dir_);
  for (int n = 1; n <= 3; ++n) {
    const fs::path old_name = dir_ / fmt::format(".whittle-staged-{}-{:05}.shard", ::getpid(), n);
    fs::create_directories(old_name);
    write_file_atomic(old_name / "theirs", "theirs");
  }
  std::vector<std::byte> bytes(400);
  SafeTensorsWriter w(dir_, 1000);
  for (int i = 0; i < 5; ++i) w.add(fmt::format("t{}", i), DType::F32, {100}, bytes);
  EXPECT_EQ(w.finish().size(), 4u);  // 3 shards + index
  TensorStore store(dir_);
  EXPECT_EQ(store.names().size(), 5u);
  for (int n = 1; n <= 3; ++n)
    EXPECT_EQ(
        read_file(dir_ / fmt::format(".whittle-staged-{}-{:05}.shard", ::getpid(), n) / "theirs"),
        "theirs");
}

TEST_F(WriterTest, RefusesAFolderHoldingACheckpoint) {
  fs::create_directories(dir_);
  write_file_atomic(dir_ / "model-00001-of-00002.safetensors", "x");
  expect_error([&] { SafeTensorsWriter w(dir_, 1000); },
               {dir_.string(), "model-00001-of-00002.safetensors", "refusing"});
  fs::remove(dir_ / "model-00001-of-00002.safetensors");
  write_file_atomic(dir_ / "config.json", "{}");
  SafeTensorsWriter w(dir_, 1000);  // other files are fine
  w.finish();
  EXPECT_EQ(files_in(dir_), (std::vector<std::string>{"config.json", "model.safetensors"}));
}

TEST_F(WriterTest, EmptyCheckpointHoldsOnlyMetadata) {
  SafeTensorsWriter w(dir_, 1000);
  w.finish();
  SafeTensorsFile f(dir_ / "model.safetensors");
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

}  // namespace
}  // namespace whittle
