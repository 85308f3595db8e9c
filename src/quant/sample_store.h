// SampleStore: the calibration samples' hidden states between decoder layers, one [rows, hidden]
// float32 block per sample, kept in memory or, past a budget, in an unlinked scratch file (GLM-5:
// 128 samples x 2048 tokens x 6144 = 6.4 GB per chain, and AutoRound keeps two chains). On disk,
// a layer pass reads and writes one batch of samples at a time and a tuning step reads its
// mini-batch; the page cache keeps what fits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace whittle {

class SampleStore {
 public:
  // Memory when samples·rows·hidden floats fit `budget_bytes`, else a scratch file in `dir`.
  SampleStore(int64_t samples, int64_t rows, int64_t hidden, uint64_t budget_bytes,
              const std::filesystem::path& dir);
  ~SampleStore();
  SampleStore(const SampleStore&) = delete;
  SampleStore& operator=(const SampleStore&) = delete;

  int64_t samples() const { return samples_; }
  int64_t rows() const { return rows_; }
  bool on_disk() const { return fd_ >= 0; }
  void put(int64_t sample, const float* x);
  void get(int64_t sample, float* x) const;

 private:
  int64_t samples_, rows_, hidden_;
  std::vector<float> memory_;
  int fd_ = -1;
  std::filesystem::path dir_;
};

}  // namespace whittle
