// Progress: reports how far a long loop has got, on stderr by default. On a terminal it redraws one
// line in place (done/total, rate, ETA); otherwise (a log file, a pipe, CI) it prints a plain line
// at most every `log_interval` seconds and one at the end, so logs stay readable and small.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

namespace whittle {

struct ProgressOptions {
  std::FILE* out = stderr;
  bool enabled = true;
  // Terminal mode (redraw with '\r'); default: whether `out` is a terminal.
  enum class Mode { kAuto, kTerminal, kLog } mode = Mode::kAuto;
  double log_interval = 10.0;    // seconds between plain log lines
  double redraw_interval = 0.1;  // seconds between terminal redraws
  // Seconds since an arbitrary origin; tests inject a fake clock.
  std::function<double()> clock = {};
};

class Progress {
 public:
  // `unit` names what is counted ("tokens", "items"); total <= 0 means unknown (no ETA).
  Progress(std::string label, int64_t total, std::string unit, ProgressOptions options = {});
  ~Progress();  // finish() if not yet done
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  // Text shown after the counts from the next report on ("loss 1.2e-3"); empty: none.
  void set_note(std::string note) { note_ = std::move(note); }
  // Prints the final line (terminal: ends the redrawn line with '\n'). Idempotent.
  void finish();

  int64_t done() const { return done_; }
  // "12/20 items | 3.4 items/s | ETA 0:03" — the text of one report, for tests and log lines.
  std::string line() const;

 private:
  double now() const;
  void report(bool final);

  std::string label_, unit_, note_;
  int64_t total_, done_ = 0;
  ProgressOptions options_;
  bool terminal_ = false, finished_ = false;
  double start_ = 0.0, last_report_ = 0.0;
  size_t last_width_ = 0;
};

// "1:05", "1:02:03" for a number of seconds (negative or non-finite: "?").
std::string format_duration(double seconds);

}  // namespace whittle
