#include "quant/sample_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace whittle {

SampleStore::SampleStore(int64_t samples, int64_t rows, int64_t hidden, uint64_t budget_bytes,
                         const std::filesystem::path& dir)
    : samples_(samples), rows_(rows), hidden_(hidden), dir_(dir) {
  const uint64_t bytes = static_cast<uint64_t>(samples * rows * hidden) * sizeof(float);
  if (bytes <= budget_bytes) {
    memory_.resize(static_cast<size_t>(samples * rows * hidden));
    return;
  }
  std::string pattern = (dir / ".whittle-activations-XXXXXX").string();
  fd_ = ::mkstemp(pattern.data());
  if (fd_ < 0)
    fail("{}: cannot create a scratch file for the calibration activations: {}", dir.string(),
         std::strerror(errno));
  ::unlink(pattern.c_str());
}

SampleStore::~SampleStore() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {
// pwrite / pread of `bytes` at `at`, retried until done; an Error saying `what` otherwise.
template <typename Io, typename Ptr>
void transfer(Io io, int fd, Ptr p, size_t bytes, off_t at, const std::filesystem::path& dir,
              const char* what) {
  while (bytes > 0) {
    const ssize_t n = io(fd, p, bytes, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      fail("{}: cannot {} calibration activations: {}", dir.string(), what,
           n == 0 ? "short file" : std::strerror(errno));
    p += n;
    at += n;
    bytes -= static_cast<size_t>(n);
  }
}
}  // namespace

void SampleStore::put(int64_t sample, const float* x) {
  const size_t n = static_cast<size_t>(rows_ * hidden_);
  if (fd_ < 0) {
    std::memcpy(&memory_[static_cast<size_t>(sample) * n], x, n * sizeof(float));
    return;
  }
  transfer(::pwrite, fd_, reinterpret_cast<const char*>(x), n * sizeof(float),
           static_cast<off_t>(sample * n * sizeof(float)), dir_, "write (disk full?)");
}

void SampleStore::get(int64_t sample, float* x) const {
  const size_t n = static_cast<size_t>(rows_ * hidden_);
  if (fd_ < 0) {
    std::memcpy(x, &memory_[static_cast<size_t>(sample) * n], n * sizeof(float));
    return;
  }
  transfer(::pread, fd_, reinterpret_cast<char*>(x), n * sizeof(float),
           static_cast<off_t>(sample * n * sizeof(float)), dir_, "read back");
}

}  // namespace whittle
