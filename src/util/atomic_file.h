// Outputs are written under a temporary name and renamed when complete, so an interrupted run never
// leaves something that looks finished. AtomicFile does it for one file, AtomicDir for a folder.
#pragma once

#include <cstdio>
#include <filesystem>
#include <span>
#include <string_view>

namespace whittle {

class AtomicFile {
 public:
  // Opens `<final>.tmp.<pid>` for writing. Throws Error on failure.
  explicit AtomicFile(std::filesystem::path final_path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::byte> bytes);
  void write(std::string_view text);
  // Flushes, fsyncs and renames the temporary file to its final name.
  void commit();
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path final_, temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
void write_file_atomic(const std::filesystem::path& path, std::string_view text);

class AtomicDir {
 public:
  // Creates `<final>.tmp.<pid>/`; refuses to run if `final` exists and `overwrite` is false.
  explicit AtomicDir(std::filesystem::path final_path, bool overwrite = false);
  ~AtomicDir();  // removes the temporary folder unless commit() succeeded
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::filesystem::path& path() const { return temp_; }
  void commit();

 private:
  std::filesystem::path final_, temp_;
  bool overwrite_, committed_ = false;
};

std::string read_file(const std::filesystem::path& path);

}  // namespace whittle
