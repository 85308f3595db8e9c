// The GPTQ tensors of a quantized Linear, exactly as auto-round's exporter writes them (spec
// autoround_gptq.md §0 items 10-12, §3): for K inputs, N outputs, b bits (P = 32 / b codes per
// int32) and groups of G inputs,
//   qweight int32 [K/P, N]       code u = q + 2^(b-1) of input k in word k / P, bits b·(k mod P)
//   qzeros  int32 [K/G, N/P]     GPTQ v1 ("gptq", no checkpoint_format key): the zero point minus
//                                one, 2^(b-1) - 1 in every field (0x77777777 for 4 bits)
//   scales  fp16  [K/G, N]       the transpose of the quantizer's [N, K/G], signs kept
//   g_idx   int32 [K]            k / G (no act-order)
// The reader (tensor/weight.h, Weight::gptq) dequantizes these to exactly QuantizedLinear's W~.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "quant/int_quant.h"
#include "tensor/weight.h"

namespace whittle {

struct GptqPacked {
  int64_t rows = 0, cols = 0, groups = 0;  // N, K, K/G
  QuantSpec spec;
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;

  // A Weight reading these buffers (which must outlive it), as a checkpoint's tensors would be.
  Weight view(std::string module) const;
  size_t bytes() const;
};

// Packs q. Throws Error naming the module unless bits is 4 or 8 and K and N are multiples of
// 32 / bits and of nothing else (K a multiple of the group size is the caller's rule to enforce:
// a partial last group packs fine but vLLM rejects it).
GptqPacked pack_gptq(const QuantizedLinear& q);

template <typename T>
std::span<const std::byte> as_bytes_span(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

}  // namespace whittle
