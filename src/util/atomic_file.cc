// AtomicFile, AtomicDir and read_file; see atomic_file.h.
#include "util/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "util/error.h"
#include "util/mapped_file.h"

namespace whittle {
namespace fs = std::filesystem;

namespace {
// A name nobody can guess ahead of time, so nothing can be planted there: 48 random bits.
std::string random_suffix() {
  std::random_device rd;
  uint64_t v = (uint64_t{rd()} << 32) | rd();
  return fmt::format("{:012x}", v & 0xffff'ffff'ffffu);
}

fs::path folder_of(const fs::path& p) {
  fs::path dir = p.parent_path();
  return dir.empty() ? fs::path(".") : dir;
}

// `<dir>/<name>.tmp.<random>`, created by `make` (which returns false with errno set on failure).
// An existing entry of that name (EEXIST) is never reused: another random name is tried. Returns
// an empty path and the errno in `*err` when it gives up.
template <typename Make>
fs::path create_unique(const fs::path& dir, const std::string& name, int* err, Make make) {
  for (int attempt = 0;; ++attempt) {
    fs::path p = dir / (name + ".tmp." + random_suffix());
    if (make(p)) return p;
    *err = errno;
    if (*err != EEXIST || attempt == 100) return {};
  }
}
}  // namespace

AtomicFile::AtomicFile(fs::path final_path) : final_(std::move(final_path)) {
  if (!final_.has_filename()) fail("{}: not a file name", final_.string());
  const fs::path dir = folder_of(final_);
  int fd = -1, err = 0;
  // O_EXCL: never opens something that is already there (a planted symlink included); mode 0666
  // lets the umask decide, as for any file the user creates (mkstemp would force 0600).
  temp_ = create_unique(dir, final_.filename().string(), &err, [&](const fs::path& p) {
    fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    return fd >= 0;
  });
  if (temp_.empty())
    fail("{}: cannot create a temporary file in {}: {}", final_.string(), dir.string(),
         std::strerror(err));
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    err = errno;
    ::close(fd);
    ::unlink(temp_.c_str());
    fail("{}: cannot open a temporary file in {}: {}", final_.string(), dir.string(),
         std::strerror(err));
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) abandon();
}

void AtomicFile::abandon() {
  if (file_) std::fclose(file_);
  file_ = nullptr;
  ::unlink(temp_.c_str());  // unlink, not remove: never deletes a folder put in its place
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (!file_) fail("{}: write after commit or after a failed write", final_.string());
  if (bytes.empty()) return;
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) {
    int err = errno;
    abandon();
    fail("{}: write failed: {}", final_.string(), std::strerror(err));
  }
}

void AtomicFile::write(std::string_view text) {
  write(std::as_bytes(std::span(text.data(), text.size())));
}

void AtomicFile::commit() {
  if (!file_) fail("{}: commit after commit or after a failed write", final_.string());
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) {
    int err = errno;
    abandon();
    fail("{}: flush failed: {}", final_.string(), std::strerror(err));
  }
  int closed = std::fclose(file_);
  file_ = nullptr;
  if (closed != 0) {
    int err = errno;
    abandon();
    fail("{}: close failed: {}", final_.string(), std::strerror(err));
  }
  if (::rename(temp_.c_str(), final_.c_str()) != 0) {
    int err = errno;
    abandon();
    fail("{}: cannot rename the finished temporary file into place: {}", final_.string(),
         std::strerror(err));
  }
  committed_ = true;
}

void write_file_atomic(const fs::path& path, std::span<const std::byte> bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

void write_file_atomic(const fs::path& path, std::string_view text) {
  write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

AtomicDir::AtomicDir(fs::path final_path, bool overwrite)
    : final_(std::move(final_path)), overwrite_(overwrite) {
  if (!final_.has_filename()) final_ = final_.parent_path();  // "out/" names the folder "out"
  if (final_.empty() || !final_.has_filename()) fail("{}: not a folder name", final_.string());
  std::error_code ec;
  if (fs::exists(fs::symlink_status(final_, ec)) && !overwrite_)
    fail("{}: already exists (refusing to overwrite)", final_.string());
  const fs::path parent = folder_of(final_);
  fs::create_directories(parent, ec);
  if (ec) fail("{}: cannot create folder {}: {}", final_.string(), parent.string(), ec.message());
  // mkdir fails on anything already there, so nothing planted is followed or deleted; 0777 lets
  // the umask decide (mkdtemp would force 0700).
  int err = 0;
  temp_ = create_unique(parent, final_.filename().string(), &err,
                        [](const fs::path& p) { return ::mkdir(p.c_str(), 0777) == 0; });
  if (temp_.empty())
    fail("{}: cannot create a temporary folder in {}: {}", final_.string(), parent.string(),
         std::strerror(err));
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

void AtomicDir::commit() {
  if (committed_) fail("{}: commit() called twice", final_.string());
  std::error_code ec;
  fs::path aside;
  int err = 0;
  if (fs::exists(fs::symlink_status(final_, ec))) {
    if (!overwrite_) fail("{}: already exists (refusing to overwrite)", final_.string());
    // Moved aside rather than deleted first, so a failed rename below can put it back.
    aside = create_unique(folder_of(final_), final_.filename().string() + ".old", &err,
                          [&](const fs::path& p) {
                            if (fs::exists(fs::symlink_status(p, ec))) {
                              errno = EEXIST;
                              return false;
                            }
                            return ::rename(final_.c_str(), p.c_str()) == 0;
                          });
    if (aside.empty())
      fail("{}: cannot move the existing folder aside to replace it: {}", final_.string(),
           std::strerror(err));
  }
  if (::rename(temp_.c_str(), final_.c_str()) != 0) {
    err = errno;
    std::string kept;
    if (!aside.empty() && ::rename(aside.c_str(), final_.c_str()) != 0)
      kept = fmt::format(" (the previous folder is now {})", aside.string());
    fs::remove_all(temp_, ec);
    fail("{}: cannot rename the finished temporary folder into place: {}{}", final_.string(),
         std::strerror(err), kept);
  }
  committed_ = true;
  if (!aside.empty()) fs::remove_all(aside, ec);
}

std::string read_file(const fs::path& path, uint64_t max_bytes) {
  uint64_t size = 0;
  int fd = open_regular_file(path, &size);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  auto too_big = [&](uint64_t n) {
    fail("{}: {} bytes exceeds the {} byte limit for a file read whole; expected a small file",
         path.string(), n, max_bytes);
  };
  if (size > max_bytes) too_big(size);
  std::string out;
  out.reserve(static_cast<size_t>(size));
  // Read to the end rather than trusting st_size: the file may be growing, or be a /proc file.
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: read failed: {}", path.string(), std::strerror(errno));
    }
    if (n == 0) break;
    if (out.size() + static_cast<uint64_t>(n) > max_bytes) too_big(out.size() + n);
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace whittle
