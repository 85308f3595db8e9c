// Tests of AtomicFile and AtomicDir: nothing under the final name until commit(), nothing at all
// left when not committed or when a write or commit fails, AtomicDir refusing to overwrite unless
// asked, temporaries that nothing planted beforehand can redirect, and plain permissions. Tests of
// read_file: FIFOs, devices and folders refused without blocking, and the size limit.
#include "util/atomic_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  size_t entries() const {
    return static_cast<size_t>(
        std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }
  // Names in dir_ that look like a temporary (".tmp" anywhere in the name).
  std::vector<std::string> temporaries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp") != std::string::npos)
        out.push_back(e.path().filename().string());
    return out;
  }
  // The name AtomicFile / AtomicDir used to write to, which anyone could plant something at.
  static fs::path old_temp_name(const fs::path& final_path) {
    return final_path.string() + ".tmp." + std::to_string(::getpid());
  }
  ScratchDir scratch_;
  const fs::path dir_ = scratch_.path();
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
  const fs::path target = dir_ / "no" / "such" / "dir" / "x";
  expect_error([&] { AtomicFile f(target); },
               {target.string() + ": cannot create a temporary file in " +
                (dir_ / "no" / "such" / "dir").string()});
  expect_error([&] { read_file(dir_ / "missing"); }, {(dir_ / "missing").string(), "cannot open"});
}

TEST_F(AtomicFileTest, APlantedSymlinkAtTheOldTemporaryNameIsNotFollowed) {
  const fs::path victim = dir_ / "victim.txt";
  write_file_atomic(victim, "precious");
  const fs::path target = dir_ / "out.npy";
  fs::create_symlink(victim, old_temp_name(target));
  write_file_atomic(target, "new");
  EXPECT_EQ(read_file(victim), "precious");
  EXPECT_EQ(read_file(target), "new");
  EXPECT_FALSE(fs::is_symlink(target));
  EXPECT_TRUE(fs::is_symlink(old_temp_name(target)));  // left alone, not ours

  // A symlink at the final name is replaced, not written through.
  const fs::path link = dir_ / "link.npy";
  fs::create_symlink(victim, link);
  write_file_atomic(link, "other");
  EXPECT_EQ(read_file(victim), "precious");
  EXPECT_FALSE(fs::is_symlink(link));
  EXPECT_EQ(read_file(link), "other");
}

TEST_F(AtomicFileTest, TemporariesAreFreshFilesWithUnpredictableNames) {
  const fs::path target = dir_ / "out.bin";
  AtomicFile a(target), b(target);
  for (const AtomicFile* f : {&a, &b}) {
    EXPECT_NE(f->temp_path(), old_temp_name(target));
    EXPECT_EQ(f->temp_path().parent_path(), dir_);
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(f->temp_path())));
  }
  // Two writers of the same file never share a temporary (the old pid-based name did).
  ASSERT_NE(a.temp_path(), b.temp_path());
  a.write("first");
  b.write("second");
  a.commit();
  EXPECT_EQ(read_file(target), "first");
  b.commit();
  EXPECT_EQ(read_file(target), "second");
  EXPECT_EQ(entries(), 1u);
}

TEST_F(AtomicFileTest, AFailedCommitRemovesTheTemporaryAtOnce) {
  // rename() of a file onto a non-empty folder fails, even for root.
  const fs::path target = dir_ / "out.bin";
  fs::create_directories(target);
  write_file_atomic(target / "keep", "keep");
  {
    AtomicFile f(target);
    f.write("data");
    expect_error([&] { f.commit(); }, {target.string() + ": cannot rename"});
    EXPECT_THAT(temporaries(), ::testing::IsEmpty());  // while the object still lives
    expect_error([&] { f.write("more"); }, {target.string()});
  }
  EXPECT_THAT(temporaries(), ::testing::IsEmpty());
  EXPECT_EQ(read_file(target / "keep"), "keep");
}

