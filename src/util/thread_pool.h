// ThreadPool: a fixed set of workers and a blocking parallel_for. Kernels split work by rows or
// heads; the caller's thread takes a share too, so a pool of N threads uses N cores.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace whittle {

class ThreadPool {
 public:
  // threads == 0 means one per hardware core.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n); returns when all are done.
  // Chunks are at least `grain` long. Exceptions from fn are rethrown here (the first one).
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain = 1);

 private:
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0, job_chunk_ = 0, next_chunk_ = 0, chunks_ = 0, done_chunks_ = 0;
  size_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace whittle
