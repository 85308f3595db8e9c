// Outputs are written under a temporary name and renamed when complete, so an interrupted run never
// leaves something that looks finished. AtomicFile does it for one file, AtomicDir for a folder.
// Temporaries get unpredictable names in the destination folder and are created exclusively (never
// through a symlink or over something already there), with the permissions a plain file or folder
// would get under the umask. read_file() reads a small input file whole, refusing FIFOs, devices
// and oversized files rather than blocking or exhausting memory.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace whittle {

class AtomicFile {
 public:
  // Creates `<final>.tmp.<random>` beside `final` for writing. Throws Error naming `final` when it
  // cannot (e.g. the folder does not exist).
  explicit AtomicFile(std::filesystem::path final_path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // A failed write or commit removes the temporary file at once and throws Error naming `final`;
  // the object is then unusable.
  void write(std::span<const std::byte> bytes);
  void write(std::string_view text);
  // Flushes, fsyncs and renames the temporary file to its final name.
  void commit();
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  void abandon();  // closes and removes the temporary file

  std::filesystem::path final_, temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
void write_file_atomic(const std::filesystem::path& path, std::string_view text);

class AtomicDir {
 public:
  // Creates `<final>.tmp.<random>/` beside `final` (and `final`'s parent folders when missing);
  // refuses to run if `final` exists and `overwrite` is false.
  explicit AtomicDir(std::filesystem::path final_path, bool overwrite = false);
  ~AtomicDir();  // removes the temporary folder unless commit() succeeded
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::filesystem::path& path() const { return temp_; }
  // Renames the temporary folder to `final`. With `overwrite`, an existing `final` is moved aside
  // first and removed only once the new folder is in place (put back if the rename fails).
  void commit();

 private:
  std::filesystem::path final_, temp_;
  bool overwrite_, committed_ = false;
};

// The default bound of read_file(): inputs read whole (config.json, tokenizer.json, eval text) are
// far smaller; anything larger is a wrong path, not a model file.
inline constexpr uint64_t kReadFileMaxBytes = uint64_t{1} << 30;

// The whole content of the regular file `path`. Throws Error naming the path when it cannot be
// opened, is not a regular file (a FIFO, device, socket or folder: refused without blocking) or
// holds more than `max_bytes`.
std::string read_file(const std::filesystem::path& path, uint64_t max_bytes = kReadFileMaxBytes);

}  // namespace whittle
