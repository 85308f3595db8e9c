// GlmMoeDsa weights bound by checkpoint name and converted to float32 (the reference path).
// Binding checks every shape against the config and names the tensor and file on a mismatch.
// Experts load from both layouts found in the wild: per-expert tensors
// (`mlp.experts.E.gate_proj.weight`, as GLM-5 ships) and transformers' fused 3-D
// `mlp.experts.gate_up_proj` [E, 2I, H] / `mlp.experts.down_proj` [E, H, I].
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/model_config.h"
#include "io/safetensors.h"

namespace whittle {

// A Linear layer's weight in PyTorch layout: [out, in], row-major.
struct Linear {
  int64_t out = 0, in = 0;
  std::vector<float> w;
};

struct IndexerWeights {
  Linear wq_b;                                    // [index_n_heads * index_head_dim, q_lora_rank]
  Linear wk;                                      // [index_head_dim, hidden]
  std::vector<float> k_norm_weight, k_norm_bias;  // LayerNorm [index_head_dim]
  Linear weights_proj;                            // [index_n_heads, hidden]
};

struct AttentionWeights {
  Linear q_a_proj;                        // [q_lora_rank, hidden]
  std::vector<float> q_a_layernorm;       // [q_lora_rank]
  Linear q_b_proj;                        // [heads * qk_head_dim, q_lora_rank]
  Linear kv_a_proj_with_mqa;              // [kv_lora_rank + qk_rope_head_dim, hidden]
  std::vector<float> kv_a_layernorm;      // [kv_lora_rank]
  Linear kv_b_proj;                       // [heads * (qk_nope + v_head), kv_lora_rank]
  Linear o_proj;                          // [hidden, heads * v_head]
  std::optional<IndexerWeights> indexer;  // absent on "shared" (IndexShare) layers
};

struct MlpWeights {  // SwiGLU: down(silu(gate x) * up x)
  Linear gate_proj, up_proj, down_proj;
};

struct MoeWeights {
  Linear router;                       // mlp.gate.weight [experts, hidden]
  std::vector<float> correction_bias;  // e_score_correction_bias [experts], selection only
  std::vector<MlpWeights> experts;
  std::optional<MlpWeights> shared;  // n_shared_experts * moe_intermediate_size wide
};

struct LayerWeights {
  std::vector<float> input_layernorm, post_attention_layernorm;
  AttentionWeights attn;
  std::optional<MlpWeights> dense;  // layers with mlp_layer_types == "dense"
  std::optional<MoeWeights> moe;    // layers with mlp_layer_types == "sparse"
};

struct ModelWeights {
  std::vector<float> embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> norm;  // [hidden]
  Linear lm_head;           // [vocab, hidden]; the embedding when tied
};

// Reads every tensor the forward pass needs. Tensors the forward pass does not use (the MTP layers
// `model.layers.<num_hidden_layers + i>.*`, i < num_nextn_predict_layers) are ignored here and
// listed by `whittle info`. A `model.layers.N.*` tensor past those is an error naming it: the
// config would describe a truncated model.
ModelWeights load_weights(const TensorStore& store, const ModelConfig& config);

// N of a `model.layers.N.` tensor name (saturating at 10^18 for absurdly long numbers), else
// nullopt.
std::optional<int64_t> layer_index(std::string_view name);

}  // namespace whittle
