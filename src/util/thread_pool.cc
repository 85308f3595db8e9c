#include "util/thread_pool.h"

#include <algorithm>

namespace whittle {

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  size_t max_chunks = (n + grain - 1) / grain;
  size_t chunks = std::min(max_chunks, size() * 4);
  if (chunks <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  std::unique_lock lock(mu_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = std::max(grain, (n + chunks - 1) / chunks);
  chunks_ = (n + job_chunk_ - 1) / job_chunk_;
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
      fn(c * job_chunk_, std::min(n, (c + 1) * job_chunk_));
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
    cv_work_.wait(lock, [&] { return stop_ || (generation_ != seen && job_ && next_chunk_ < chunks_); });
    if (stop_) return;
    seen = generation_;
    while (job_ && next_chunk_ < chunks_) {
      size_t c = next_chunk_++;
      const auto* fn = job_;
      size_t n = job_n_, chunk = job_chunk_;
      lock.unlock();
      try {
        (*fn)(c * chunk, std::min(n, (c + 1) * chunk));
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
