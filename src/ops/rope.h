// Rotary position embedding. The frequency table follows transformers' rope initialisers
// ("default" and "yarn"); the rotation comes in the two pairings found in the wild:
// interleaved (GPT-J/DeepSeek reference: pairs (2i, 2i+1)) and half-split (NeoX: pairs (i, i+d/2)).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace whittle {

struct RopeConfig;

class RopeTable {
 public:
  // `dim` rotary dimensions (even). `rope` gives theta and the scaling type.
  RopeTable(const RopeConfig& rope, int64_t dim);

  int64_t dim() const { return dim_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  float attention_scaling() const { return attention_scaling_; }

  // Rotates x[0..dim) in place for absolute position `pos`.
  void rotate_interleaved(float* x, int64_t pos) const;
  void rotate_half_split(float* x, int64_t pos) const;
  void rotate(float* x, int64_t pos, bool interleaved) const {
    interleaved ? rotate_interleaved(x, pos) : rotate_half_split(x, pos);
  }

 private:
  int64_t dim_;
  std::vector<float> inv_freq_;
  float attention_scaling_ = 1.0f;  // YaRN scales cos/sin by this
};

}  // namespace whittle
