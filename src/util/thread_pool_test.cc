// Tests of ThreadPool::parallel_for: every index of [0, n) is visited exactly once for many sizes,
// grains and pool sizes; chunks respect the grain (disabled: a known bug); an exception thrown by
// any chunk reaches the caller and the pool stays usable.
#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace whittle {
namespace {

// Runs parallel_for over [0, n) and returns how often each index was visited and how many chunks
// other than the last were shorter than `grain`.
struct Coverage {
  std::vector<int> hits;
  size_t short_chunks = 0;
};
Coverage run_cover(ThreadPool& pool, size_t n, size_t grain) {
  std::vector<std::atomic<int>> hits(n);
  std::atomic<size_t> short_chunks{0};
  pool.parallel_for(
      n,
      [&](size_t begin, size_t end) {
        EXPECT_LT(begin, end);
        EXPECT_LE(end, n);
        if (end - begin < grain && end != n) ++short_chunks;
        for (size_t i = begin; i < end && i < n; ++i) hits[i].fetch_add(1);
      },
      grain);
  Coverage out;
  for (auto& h : hits) out.hits.push_back(h.load());
  out.short_chunks = short_chunks.load();
  return out;
}

constexpr size_t kThreadCounts[] = {1, 2, 3, 8};
constexpr size_t kSizes[] = {0, 1, 2, 3, 7, 31, 32, 33, 100, 1000, 4097};
constexpr size_t kGrains[] = {0, 1, 2, 5, 64, 5000};

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (size_t threads : kThreadCounts) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (size_t n : kSizes)
      for (size_t grain : kGrains) {
        Coverage c = run_cover(pool, n, grain);
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(c.hits[i], 1) << "threads " << threads << " n " << n << " grain " << grain
                                  << " index " << i;
      }
  }
}

TEST(ThreadPool, ChunksAreAtLeastTheGrain) {
  for (size_t threads : kThreadCounts) {
    ThreadPool pool(threads);
    for (size_t n : kSizes)
      for (size_t grain : kGrains)
        EXPECT_EQ(run_cover(pool, n, grain).short_chunks, 0u)
            << "threads " << threads << " n " << n << " grain " << grain;
  }
}

TEST(ThreadPool, PropagatesExceptionsAndStaysUsable) {
  ThreadPool pool(4);
  for (int round = 0; round < 20; ++round) {
    EXPECT_THROW(pool.parallel_for(
                     1000,
                     [&](size_t begin, size_t end) {
                       if (begin <= 500 && 500 < end) throw std::runtime_error("chunk failed");
                     },
                     10),
                 std::runtime_error);
    std::atomic<size_t> sum{0};
    pool.parallel_for(1000, [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) sum += i;
    });
    ASSERT_EQ(sum.load(), 999u * 1000u / 2);
  }
}

TEST(ThreadPool, EveryChunkFailingStillReturnsOneException) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](size_t, size_t) { throw std::logic_error("all fail"); }),
               std::logic_error);
}

TEST(ThreadPool, ManyShortJobsBackToBack) {
  ThreadPool pool(4);
  std::atomic<size_t> total{0};
  for (int i = 0; i < 2000; ++i)
    pool.parallel_for(17, [&](size_t begin, size_t end) { total += end - begin; });
  EXPECT_EQ(total.load(), 2000u * 17u);
}

}  // namespace
}  // namespace whittle
