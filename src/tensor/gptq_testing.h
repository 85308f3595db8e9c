// Test helper: a GPTQ layer packed from random integers by a packer written from the spec's layout
// (autoround_gptq.md §3), with the values it must dequantize to. Tests only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/weight.h"

namespace whittle {

template <typename T>
inline std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

// A GPTQ layer packed from known integers: W[n, k] = s[g, n] * (u[k, n] - z[g, n]).
struct PackedGptq {
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;  // f16 or bf16
  DType scale_dtype = DType::F16;
  std::vector<float> expected;  // [N, K]
  int64_t groups = 0;
  GptqTensors tensors() const {
    return GptqTensors{
        bytes_of(qweight), bytes_of(qzeros),
        bytes_of(scales),  g_idx.empty() ? std::span<const std::byte>() : bytes_of(g_idx),
        scale_dtype,       groups};
  }
};

inline PackedGptq pack_gptq(int bits, int64_t N, int64_t K, int64_t G, bool act_order, bool v2,
                            bool write_g_idx, uint32_t seed, DType scale_dtype = DType::F16) {
  std::mt19937 rng(seed);
  const int64_t pack = 32 / bits, levels = int64_t{1} << bits;
  PackedGptq p;
  p.groups = (K + G - 1) / G;
  std::vector<int32_t> group(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) group[k] = static_cast<int32_t>(k / G);
  if (act_order) std::shuffle(group.begin(), group.end(), rng);  // desc_act: any grouping
  if (write_g_idx || act_order) p.g_idx = group;
  std::uniform_int_distribution<int> u_dist(0, static_cast<int>(levels - 1));
  // Every zero 0..levels-1, including 0, which v1 can only store with a borrow (below).
  std::uniform_int_distribution<int> z_dist(0, static_cast<int>(levels - 1));
  std::normal_distribution<float> s_dist(0.0f, 0.02f);  // signed, as auto-round writes them
  std::vector<int> u(static_cast<size_t>(K * N)), z(static_cast<size_t>(p.groups * N));
  std::vector<float> s(static_cast<size_t>(p.groups * N));
  for (int& v : u) v = u_dist(rng);
  for (int& v : z) v = z_dist(rng);
  p.scale_dtype = scale_dtype;
  p.scales.resize(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const float v = s_dist(rng);
    p.scales[i] = scale_dtype == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
    s[i] = scale_dtype == DType::F16 ? f16_to_f32(p.scales[i]) : bf16_to_f32(p.scales[i]);
  }
  p.qweight.assign(static_cast<size_t>(K / pack * N), 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      p.qweight[(k / pack) * N + n] |=
          static_cast<int32_t>(static_cast<uint32_t>(u[k * N + n]) << (bits * (k % pack)));
  // Packed as v2, then turned into v1 the way gptqmodel writes it: the whole word minus 1 in every
  // field (a zero of 0 becomes field 15 and borrows from the next field).
  std::vector<uint32_t> zeros(static_cast<size_t>(p.groups * (N / pack)), 0);
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t n = 0; n < N; ++n)
      zeros[g * (N / pack) + n / pack] |= static_cast<uint32_t>(z[g * N + n])
                                          << (bits * (n % pack));
  for (uint32_t w : zeros)
    p.qzeros.push_back(static_cast<int32_t>(v2 ? w : w - (bits == 4 ? 0x11111111u : 0x01010101u)));
  p.expected.resize(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t g = group[k];
      p.expected[n * K + k] = s[g * N + n] * static_cast<float>(u[k * N + n] - z[g * N + n]);
    }
  return p;
}

}  // namespace whittle
