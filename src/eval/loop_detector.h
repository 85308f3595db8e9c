// The repetition-loop rule of `whittle eval --task loops`: does a generated token sequence end in a
// loop, i.e. is its tail made of one span repeated back to back?
//
// Rule (docs/EVAL.md): an output of n tokens LOOPS when there is a period p >= 1 such that its last
// T = max(min_tail, min_repeats * p) tokens (T <= n) repeat with period p: x[i] == x[i - p] for
// every i in [n - T + p, n). The tail is then min_repeats or more back-to-back copies of one
// p-token span (the last copy may be cut short by max tokens) and is at least min_tail tokens long.
// Defaults: min_tail 64, min_repeats 3. A repeat that stops before the end of the output, a tail
// shorter than min_tail, fewer than min_repeats copies, or one differing token is not a loop.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace whittle {

struct LoopRule {
  int64_t min_tail = 64;    // tokens the repetition must cover at the end of the output
  int64_t min_repeats = 3;  // back-to-back copies of the span, at least
};

struct LoopMatch {
  int64_t period = 0;  // the smallest period that satisfies the rule
  int64_t tail = 0;    // how many final tokens repeat with that period (maximal, >= the rule's T)
};

// The loop at the end of `tokens` under `rule`, or nullopt. O(n^2 / min_repeats) at worst.
std::optional<LoopMatch> detect_loop(std::span<const int32_t> tokens, const LoopRule& rule = {});

}  // namespace whittle
