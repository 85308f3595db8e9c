// Which Linears of a GlmMoeDsa checkpoint `whittle quantize` turns into int4/int8 GPTQ modules and
// which stay in 16 bit, and the `quantization_config` that tells the loaders (vLLM, SGLang,
// transformers + gptqmodel, whittle) the same thing (issue 10 point 5; spec autoround_gptq.md
// §1.3, §4; autoround_vs_code.md D7, D8, §3.6-3.9).
//
// Kept in 16 bit, each for a reason a warning or the config names:
// - the dense MLP layers (mlp_layer_types "dense", GLM-5's first_k_dense_replace layers) and the
//   DSA indexer's weights_proj: the published recipe's set (auto-round's GLM-5 rule, "vllm
//   issue"). The indexer's wq_b and wk are quantized, as the recipe did (auto-round 0.16 skips the
//   whole indexer by default; the recipe's 586 modules per MoE layer include them);
// - modules matching a user `--keep` pattern (re.match semantics, as the loaders apply `dynamic`);
// - shapes the format cannot hold: K not a multiple of the group size, N or K not a multiple of 32
//   (auto-round's rule for every int export, D8);
// - with vllm_rules: shapes vLLM's Marlin kernels refuse (N % 64, K % 128), and every other shard
//   of a module vLLM fuses with a kept one (q_a_proj + kv_a_proj_with_mqa, gate + up, all routed
//   experts of a layer), since vLLM decides per fused module and refuses shards that disagree.
// The router (mlp.gate), norms, embeddings, biases and lm_head are never quantized; the MTP layers
// (model.layers.N.. past num_hidden_layers) are copied as they are and kept by a rule, since
// vLLM's GLM-5 drafter builds them from the same config.
//
// `dynamic` holds one "-:" rule per kept vLLM module (the fused name and the Hugging Face names
// both match it), collapsed to `layers\.\d+\.` when the module is kept in every layer that has it,
// user patterns first, verbatim. `modules_in_block_to_quantize` is the union over all blocks
// (auto-round HEAD; v0.12's block 0 alone is dense in GLM-5). The config is checked after it is
// made: read back with QuantConfig as transformers and as vLLM, every Linear must come out as
// planned.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/weights.h"
#include "quant/int_quant.h"

namespace whittle {

struct PlanOptions {
  QuantSpec spec;
  std::vector<std::string> keep;  // extra "-:" patterns (Python re.match on module names)
  bool vllm_rules = true;         // Marlin shape rules and fused-shard agreement
};

struct LinearPlan {
  std::string module;  // Hugging Face module name
  int64_t rows = 0, cols = 0;
  bool quantize = false;
  std::string kept_because;  // empty when quantized
};

struct QuantPlan {
  std::vector<std::vector<LinearPlan>> layers;  // per decoder layer, in forward order
  std::vector<std::string> warnings;            // one per kept shape/fusion class
  nlohmann::ordered_json dynamic = nlohmann::ordered_json::object();
  std::vector<std::string> modules_in_block;  // sorted
  int64_t mtp_layers = 0;

  const LinearPlan* find(const std::string& module) const;
  int64_t quantized() const;
  int64_t kept() const;
};

// Plans every Linear of `weights` (bound for `config`). Throws Error for a bad --keep pattern or
// unsupported bits / group size.
QuantPlan plan_quantization(const ModelConfig& config, const ModelWeights& weights,
                            const PlanOptions& opts);

// config.json's `quantization_config` for the plan, in auto-round's key order (the GPTQ v1 layout:
// no checkpoint_format key). `method` ("rtn", "gptq", "autoround") and `extra` (its non-default
// settings) are recorded beside the keys the loaders read.
nlohmann::ordered_json quantization_config(const QuantPlan& plan, const QuantSpec& spec,
                                           const std::string& method,
                                           const nlohmann::ordered_json& extra);

// Reads `qc` back as transformers/gptqmodel and as vLLM would and checks that every planned Linear
// comes out quantized or kept as planned; an Error naming the first module that does not.
void check_quantization_config(const QuantPlan& plan, const nlohmann::ordered_json& qc,
                               bool vllm_rules);

}  // namespace whittle
