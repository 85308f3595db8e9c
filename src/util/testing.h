// Helpers shared by the GoogleTest files (included only from *_test.cc).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <functional>
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

// `s` quoted for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
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
inline CommandOutcome run_command(const std::vector<std::string>& args, const std::string& redirect) {
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
