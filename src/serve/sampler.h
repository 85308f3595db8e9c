// Sampler: turns a logits row into a token id — greedy, or temperature with top-k and top-p
// (nucleus) filtering — reproducibly for a given seed.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace whittle {

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy (arg-max)
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);

 private:
  double uniform();  // [0, 1) from the generator's bits, identical on every platform
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> ids_;  // candidate ids, reused from call to call
};

// Index of the largest value; the lowest index wins ties.
int32_t argmax(std::span<const float> values);

}  // namespace whittle
