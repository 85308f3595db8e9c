// `whittle quantize`: writes a GPTQ-format int4/int8 copy of a GlmMoeDsa checkpoint, one decoder
// layer at a time (issue 10). Three methods share the plan (quant_plan.h), the grid (int_quant.h),
// the packer (gptq_pack.h) and the writer:
// - rtn: round to nearest, no data; each Linear is read, quantized and written on its own.
// - gptq: per layer, the Hessian of every quantized Linear's input over the calibration tokens
//   (inputs from the already-quantized layers before it), then GPTQ (quant/gptq.h).
// - autoround: per layer, the full-precision layer's outputs on full-precision inputs are the
//   targets, the layer is tuned on the quantized chain's inputs (quant/autoround.h).
// Calibration activations are the samples' hidden states (one chain for gptq, two for autoround),
// in memory up to a budget and in a scratch file past it (quant/sample_store.h); the weights stream
// from the mapped checkpoint (WeightSource acquire/release), so one layer's weights are resident.
// Every tensor the quantizer does not replace is copied byte for byte, except FP8 block tensors,
// which are dequantized to BF16 (auto-round does the same: a GPTQ checkpoint cannot also declare
// FP8). The output is written under a temporary name and renamed when complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quant/autoround.h"
#include "quant/gptq.h"
#include "quant/quant_plan.h"
#include "util/thread_pool.h"

namespace whittle {

enum class QuantMethod { kRtn, kGptq, kAutoRound };
QuantMethod parse_quant_method(const std::string& name);
const char* quant_method_name(QuantMethod m);

struct QuantizeOptions {
  QuantMethod method = QuantMethod::kAutoRound;
  PlanOptions plan;
  std::vector<std::vector<int32_t>> samples;  // calibration token ids (gptq, autoround)
  int64_t batch = 8;                          // samples per forward batch
  GptqOptions gptq;
  AutoRoundOptions autoround;
  uint64_t hessian_budget_bytes = uint64_t{4} << 30;  // GPTQ Hessians held at once per layer
  // Calibration hidden states kept in memory (all chains together); past it they go to a scratch
  // file in the output folder.
  uint64_t activation_budget_bytes = uint64_t{8} << 30;
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;                  // 0: like the input (see PruneWriteOptions)
  nlohmann::ordered_json calibration = nullptr;  // recorded in quantization_config
  bool show_progress = true;
};

struct LayerReport {
  int64_t layer = 0;
  int64_t quantized = 0, kept = 0;
  double seconds = 0.0;
  // gptq: Σ proxy losses tr((W-Q)H(W-Q)^T) of GPTQ and of RTN on the same Hessians;
  // autoround: the layer's output MSE over every sample with RTN weights and with the tuned ones.
  double loss_rtn = 0.0, loss = 0.0;
  int64_t best_iter = -1;  // autoround
};

struct QuantizeResult {
  QuantPlan plan;
  std::vector<LayerReport> layers;
  int64_t tensors_written = 0;
  uint64_t bytes_written = 0;
};

QuantizeResult quantize_checkpoint(const std::filesystem::path& in,
                                   const std::filesystem::path& out, const QuantizeOptions& opts,
                                   ThreadPool& pool);

}  // namespace whittle
