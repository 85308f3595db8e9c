// Helpers shared by the GoogleTest files (included only from *_test.cc).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <future>
#include <string>
#include <vector>

#include "util/error.h"

namespace whittle {

// Runs `fn`, which must throw exactly a whittle::Error whose message holds every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    for (const auto& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-whittle exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "did not throw";
}

// Runs `fn`, which reads the FIFO `fifo` by name and must refuse it at once, on another thread and
// returns the message of the Error it threw ("" when it returned). A reader that blocks in open()
// instead is released after `patience` by opening the FIFO for writing, and the test fails rather
// than hanging forever.
inline std::string error_reading_fifo(const std::filesystem::path& fifo, std::function<void()> fn,
                                      std::chrono::seconds patience = std::chrono::seconds(10)) {
  auto result = std::async(std::launch::async, [fn]() -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("(not a whittle::Error) ") + e.what();
    }
    return "";
  });
  if (result.wait_for(patience) != std::future_status::ready) {
    ADD_FAILURE() << fifo.string() << ": still blocked after " << patience.count()
                  << " s; a FIFO must be refused without waiting for a writer";
    while (result.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
      int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd >= 0) ::close(fd);
    }
  }
  return result.get();
}

// An empty folder named after the running test, removed with everything in it at the end.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            fmt::format("whittle-{}-{}-{}", info->test_suite_name(), info->name(), ::getpid());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// `s` quoted for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  q += '\'';
  return q;
}

// Runs `args` (quoted) through the shell with `redirect` appended (e.g. "2>&1"); returns the exit
// status (128 + signal when killed) and what it wrote to stdout.
struct CommandOutcome {
  int status = -1;
  std::string output;
};
inline CommandOutcome run_command(const std::vector<std::string>& args,
                                  const std::string& redirect) {
  std::string cmd;
  for (const auto& a : args) {
    if (!cmd.empty()) cmd += ' ';
    cmd += shell_quote(a);
  }
  cmd += ' ';
  cmd += redirect;
  CommandOutcome r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

}  // namespace whittle
