// Tests of ThreadPool::parallel_for: every index of [0, n) is visited exactly once for many sizes,
// grains and pool sizes; chunks respect the grain; an exception thrown by any chunk reaches the
// caller and the pool stays usable; concurrent and nested calls complete. Tests of the pool's
// start (a thread refused part-way gives an Error, not a crash) and of checked_thread_count.
#include "util/thread_pool.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "util/error.h"
#include "util/testing.h"

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

TEST(ThreadPool, CheckedThreadCountAllowsZeroToFourPerCore) {
  EXPECT_EQ(checked_thread_count(0, 8), 8u);  // 0: one per core
  EXPECT_EQ(checked_thread_count(1, 8), 1u);
  EXPECT_EQ(checked_thread_count(32, 8), 32u);
  EXPECT_EQ(checked_thread_count(0, 0), 1u);  // core count unknown: taken as 1
  EXPECT_EQ(checked_thread_count(4, 0), 4u);
  EXPECT_GE(checked_thread_count(0), 1u);
  EXPECT_EQ(checked_thread_count(1), 1u);
  expect_error([] { checked_thread_count(33, 8); },
               {"--threads must be between 0 and 32 (0: one per core), got 33"});
  expect_error([] { checked_thread_count(-1, 8); },
               {"--threads must be between 0 and 32 (0: one per core), got -1"});
  expect_error([] { checked_thread_count(1000000, 8); }, {"got 1000000"});
  expect_error([] { checked_thread_count(std::numeric_limits<int64_t>::min(), 8); },
               {"got -9223372036854775808"});
  expect_error([] { checked_thread_count(5, 0); }, {"between 0 and 4"});
}

// The start and the concurrency tests run in a child process: with a broken pool they crash
// (std::terminate) or hang (an alarm ends them), and the test fails instead of the whole run.
[[noreturn]] void start_with_a_refused_thread() {
  ::alarm(30);
  ThreadPool::before_worker_start_for_testing = [](size_t index) {
    if (index == 3)
      throw std::system_error(EAGAIN, std::generic_category(), "thread creation refused");
  };
  std::string what;
  try {
    ThreadPool pool(8);
  } catch (const Error& e) {
    what = e.what();
  }
  ThreadPool::before_worker_start_for_testing = nullptr;
  ThreadPool after(3);  // the process is still sound
  std::atomic<size_t> total{0};
  after.parallel_for(100, [&](size_t begin, size_t end) { total += end - begin; });
  std::fprintf(stderr, "%s\n", what.c_str());
  std::_Exit(!what.empty() && total == 100 ? 0 : 1);
}

TEST(ThreadPoolDeathTest, AThreadRefusedPartWayGivesAnErrorNotACrash) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(start_with_a_refused_thread(), ::testing::ExitedWithCode(0),
              "cannot start a pool of 8 threads: 4 of its 7 worker threads could not be started "
              "\\(thread creation refused");
}

[[noreturn]] void call_concurrently_and_nested() {
  ::alarm(30);
  ThreadPool pool(4);
  std::atomic<bool> ok{true};
  auto caller = [&] {
    for (int round = 0; round < 300; ++round) {
      std::atomic<size_t> sum{0};
      pool.parallel_for(1000, [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) sum += i;
      });
      if (sum != 999u * 1000u / 2) ok = false;
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  // A chunk that itself calls parallel_for on the same pool.
  std::atomic<size_t> inner{0};
  pool.parallel_for(8, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      pool.parallel_for(100, [&](size_t b2, size_t e2) { inner += e2 - b2; });
  });
  if (inner != 800) ok = false;
  std::_Exit(ok ? 0 : 1);
}

TEST(ThreadPoolDeathTest, ConcurrentAndNestedCallsComplete) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(call_concurrently_and_nested(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace whittle
