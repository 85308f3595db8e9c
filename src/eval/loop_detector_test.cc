// The loop rule on crafted token sequences: loops of period 1, short and long periods, loops cut
// mid-copy by max tokens, and near-misses (tail one token short, one copy too few, one differing
// token, a repeat that ends before the output does).
#include "eval/loop_detector.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace whittle {
namespace {

// `prefix` distinct tokens (1000, 1001, ...), then `copies` copies of the unit 0..p-1, then `extra`
// tokens of a partial copy.
std::vector<int32_t> make(int64_t prefix, int64_t p, int64_t copies, int64_t extra = 0) {
  std::vector<int32_t> x;
  for (int64_t i = 0; i < prefix; ++i) x.push_back(static_cast<int32_t>(1000 + i));
  for (int64_t c = 0; c < copies; ++c)
    for (int64_t i = 0; i < p; ++i) x.push_back(static_cast<int32_t>(i));
  for (int64_t i = 0; i < extra; ++i) x.push_back(static_cast<int32_t>(i));
  return x;
}

TEST(LoopDetector, OneTokenRepeated) {
  auto m = detect_loop(make(10, 1, 64));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->period, 1);
  EXPECT_EQ(m->tail, 64);
  EXPECT_FALSE(detect_loop(make(10, 1, 63)).has_value());  // tail one token short of 64
}

TEST(LoopDetector, ShortSpanRepeatedOverTheTail) {
  auto m = detect_loop(make(30, 5, 13));  // 65 tokens of period 5
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->period, 5);
  EXPECT_EQ(m->tail, 65);
  EXPECT_FALSE(detect_loop(make(30, 5, 12, 3)).has_value());  // 63 periodic tokens: near miss
  EXPECT_TRUE(detect_loop(make(30, 5, 12, 4)).has_value());   // 64, ending mid-copy: a loop
}

TEST(LoopDetector, LongSpanNeedsThreeCopies) {
  // Period 40: T = max(64, 120) = 120.
  EXPECT_FALSE(detect_loop(make(20, 40, 2)).has_value());      // 80 tokens, two copies
  EXPECT_FALSE(detect_loop(make(20, 40, 2, 39)).has_value());  // one token short of three copies
  auto m = detect_loop(make(20, 40, 3));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->period, 40);
  EXPECT_EQ(m->tail, 120);
}

TEST(LoopDetector, SmallestPeriodIsReported) {
  // A unit that is itself two copies of a smaller one: "a b a b" repeated is period 2.
  std::vector<int32_t> x;
  for (int i = 0; i < 40; ++i) x.insert(x.end(), {7, 8});
  auto m = detect_loop(x);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->period, 2);
  EXPECT_EQ(m->tail, 80);
}

TEST(LoopDetector, OneDifferentTokenBreaksIt) {
  std::vector<int32_t> x = make(0, 4, 30);  // 120 tokens
  ASSERT_TRUE(detect_loop(x).has_value());
  x[x.size() - 50] = 999;  // only the last 49 tokens still repeat
  EXPECT_FALSE(detect_loop(x).has_value());
  x = make(0, 4, 30);
  x[x.size() - 70] = 999;  // the last 69 tokens repeat: still a loop
  auto m = detect_loop(x);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->tail, 69);
}

TEST(LoopDetector, RepetitionThatEndsBeforeTheOutputIsNotALoop) {
  std::vector<int32_t> x = make(0, 3, 40);            // 120 tokens of period 3
  for (int i = 0; i < 20; ++i) x.push_back(500 + i);  // then the text moves on
  EXPECT_FALSE(detect_loop(x).has_value());
}

TEST(LoopDetector, OrdinaryTextIsNotALoop) {
  std::vector<int32_t> x(256);
  std::iota(x.begin(), x.end(), 0);
  EXPECT_FALSE(detect_loop(x).has_value());
  EXPECT_FALSE(detect_loop(std::vector<int32_t>{}).has_value());
  EXPECT_FALSE(detect_loop(std::vector<int32_t>(63, 5)).has_value());  // shorter than min_tail
}

TEST(LoopDetector, RuleConstantsAreHonoured) {
  LoopRule rule{.min_tail = 16, .min_repeats = 4};
  EXPECT_TRUE(detect_loop(make(5, 4, 4), rule).has_value());      // 16 tokens, 4 copies
  EXPECT_FALSE(detect_loop(make(5, 5, 3, 4), rule).has_value());  // 19 tokens but 3.8 copies
  EXPECT_TRUE(detect_loop(make(5, 5, 4), rule).has_value());
}

}  // namespace
}  // namespace whittle
