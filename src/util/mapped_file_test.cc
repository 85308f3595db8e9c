// Tests of MappedFile and open_regular_file: a regular file maps whole; a FIFO, device or folder
// put where a file is expected is refused at once with an Error naming the path and what it is.
#include "util/mapped_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

class MappedFileTest : public ::testing::Test {
 protected:
  ScratchDir scratch_;
  const fs::path dir_ = scratch_.path();
};

TEST_F(MappedFileTest, MapsARegularFileWhole) {
  const fs::path p = dir_ / "a.bin";
  write_file_atomic(p, "hello");
  MappedFile f(p);
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(std::memcmp(f.bytes().data(), "hello", 5), 0);
  write_file_atomic(dir_ / "empty.bin", "");
  EXPECT_EQ(MappedFile(dir_ / "empty.bin").size(), 0u);
}

TEST_F(MappedFileTest, RefusesAFifoWithoutBlocking) {
  const fs::path fifo = dir_ / "model.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string error = error_reading_fifo(fifo, [&] { MappedFile f(fifo); });
  EXPECT_THAT(error, HasSubstr(fifo.string() + ": not a regular file"));
  EXPECT_THAT(error, HasSubstr("FIFO"));
  const std::string error2 = error_reading_fifo(fifo, [&] {
    uint64_t size = 0;
    ::close(open_regular_file(fifo, &size));
  });
  EXPECT_THAT(error2, HasSubstr(fifo.string() + ": not a regular file"));
}

TEST_F(MappedFileTest, RefusesDevicesAndFolders) {
  expect_error([] { MappedFile f("/dev/zero"); },
               {"/dev/zero: not a regular file", "character device"});
  expect_error([&] { MappedFile f(dir_); }, {dir_.string() + ": not a regular file", "folder"});
  expect_error([&] { MappedFile f(dir_ / "missing"); },
               {(dir_ / "missing").string() + ": cannot open"});
}

TEST_F(MappedFileTest, FollowsSymlinksToRegularFiles) {
  // Hugging Face caches link a model folder's files to blobs.
  write_file_atomic(dir_ / "blob", "weights");
  fs::create_symlink(dir_ / "blob", dir_ / "model.safetensors");
  uint64_t size = 0;
  int fd = open_regular_file(dir_ / "model.safetensors", &size);
  EXPECT_EQ(size, 7u);
  char buf[8] = {};
  EXPECT_EQ(::read(fd, buf, sizeof buf), 7);  // an ordinary blocking descriptor
  ::close(fd);
  EXPECT_EQ(MappedFile(dir_ / "model.safetensors").size(), 7u);
}

}  // namespace
}  // namespace whittle
