// measure_read_bandwidth: how fast this machine streams memory it has not cached, read by the
// pool's threads as the decode kernels read weights (each thread a contiguous share, vector loads).
// The ceiling `whittle bench` compares decode to.
#pragma once

#include <cstddef>

namespace whittle {

class ThreadPool;

struct Bandwidth {
  double best_gbs = 0.0;    // the fastest pass, 10^9 bytes per second
  double median_gbs = 0.0;  // the median pass
  size_t bytes = 0;         // read per pass
  int passes = 0;
};

// Reads a buffer of `bytes` (well above the last-level cache) `passes` times after one warm-up pass
// that also faults its pages in (on transparent huge pages where allowed).
Bandwidth measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int passes = 7);

}  // namespace whittle