TEST_F(AtomicFileTest, AFailedWriteRemovesTheTemporaryAndNamesTheFinalFile) {
  // A file size limit makes write() fail with EFBIG, even for root.
  struct rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct rlimit limit = old_limit;
  limit.rlim_cur = 4096;
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  const fs::path target = dir_ / "big.bin";
  std::string error;
  {
    AtomicFile f(target);
    try {
      f.write(std::string(1 << 20, 'x'));
      f.commit();
    } catch (const Error& e) {
      error = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
    EXPECT_THAT(temporaries(), ::testing::IsEmpty());
  }
  EXPECT_THAT(error, ::testing::StartsWith(target.string() + ": "));
  EXPECT_THAT(error, ::testing::HasSubstr("failed"));
  EXPECT_EQ(entries(), 0u);
}

TEST_F(AtomicFileTest, PermissionsAreThoseOfAPlainFileUnderTheUmask) {
  const mode_t old_umask = ::umask(022);
  write_file_atomic(dir_ / "out.bin", "x");
  {
    AtomicDir d(dir_ / "model");
    d.commit();
  }
  ::umask(old_umask);
  EXPECT_EQ(fs::status(dir_ / "out.bin").permissions(), fs::perms(0644));
  EXPECT_EQ(fs::status(dir_ / "model").permissions(), fs::perms(0755));
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

TEST_F(AtomicFileTest, AtomicDirNeverTouchesWhatIsPlantedAtATemporaryName) {
  const fs::path target = dir_ / "model";
  // A folder of someone else's at the old predictable name was deleted, then used as ours.
  const fs::path planted = old_temp_name(target);
  fs::create_directories(planted);
  write_file_atomic(planted / "theirs.txt", "theirs");
  // A symlink at the old name of the output written by a second run.
  const fs::path victim = dir_ / "victim";
  fs::create_directories(victim);
  write_file_atomic(victim / "precious.txt", "precious");
  const fs::path target2 = dir_ / "model2";
  fs::create_symlink(victim, old_temp_name(target2));
  {
    AtomicDir d(target), d2(target2);
    EXPECT_NE(d.path(), planted);
    EXPECT_TRUE(fs::is_directory(fs::symlink_status(d.path())));
    EXPECT_EQ(d.path().parent_path(), dir_);
    write_file_atomic(d.path() / "a.txt", "a");
    write_file_atomic(d2.path() / "b.txt", "b");
    d.commit();
    d2.commit();
  }
  EXPECT_EQ(read_file(planted / "theirs.txt"), "theirs");
  EXPECT_EQ(read_file(target / "a.txt"), "a");
  EXPECT_FALSE(fs::exists(target / "theirs.txt"));
  EXPECT_EQ(read_file(target2 / "b.txt"), "b");
  EXPECT_EQ(read_file(victim / "precious.txt"), "precious");
  EXPECT_FALSE(fs::exists(victim / "b.txt"));
}

TEST_F(AtomicFileTest, AtomicDirFailedCommitKeepsTheOldFolderAndLeavesNoTemporary) {
  const fs::path target = dir_ / "model";
  fs::create_directories(target);
  write_file_atomic(target / "keep.txt", "keep");
  {
    AtomicDir d(target, /*overwrite=*/true);
    fs::remove_all(d.path());  // the rename into place will fail
    expect_error([&] { d.commit(); }, {target.string() + ": cannot rename"});
  }
  EXPECT_EQ(read_file(target / "keep.txt"), "keep");
  EXPECT_THAT(temporaries(), ::testing::IsEmpty());
  EXPECT_EQ(entries(), 1u);
}

TEST_F(AtomicFileTest, AtomicDirErrorsNameTheFinalFolder) {
  // The parent cannot be created: a file is in the way.
  write_file_atomic(dir_ / "file", "x");
  const fs::path target = dir_ / "file" / "model";
  expect_error([&] { AtomicDir d(target); }, {target.string() + ": cannot create folder"});
}

TEST_F(AtomicFileTest, ReadFileRefusesAFifoWithoutBlocking) {
  const fs::path fifo = dir_ / "config.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string error = error_reading_fifo(fifo, [&] { read_file(fifo); });
  EXPECT_THAT(error, ::testing::HasSubstr(fifo.string() + ": not a regular file"));
  EXPECT_THAT(error, ::testing::HasSubstr("FIFO"));
}

TEST_F(AtomicFileTest, ReadFileRefusesDevicesAndFolders) {
  expect_error([] { read_file("/dev/null"); },
               {"/dev/null: not a regular file", "character device"});
  expect_error([&] { read_file(dir_); }, {dir_.string() + ": not a regular file", "folder"});
}

TEST_F(AtomicFileTest, ReadFileRefusesFilesOverTheLimit) {
  const fs::path p = dir_ / "tokenizer.json";
  write_file_atomic(p, std::string(100, 'x'));
  EXPECT_EQ(read_file(p, 100).size(), 100u);
  expect_error([&] { read_file(p, 99); }, {p.string(), "100 bytes", "99 byte limit"});
  EXPECT_EQ(kReadFileMaxBytes, uint64_t{1} << 30);
}

}  // namespace
}  // namespace whittle
