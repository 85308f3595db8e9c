#include "quant/gptq_pack.h"

#include "util/error.h"

namespace whittle {

GptqPacked pack_gptq(const QuantizedLinear& q) {
  const int bits = q.spec.bits;
  if (bits != 4 && bits != 8) fail("{}: GPTQ export supports 4 and 8 bits, not {}", q.module, bits);
  const int64_t P = 32 / bits, N = q.rows, K = q.cols;
  if (K % P != 0 || N % P != 0)
    fail("{}: [{}, {}] cannot be packed: GPTQ needs both dimensions to be multiples of {}",
         q.module, N, K, P);
  GptqPacked out;
  out.rows = N;
  out.cols = K;
  out.groups = q.groups();
  out.spec = q.spec;
  const int32_t offset = 1 << (bits - 1);
  const uint32_t mask = (1u << bits) - 1;
  out.qweight.assign(static_cast<size_t>(K / P * N), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const auto u = static_cast<uint32_t>(q.q[static_cast<size_t>(n * K + k)] + offset) & mask;
      auto& word = out.qweight[static_cast<size_t>((k / P) * N + n)];
      word = static_cast<int32_t>(static_cast<uint32_t>(word) | (u << (bits * (k % P))));
    }
  // v1 stores zero - 1 in every field.
  uint32_t zeros = 0;
  for (int64_t j = 0; j < P; ++j) zeros |= static_cast<uint32_t>(offset - 1) << (bits * j);
  out.qzeros.assign(static_cast<size_t>(out.groups * (N / P)), static_cast<int32_t>(zeros));
  out.scales.resize(static_cast<size_t>(out.groups * N));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < out.groups; ++g)
      out.scales[static_cast<size_t>(g * N + n)] =
          q.scales[static_cast<size_t>(n * out.groups + g)];
  const int64_t G = q.spec.group(K);
  out.g_idx.resize(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) out.g_idx[static_cast<size_t>(k)] = static_cast<int32_t>(k / G);
  return out;
}

Weight GptqPacked::view(std::string module) const {
  GptqTensors t{as_bytes_span(qweight),
                as_bytes_span(qzeros),
                as_bytes_span(scales),
                as_bytes_span(g_idx),
                DType::F16,
                groups};
  GptqParams p;
  p.bits = spec.bits;
  p.group_size = spec.group(cols);
  p.sym = true;
  return Weight::gptq(std::move(module), t, rows, cols, p);
}

size_t GptqPacked::bytes() const {
  return (qweight.size() + qzeros.size() + g_idx.size()) * 4 + scales.size() * 2;
}

}  // namespace whittle
