// Tests of the .npy reader and writer against files numpy.save wrote (tests/golden/io/numpy_*.npy,
// from tools/oracle/make_io_golden.py): exact values back, byte-identical output, and bad headers
// refused with an Error naming the file.
#include "io/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests" / "golden" / "io";

class NpyTest : public ::testing::Test {
 protected:
  ScratchDir scratch_;
  const fs::path dir_ = scratch_.path();
};

// The arrays of make_io_golden.py (NPY_F32, NPY_I64, NPY_I32).
const std::vector<float> kF32 = {0.0f,
                                 -0.0f,
                                 1.5f,
                                 -2.25f,
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(),
                                 1e-45f,
                                 3.4028235e38f,
                                 65504.0f,
                                 1e-8f,
                                 -7.0f,
                                 0.1f};
const std::vector<int64_t> kI64 = {0, -1, std::numeric_limits<int64_t>::max(),
                                   std::numeric_limits<int64_t>::min(), 151329};
const std::vector<int32_t> kI32 = {7, 4, 1, -2, -5, -8, -11, -14};

TEST_F(NpyTest, ReadsWhatNumpyWrote) {
  std::vector<int64_t> shape;
  std::vector<float> f = read_npy_f32(kGolden / "numpy_f32.npy", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{3, 4}));
  ASSERT_EQ(f.size(), kF32.size());
  EXPECT_EQ(std::memcmp(f.data(), kF32.data(), 4 * f.size()),
            0);  // bitwise: -0.0 and the subnormal too

  EXPECT_EQ(read_npy_i64(kGolden / "numpy_i64.npy", &shape), kI64);
  EXPECT_EQ(shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(read_npy_i32(kGolden / "numpy_i32.npy", &shape), kI32);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(read_npy_f32(kGolden / "numpy_scalar_f32.npy", &shape), std::vector<float>{2.5f});
  EXPECT_TRUE(shape.empty());
  EXPECT_TRUE(read_npy_f32(kGolden / "numpy_empty_f32.npy", &shape).empty());
  EXPECT_EQ(shape, (std::vector<int64_t>{0, 3}));
}

TEST_F(NpyTest, WritesWhatNumpyWrites) {
  const std::vector<int64_t> s34 = {3, 4}, s5 = {5}, s222 = {2, 2, 2}, scalar = {}, s03 = {0, 3};
  write_npy(dir_ / "f32.npy", std::span<const float>(kF32), s34);
  write_npy(dir_ / "i64.npy", std::span<const int64_t>(kI64), s5);
  write_npy(dir_ / "i32.npy", std::span<const int32_t>(kI32), s222);
  const float two_and_half = 2.5f;
  write_npy(dir_ / "scalar.npy", std::span<const float>(&two_and_half, 1), scalar);
  write_npy(dir_ / "empty.npy", std::span<const float>(), s03);
  EXPECT_TRUE(read_file(dir_ / "f32.npy") == read_file(kGolden / "numpy_f32.npy"));
  EXPECT_TRUE(read_file(dir_ / "i64.npy") == read_file(kGolden / "numpy_i64.npy"));
  EXPECT_TRUE(read_file(dir_ / "i32.npy") == read_file(kGolden / "numpy_i32.npy"));
  EXPECT_TRUE(read_file(dir_ / "scalar.npy") == read_file(kGolden / "numpy_scalar_f32.npy"));
  EXPECT_TRUE(read_file(dir_ / "empty.npy") == read_file(kGolden / "numpy_empty_f32.npy"));
}

TEST_F(NpyTest, RoundTripsManyShapes) {
  for (std::vector<int64_t> shape :
       {std::vector<int64_t>{1}, {63}, {64}, {7, 9}, {2, 3, 4, 5}, {1000000}}) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.37f - 5;
    write_npy(dir_ / "a.npy", std::span<const float>(v), shape);
    std::vector<int64_t> got_shape;
    EXPECT_EQ(read_npy_f32(dir_ / "a.npy", &got_shape), v);
    EXPECT_EQ(got_shape, shape);
    EXPECT_EQ(fs::file_size(dir_ / "a.npy") % 64, (4 * v.size()) % 64)
        << "header not 64-byte aligned";
  }
}

