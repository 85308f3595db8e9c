// Checkpoint surgery for expert pruning (REAP and its baselines): writes a copy of a GlmMoeDsa
// model folder that keeps only the chosen routed experts of every MoE layer. Tensors are streamed
// one at a time from the memory-mapped input through SafeTensorsWriter; nothing else of the model
// is held in memory. Rules (issue 9 point 4, specs/reap.md §3, specs/reap_vs_code.md §3.9-3.10):
//
// - Survivors keep their original order and are renumbered 0..K-1: per-expert tensors
//   `model.layers.L.mlp.experts.E.<anything>` are renamed (weight, qweight, qzeros, scales, g_idx,
//   weight_scale_inv travel with their expert, so nothing is re-quantized); fused tensors
//   `model.layers.L.mlp.experts.<name>` ([E, ...]: gate_up_proj, down_proj) are sliced on dim 0.
// - The router's `mlp.gate.weight` rows, `mlp.gate.e_score_correction_bias` and `mlp.gate.bias` are
//   sliced to match, bytes unchanged (the bias stays float32).
// - config.json: `n_routed_experts` = K, every other key and the key order kept; `n_group`,
//   `topk_group`, `num_experts_per_tok`, `routed_scaling_factor` stay (the selection must drop the
//   same number inside every contiguous group; checked here). A GPTQ `modules_in_block_to_quantize`
//   list naming experts is rewritten for K experts.
// - MTP layers (`model.layers.<num_hidden_layers + i>.*`) are pruned to the same K, since serving
//   engines build them from the one global `n_routed_experts`; or, with `drop_mtp`, removed and
//   `num_nextn_predict_layers` set to 0.
// - Every other tensor is copied byte for byte; every other regular file of the folder
//   (tokenizer, chat template, generation config, ...) is copied, except an earlier
//   reap_report.json (it describes another model); subfolders are not copied; extra files
//   (reap_report.json) are written.
// - Memory: one tensor at a time, mapped, its pages dropped after it is written; a sliced tensor
//   (router, fused experts) is assembled in one buffer of K / E of its size.
// - The output folder is written under a temporary name and renamed when complete (AtomicDir).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/model_config.h"

namespace whittle {

// The routed experts each layer keeps, by original id.
struct ExpertKeep {
  // Index = decoder layer. Empty for dense layers; for MoE layers the kept ids, ascending, the same
  // count K for every layer. May hold num_hidden_layers + num_nextn_predict_layers entries: a
  // non-empty set at an MTP index is used for that MTP layer. Without one, the MTP layer keeps its
  // experts 0..K-1 (with n_group > 1: the first K / n_group of every group): expert ids of
  // different layers are unrelated, so no decoder layer's set says anything about the MTP layer's
  // experts, and no calibration statistic exists for it (neither public implementation observes
  // MTP; reap_vs_code.md D18). That is option (b) of reap.md §3.4, used in a published GLM cut; it
  // keeps MTP loadable so speculative decoding still works.
  std::vector<std::vector<int32_t>> kept_per_layer;
};

struct PruneWriteOptions {
  bool overwrite = false;  // replace an existing output folder (`--force`)
  bool drop_mtp = false;   // remove the MTP layers and set num_nextn_predict_layers to 0
  // Largest tensor-byte count per output shard. 0: like the input (one file stays one file; a
  // sharded input's largest shard bounds every output shard, so there are never more shards).
  uint64_t max_shard_bytes = 0;
  // Files written into the output folder by name (e.g. "reap_report.json" -> its text). Plain file
  // names only; they may not replace config.json or a safetensors file.
  std::map<std::string, std::string> extra_files;
};

// What was written, for logs and tests.
struct PruneWriteResult {
  int64_t kept_experts = 0;   // K
  int64_t pruned_layers = 0;  // MoE + MTP layers pruned
  int64_t tensors_written = 0;
  uint64_t tensor_bytes_written = 0;
  std::vector<std::filesystem::path> files;  // final paths of every file written
};

// Writes a pruned copy of the model folder `in` to `out`. `config` is `in`'s ModelConfig. Throws
// Error (and leaves nothing at `out`, nor any temporary) for: an existing `out` without overwrite,
// `out` being `in`, a destination that cannot be written, a model without MoE layers, a kept set
// that is unsorted, duplicated, out of range, of a different size than another layer's, smaller
// than num_experts_per_tok, non-empty for a dense layer or not equal per routing group, and a
// checkpoint whose tensors do not match its config.
PruneWriteResult write_pruned_checkpoint(const std::filesystem::path& in,
                                         const std::filesystem::path& out,
                                         const ModelConfig& config, const ExpertKeep& keep,
                                         const PruneWriteOptions& opts);

}  // namespace whittle
