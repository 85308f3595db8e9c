// ThreadPool and checked_thread_count; see thread_pool.h.
#include "util/thread_pool.h"

#include <algorithm>

#include "util/error.h"

namespace whittle {

size_t checked_thread_count(int64_t requested, unsigned cores) {
  const int64_t one_per_core = std::max(1u, cores);
  const int64_t most = 4 * one_per_core;
  if (requested < 0 || requested > most)
    fail("--threads must be between 0 and {} (0: one per core), got {}", most, requested);
  return static_cast<size_t>(requested == 0 ? one_per_core : requested);
}

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const size_t wanted = threads - 1;
  try {
    workers_.reserve(wanted);
    for (size_t i = 0; i < wanted; ++i) {
      if (before_worker_start_for_testing) before_worker_start_for_testing(i);
      workers_.emplace_back([this] { worker_loop(); });
    }
  } catch (const std::exception& e) {
    // Leaving with joinable threads would call std::terminate; stop and join the ones running.
    const size_t started = workers_.size();
    stop_workers();
    fail("cannot start a pool of {} threads: {} of its {} worker threads could not be started ({})",
         threads, wanted - started, wanted, e.what());
  }
}

ThreadPool::~ThreadPool() {
  stop_workers();
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn,
                              size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  // Rounded-up divisions written so that they cannot overflow for any n.
  const size_t max_chunks = n / grain + (n % grain != 0);
  const size_t chunks = std::min(max_chunks, size() * 4);
  bool idle = false;
  if (chunks <= 1 || workers_.empty() || !busy_.compare_exchange_strong(idle, true)) {
    // One chunk, no workers, or the pool is running another call (which would otherwise have its
    // job overwritten): do it all here.
    fn(0, n);
    return;
  }
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy.store(false); }
  } release{busy_};

  std::unique_lock lock(mu_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = std::max(grain, n / chunks + (n % chunks != 0));
  chunks_ = n / job_chunk_ + (n % job_chunk_ != 0);
  next_chunk_ = 0;
  done_chunks_ = 0;
  error_ = nullptr;
  ++generation_;
  cv_work_.notify_all();
  // The calling thread works too.
  while (next_chunk_ < chunks_) {
    size_t c = next_chunk_++;
    lock.unlock();
    try {
      size_t begin = c * job_chunk_;
      fn(begin, begin + std::min(job_chunk_, n - begin));
    } catch (...) {
      std::lock_guard g(mu_);
      if (!error_) error_ = std::current_exception();
    }
    lock.lock();
    ++done_chunks_;
  }
  cv_done_.wait(lock, [&] { return done_chunks_ == chunks_; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop() {
  size_t seen = 0;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_work_.wait(lock,
                  [&] { return stop_ || (generation_ != seen && job_ && next_chunk_ < chunks_); });
    if (stop_) return;
    seen = generation_;
    while (job_ && next_chunk_ < chunks_) {
      size_t c = next_chunk_++;
      const auto* fn = job_;
      size_t n = job_n_, chunk = job_chunk_;
      lock.unlock();
      try {
        size_t begin = c * chunk;
        (*fn)(begin, begin + std::min(chunk, n - begin));
      } catch (...) {
        std::lock_guard g(mu_);
        if (!error_) error_ = std::current_exception();
      }
      lock.lock();
      if (++done_chunks_ == chunks_) cv_done_.notify_all();
    }
  }
}

}  // namespace whittle
