#include "util/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace whittle {
namespace fs = std::filesystem;

static fs::path temp_name(const fs::path& final_path) {
  return fs::path(final_path.string() + ".tmp." + std::to_string(::getpid()));
}

AtomicFile::AtomicFile(fs::path final_path) : final_(std::move(final_path)), temp_(temp_name(final_)) {
  file_ = std::fopen(temp_.c_str(), "wb");
  if (!file_) fail("{}: cannot create: {}", temp_.string(), std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size())
    fail("{}: write failed: {}", temp_.string(), std::strerror(errno));
}

void AtomicFile::write(std::string_view text) {
  write(std::as_bytes(std::span(text.data(), text.size())));
}

void AtomicFile::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    fail("{}: flush failed: {}", temp_.string(), std::strerror(errno));
  if (std::fclose(file_) != 0) {
    file_ = nullptr;
    fail("{}: close failed: {}", temp_.string(), std::strerror(errno));
  }
  file_ = nullptr;
  std::error_code ec;
  fs::rename(temp_, final_, ec);
  if (ec) fail("{}: cannot rename to {}: {}", temp_.string(), final_.string(), ec.message());
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
    : final_(std::move(final_path)), temp_(temp_name(final_)), overwrite_(overwrite) {
  if (fs::exists(final_) && !overwrite_)
    fail("{}: already exists (refusing to overwrite)", final_.string());
  std::error_code ec;
  fs::remove_all(temp_, ec);
  fs::create_directories(temp_, ec);
  if (ec) fail("{}: cannot create folder: {}", temp_.string(), ec.message());
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

void AtomicDir::commit() {
  std::error_code ec;
  if (fs::exists(final_)) {
    if (!overwrite_) fail("{}: already exists (refusing to overwrite)", final_.string());
    fs::remove_all(final_, ec);
    if (ec) fail("{}: cannot replace: {}", final_.string(), ec.message());
  }
  fs::rename(temp_, final_, ec);
  if (ec) fail("{}: cannot rename to {}: {}", temp_.string(), final_.string(), ec.message());
  committed_ = true;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("{}: read failed", path.string());
  return ss.str();
}

}  // namespace whittle
