// Progress: the text of a report (counts, rate, ETA), plain log lines at most every interval and
// one at the end when not on a terminal, one redrawn line ending in a newline on a terminal.
#include "util/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

namespace whittle {
namespace {

struct FakeClock {
  double t = 100.0;
};

std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

int count(const std::string& s, char c) {
  return static_cast<int>(std::count(s.begin(), s.end(), c));
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(65), "1:05");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "?");
}

TEST(Progress, LineHasCountRateAndEta) {
  FakeClock clock;
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  Progress p("ppl prose.txt", 100, "tokens",
             {.out = f, .mode = ProgressOptions::Mode::kLog, .clock = [&] { return clock.t; }});
  clock.t += 2.0;
  p.advance(20);
  EXPECT_EQ(p.line(), "ppl prose.txt: 20/100 tokens | 10.0 tokens/s | ETA 0:08");
  clock.t += 8.0;
  p.advance(80);
  EXPECT_EQ(p.line(), "ppl prose.txt: 100/100 tokens | 10.0 tokens/s | done in 0:10");
  p.finish();  // before the file is closed
  std::fclose(f);
}

TEST(Progress, LogModePrintsAtMostEveryIntervalAndAtTheEnd) {
  FakeClock clock;
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("arith", 10, "items",
               {.out = f, .mode = ProgressOptions::Mode::kLog, .log_interval = 5.0, .clock = [&] {
                  return clock.t;
                }});
    for (int i = 0; i < 10; ++i) {
      clock.t += 1.0;  // 10 steps of 1 s: reports at 5 s and 10 s, then the final one
      p.advance();
    }
  }  // the destructor finishes
  std::string out = contents(f);
  EXPECT_EQ(count(out, '\n'), 3) << out;
  EXPECT_EQ(count(out, '\r'), 0) << out;
  EXPECT_NE(out.find("arith: 10/10 items"), std::string::npos) << out;
  std::fclose(f);
}

TEST(Progress, TerminalModeRedrawsOneLine) {
  FakeClock clock;
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  Progress p(
      "loops", 3, "prompts",
      {.out = f, .mode = ProgressOptions::Mode::kTerminal, .clock = [&] { return clock.t; }});
  for (int i = 0; i < 3; ++i) {
    clock.t += 1.0;
    p.advance();
  }
  p.finish();
  p.finish();  // idempotent
  std::string out = contents(f);
  EXPECT_EQ(count(out, '\n'), 1) << out;
  EXPECT_EQ(count(out, '\r'), 4) << out;  // three redraws and the final line
  EXPECT_EQ(out.back(), '\n');
  std::fclose(f);
}

TEST(Progress, DisabledPrintsNothing) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("x", 2, "items", {.out = f, .enabled = false});
    p.advance(2);
  }
  EXPECT_EQ(contents(f), "");
  std::fclose(f);
}

}  // namespace
}  // namespace whittle
