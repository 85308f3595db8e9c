// The repetition-loop rule; see loop_detector.h.
#include "eval/loop_detector.h"

#include <algorithm>

namespace whittle {

std::optional<LoopMatch> detect_loop(std::span<const int32_t> x, const LoopRule& rule) {
  const int64_t n = static_cast<int64_t>(x.size());
  // One "copy" is no repetition at all: every sequence would be a loop of period n.
  const int64_t repeats = std::max<int64_t>(rule.min_repeats, 2);
  for (int64_t p = 1;; ++p) {
    const int64_t need = std::max(rule.min_tail, repeats * p);  // the rule's T, non-decreasing in p
    if (need > n) break;
    // Length of the longest suffix with period p: walk back while x[i] == x[i - p].
    int64_t i = n - 1;
    while (i - p >= 0 && x[i] == x[i - p]) --i;
    const int64_t tail =
        (n - 1) - i + p;  // positions i+1..n-1 match their predecessor, plus the first copy
    if (tail >= need) return LoopMatch{.period = p, .tail = std::min(tail, n)};
  }
  return std::nullopt;
}

}  // namespace whittle
