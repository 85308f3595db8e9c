// Tests of AtomicFile and AtomicDir: nothing under the final name until commit(), nothing at all
// left when not committed, and AtomicDir refusing to overwrite unless asked.
#include "util/atomic_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "util/error.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  AtomicFileTest() {
    dir_ = fs::temp_directory_path() /
           fmt::format("whittle-atomic-{}-{}",
                       ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~AtomicFileTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  size_t entries() const {
    return static_cast<size_t>(
        std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }
  fs::path dir_;
};

TEST_F(AtomicFileTest, CommitPublishesTheWholeFile) {
  const fs::path target = dir_ / "out.bin";
  {
    AtomicFile f(target);
    f.write("hello ");
    EXPECT_FALSE(fs::exists(target));
    EXPECT_TRUE(fs::exists(f.temp_path()));
    f.write("world");
    f.commit();
    EXPECT_FALSE(fs::exists(f.temp_path()));
  }
  EXPECT_EQ(read_file(target), "hello world");
  EXPECT_EQ(entries(), 1u);
}

TEST_F(AtomicFileTest, LeavesNothingWhenNotCommitted) {
  {
    AtomicFile f(dir_ / "out.bin");
    f.write("partial");
  }
  EXPECT_EQ(entries(), 0u);
  try {
    AtomicFile f(dir_ / "out.bin");
    f.write("partial");
    throw std::runtime_error("interrupted");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(entries(), 0u);
}

TEST_F(AtomicFileTest, ReplacesAnExistingFileOnlyAtCommit) {
  const fs::path target = dir_ / "out.txt";
  write_file_atomic(target, "old");
  {
    AtomicFile f(target);
    f.write("new");
    EXPECT_EQ(read_file(target), "old");
  }
  EXPECT_EQ(read_file(target), "old");
  write_file_atomic(target, "new");
  EXPECT_EQ(read_file(target), "new");
}

TEST_F(AtomicFileTest, ErrorsNameThePath) {
  try {
    AtomicFile f(dir_ / "no" / "such" / "dir" / "x");
    ADD_FAILURE() << "did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr((dir_ / "no" / "such" / "dir").string()));
  }
  EXPECT_THROW(read_file(dir_ / "missing"), Error);
}

TEST_F(AtomicFileTest, AtomicDirRefusesToOverwrite) {
  const fs::path target = dir_ / "model";
  fs::create_directories(target);
  write_file_atomic(target / "keep.txt", "keep");
  try {
    AtomicDir d(target);
    ADD_FAILURE() << "did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(target.string()));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("refusing to overwrite"));
  }
  EXPECT_EQ(read_file(target / "keep.txt"), "keep");
  {
    AtomicDir d(target, /*overwrite=*/true);
    write_file_atomic(d.path() / "new.txt", "new");
    EXPECT_EQ(read_file(target / "keep.txt"), "keep");  // untouched until commit
    d.commit();
  }
  EXPECT_FALSE(fs::exists(target / "keep.txt"));
  EXPECT_EQ(read_file(target / "new.txt"), "new");
}

TEST_F(AtomicFileTest, AtomicDirLeavesNothingWhenNotCommitted) {
  {
    AtomicDir d(dir_ / "model");
    write_file_atomic(d.path() / "a.txt", "a");
    EXPECT_FALSE(fs::exists(dir_ / "model"));
  }
  EXPECT_EQ(entries(), 0u);
  {
    AtomicDir d(dir_ / "model");
    write_file_atomic(d.path() / "a.txt", "a");
    d.commit();
  }
  EXPECT_EQ(read_file(dir_ / "model" / "a.txt"), "a");
  EXPECT_EQ(entries(), 1u);
}

}  // namespace
}  // namespace whittle
