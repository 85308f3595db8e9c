// MappedFile: a read-only memory map of a whole file. Weights are read through it without copying.
// open_regular_file: the one way whittle opens an input file by a user-given name, so a FIFO,
// device or socket put where a file is expected is refused at once instead of blocking or never
// ending.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace whittle {

// Opens `path` read-only (close-on-exec) and returns the descriptor; `*size` gets the file's size.
// The open itself never blocks (O_NONBLOCK, cleared again once the file is known to be regular).
// Throws Error naming the path when it cannot be opened or is not a regular file (saying what it
// is instead: a folder, a FIFO, ...). Symlinks are followed: model folders often link to a cache.
int open_regular_file(const std::filesystem::path& path, uint64_t* size);

// What a memory-mapped range will be used for next (madvise).
enum class MemoryAdvice {
  kWillNeed,  // read ahead now: the next layer's weights
  kDontNeed,  // drop the pages from this process (they stay in the page cache); read again later
};

class MappedFile {
 public:
  // Throws Error naming the path when the file cannot be opened or mapped, or is not a regular
  // file.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  bool contains(std::span<const std::byte> range) const {
    return size_ > 0 && range.data() >= data_ && range.data() + range.size() <= data_ + size_;
  }
  // Advice for the pages of `range`, which must lie inside this mapping (contains()): rounded out
  // to whole pages, clipped to the mapping. Advice only: a refusal by the kernel is ignored. The
  // mapping is private and read-only, so dropped pages read back the file's bytes.
  void advise(std::span<const std::byte> range, MemoryAdvice advice) const;

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace whittle
