// ThreadPool: a fixed set of workers and a blocking parallel_for. Kernels split work by rows or
// heads; the caller's thread takes a share too, so a pool of N threads uses N cores. Idle workers
// spin ~200 us before they sleep (decode makes hundreds of short calls per token).
// checked_thread_count: the validation of a user's `--threads` value before it reaches the pool.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace whittle {

// The pool size for a user's `--threads N`: 0 means one per core (`cores`, taken as 1 when the
// system does not say); 1 .. 4 x cores are taken as given. Anything else throws Error
// "--threads must be between 0 and <4 x cores> (0: one per core), got N": more threads than 4 per
// core only oversubscribes the CPU, and a count like 1000000 would fail to start anyway.
size_t checked_thread_count(int64_t requested,
                            unsigned cores = std::thread::hardware_concurrency());

// A non-owning reference to a callable fn(begin, end): what parallel_for runs. A std::function
// would allocate for every lambda with more than two captures, on every call (hundreds per decoded
// token); this is two pointers. The callable must outlive the call (a temporary lambda does).
class RangeFn {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RangeFn>>>
  RangeFn(F&& f)  // NOLINT(google-explicit-constructor): lambdas convert as std::function's did
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, size_t begin, size_t end) {
          (*static_cast<std::remove_reference_t<F>*>(o))(begin, end);
        }) {}
  void operator()(size_t begin, size_t end) const { call_(object_, begin, end); }

 private:
  void* object_;
  void (*call_)(void*, size_t, size_t);
};

class ThreadPool {
 public:
  // threads == 0 means one per hardware core. When the system refuses a thread part-way, the ones
  // already started are stopped and joined and Error says how many could not be started.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }
  // Which of size() threads runs the calling code: 1 .. size() - 1 on a pool worker, 0 on any
  // other thread. Inside a parallel_for job, an index into per-thread scratch that the caller
  // sized before the call (a worker's own thread_local would be allocated the first time the pool
  // hands it a chunk, which may be in the middle of a decode).
  static size_t slot() { return slot_; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n); returns when all are done.
  // Chunks are at least `grain` long. Exceptions from fn are rethrown here (the first one).
  // The pool runs one call at a time: a call made while another is running (from another thread,
  // or nested inside fn) runs fn(0, n) on its own calling thread instead of waiting for the pool.
  void parallel_for(size_t n, RangeFn fn, size_t grain = 1);

  // Test hook: when set, called before worker `index` (0-based) is started; a throw there stands
  // for the system refusing a thread (which cannot be provoked reliably as root). Tests only.
  static inline void (*before_worker_start_for_testing)(size_t index) = nullptr;

 private:
  void worker_loop();
  void stop_workers();
  void run_chunks();          // claims and runs chunks of the current job until none are left
  void await_workers_left();  // until no worker is inside a job

  static inline thread_local size_t slot_ = 0;
  std::vector<std::thread> workers_;
  std::atomic<bool> busy_{false};  // a parallel_for owns the job fields below
  // The job: written by parallel_for while generation_ is odd and no worker is active, read by
  // workers that saw it even and are counted in active_.
  const RangeFn* job_ = nullptr;
  size_t job_n_ = 0, job_chunk_ = 0, chunks_ = 0;
  std::atomic<size_t> next_chunk_{0}, done_chunks_{0};
  std::atomic<size_t> generation_{0};
  std::atomic<size_t> active_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;
};

}  // namespace whittle
