// ThreadPool and checked_thread_count; see thread_pool.h.
#include "util/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include "util/error.h"

namespace whittle {

namespace {

// Spins on `ready` for up to ~200 us (pause between polls), returning early when it holds.
template <typename Ready>
void spin_until(Ready ready) {
  constexpr auto kSpin = std::chrono::microseconds(200);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1;; ++i) {
    if (ready()) return;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
    if (i % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) return;
  }
}

}  // namespace

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
      workers_.emplace_back([this, i] {
        slot_ = i + 1;
        worker_loop();
      });
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
  // Odd while writing; workers that see the stop flag leave without touching the job.
  generation_.fetch_add(1);
  await_workers_left();
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::await_workers_left() {
  spin_until([&] { return active_.load() == 0; });
  while (active_.load() != 0) std::this_thread::yield();
}

void ThreadPool::run_chunks() {
  for (;;) {
    const size_t c = next_chunk_.fetch_add(1);
    if (c >= chunks_) return;
    try {
      const size_t begin = c * job_chunk_;
      (*job_)(begin, begin + std::min(job_chunk_, job_n_ - begin));
    } catch (...) {
      std::lock_guard g(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
    if (done_chunks_.fetch_add(1) + 1 == chunks_) done_chunks_.notify_all();
  }
}

void ThreadPool::parallel_for(size_t n, RangeFn fn, size_t grain) {
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

  // Publish the job like a seqlock: the generation is odd while the fields are written, and they
  // are written only once no worker is inside the previous job (a late worker that saw the old
  // generation checks it again after announcing itself in active_, and backs off).
  generation_.fetch_add(1);
  await_workers_left();
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = std::max(grain, n / chunks + (n % chunks != 0));
  chunks_ = n / job_chunk_ + (n % job_chunk_ != 0);
  next_chunk_.store(0);
  done_chunks_.store(0);
  error_ = nullptr;
  generation_.fetch_add(1);
  generation_.notify_all();
  run_chunks();  // the calling thread works too
  // Workers finishing their last chunks: spin briefly, then sleep until the last one is done.
  spin_until([&] { return done_chunks_.load() == chunks_; });
  for (size_t done = done_chunks_.load(); done != chunks_; done = done_chunks_.load())
    done_chunks_.wait(done);
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop() {
  size_t seen = generation_.load();
  for (;;) {
    // Decode calls the pool hundreds of times per token, each for ~0.1-1 ms: a worker that went to
    // sleep after every call would add the scheduler's wake-up latency to each of them. So a worker
    // spins on the generation for a while (no lock anywhere on this path), then sleeps on it.
    size_t g = seen;
    // A worker started after the pool was told to stop has seen the last generation already.
    auto ready = [&] {
      g = generation_.load();
      return stop_.load() || (g != seen && g % 2 == 0);
    };
    spin_until(ready);
    while (!ready()) generation_.wait(g);
    if (stop_.load()) return;
    active_.fetch_add(1);
    if (generation_.load() == g) run_chunks();  // else a newer job is being written: look again
    active_.fetch_sub(1);
    seen = g;
  }
}

}  // namespace whittle
