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

void SampleStore::put(int64_t sample, const float* x) {
  const size_t n = static_cast<size_t>(rows_ * hidden_);
  if (fd_ < 0) {
    std::memcpy(&memory_[static_cast<size_t>(sample) * n], x, n * sizeof(float));
    return;
  }
  const char* p = reinterpret_cast<const char*>(x);
  size_t left = n * sizeof(float);
  off_t at = static_cast<off_t>(sample) * static_cast<off_t>(n * sizeof(float));
  while (left > 0) {
    const ssize_t w = ::pwrite(fd_, p, left, at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      fail("{}: cannot write calibration activations (disk full?): {}", dir_.string(),
           std::strerror(errno));
    p += w;
    at += w;
    left -= static_cast<size_t>(w);
  }
}

void SampleStore::get(int64_t sample, float* x) const {
  const size_t n = static_cast<size_t>(rows_ * hidden_);
  if (fd_ < 0) {
    std::memcpy(x, &memory_[static_cast<size_t>(sample) * n], n * sizeof(float));
    return;
  }
  char* p = reinterpret_cast<char*>(x);
  size_t left = n * sizeof(float);
  off_t at = static_cast<off_t>(sample) * static_cast<off_t>(n * sizeof(float));
  while (left > 0) {
    const ssize_t r = ::pread(fd_, p, left, at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      fail("{}: cannot read calibration activations back: {}", dir_.string(),
           r == 0 ? "short file" : std::strerror(errno));
    p += r;
    at += r;
    left -= static_cast<size_t>(r);
  }
}

}  // namespace whittle