// A v1.0 file with the given header dict text (padded like numpy) and data.
std::string npy_with_header(const std::string& dict, const std::string& data) {
  std::string text = dict;
  text.append(64 - (10 + text.size() + 1) % 64, ' ');
  text += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(text.size() & 0xff);
  out += static_cast<char>(text.size() >> 8);
  return out + text + data;
}

TEST_F(NpyTest, BadHeadersNameTheFileAndTheField) {
  const fs::path p = dir_ / "bad.npy";
  auto expect_bad = [&](const std::string& bytes, std::vector<std::string> parts) {
    write_file_atomic(p, bytes);
    parts.push_back(p.string());
    expect_error([&] { read_npy(p); }, parts);
  };
  const std::string eight(8, '\0');
  expect_bad("", {"magic"});
  expect_bad("PK\x03\x04 not numpy", {"magic"});
  expect_bad(std::string("\x93NUMPY\x04\x00\x10\x00", 10), {"version 4.0"});
  expect_bad(std::string("\x93NUMPY\x01\x00\xff\x00{}", 12),
             {"header length 255 runs past the end"});
  expect_bad(npy_with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", eight),
             {"'>f4'", "not supported"});
  expect_bad(npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", eight),
             {"'<f8'"});
  expect_bad(npy_with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", eight),
             {"Fortran order"});
  expect_bad(npy_with_header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", eight),
             {"fortran_order"});
  expect_bad(npy_with_header("{'descr': '<f4', 'shape': (2,), }", eight),
             {"lacks 'fortran_order'"});
  expect_bad(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", eight),
             {"'shape'"});
  expect_bad(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", eight),
             {"shape [2, 3] needs 24 data bytes, the file holds 8"});
  expect_bad(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", eight),
             {"needs 4 data bytes, the file holds 8"});
  expect_bad(
      npy_with_header(
          "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", eight),
      {"overflows"});
  expect_bad(
      npy_with_header(
          "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", eight),
      {"overflows"});
  // No elements, but numel() would overflow int64_t on the way to the 0 (a fuzzer finding).
  expect_bad(npy_with_header("{'descr': '<i4', 'fortran_order': False, "
                             "'shape': (2, 2, 2, 2, 27460, 4043, 472, 24643, 472, 0), }",
                             ""),
             {"overflows"});
  expect_bad(
      npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", eight),
      {"unexpected key 'extra'"});
  expect_bad(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", eight),
             {"malformed"});
  expect_bad(npy_with_header(
                 "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", eight),
             {"repeats 'descr'"});

  write_npy(p, std::span<const int32_t>(kI32), std::vector<int64_t>{8});
  expect_error([&] { read_npy_f32(p); }, {p.string(), "dtype I32, expected F32"});
  expect_error(
      [&] {
        write_npy(p, std::span<const int32_t>(kI32), std::vector<int64_t>{3, 3});
      },
      {p.string(), "holds 9 elements, but 8 were given"});
}

TEST_F(NpyTest, NonRegularFilesAreRefusedWithoutBlocking) {
  const fs::path fifo = dir_ / "ids.npy";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(error_reading_fifo(fifo, [&] { read_npy(fifo); }),
              HasSubstr(fifo.string() + ": not a regular file"));
  expect_error([&] { read_npy_f32(dir_); }, {dir_.string() + ": not a regular file", "folder"});
  expect_error([] { read_npy("/dev/zero"); }, {"/dev/zero: not a regular file"});
}

TEST_F(NpyTest, WritingDoesNotFollowASymlinkAtTheOldTemporaryName) {
  const fs::path victim = dir_ / "victim.txt";
  write_file_atomic(victim, "precious");
  const fs::path out = dir_ / "logits.npy";
  fs::create_symlink(victim, out.string() + ".tmp." + std::to_string(::getpid()));
  const std::vector<float> values = {1.0f, 2.0f};
  write_npy(out, values, std::vector<int64_t>{2});
  EXPECT_EQ(read_file(victim), "precious");
  EXPECT_EQ(read_npy_f32(out), values);
}

}  // namespace
}  // namespace whittle
