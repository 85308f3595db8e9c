// Progress reporting; see progress.h.
#include "util/progress.h"

#include <fmt/core.h>
#include <unistd.h>

#include <cmath>

namespace whittle {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

Progress::Progress(std::string label, int64_t total, std::string unit, ProgressOptions options)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      options_(std::move(options)) {
  if (!options_.clock) {
    options_.clock = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
    };
  }
  terminal_ = options_.mode == ProgressOptions::Mode::kTerminal ||
              (options_.mode == ProgressOptions::Mode::kAuto && options_.out &&
               ::isatty(::fileno(options_.out)));
  start_ = last_report_ = now();
}

Progress::~Progress() {
  finish();
}

double Progress::now() const {
  return options_.clock();
}

std::string Progress::line() const {
  const double elapsed = now() - start_;
  const double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  std::string text = total_ > 0 ? fmt::format("{}: {}/{} {}", label_, done_, total_, unit_)
                                : fmt::format("{}: {} {}", label_, done_, unit_);
  if (elapsed > 0 && done_ > 0) text += fmt::format(" | {:.1f} {}/s", rate, unit_);
  if (total_ > 0 && done_ >= total_) {
    text += fmt::format(" | done in {}", format_duration(elapsed));
  } else if (total_ > 0 && rate > 0) {
    text += fmt::format(" | ETA {}", format_duration((total_ - done_) / rate));
  }
  if (!note_.empty()) text += " | " + note_;
  return text;
}

void Progress::advance(int64_t n) {
  done_ += n;
  if (!options_.enabled || finished_ || !options_.out) return;
  const double t = now();
  const double interval = terminal_ ? options_.redraw_interval : options_.log_interval;
  if (t - last_report_ >= interval) report(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (options_.enabled && options_.out) report(true);
}

void Progress::report(bool final) {
  last_report_ = now();
  std::string text = line();
  if (terminal_) {
    // Pad with spaces so a shorter line fully covers the previous one.
    size_t width = text.size();
    if (width < last_width_) text.append(last_width_ - width, ' ');
    last_width_ = width;
    fmt::print(options_.out, "\r{}{}", text, final ? "\n" : "");
  } else {
    fmt::print(options_.out, "{}\n", text);
  }
  std::fflush(options_.out);
}

}  // namespace whittle
