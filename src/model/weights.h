// GlmMoeDsa weights bound by checkpoint name as views (tensor/weight.h) into the mapped files:
// binding copies nothing but the small norm vectors and biases (converted to float32), and checks
// every shape against the config, naming the tensor and file on a mismatch.
// Each Linear is read as it is stored: `<module>.weight` (F32 / BF16 / F16, or F8_E4M3 with
// `<module>.weight_scale_inv`) or GPTQ `<module>.qweight/.qzeros/.scales[/.g_idx]` — which modules
// are quantized comes from the file; config.json's quantization_config gives their settings and
// must agree. Experts load from both layouts found in the wild: per-expert tensors
// (`mlp.experts.E.gate_proj.weight`, as GLM-5 ships) and transformers' fused 3-D
// `mlp.experts.gate_up_proj` [E, 2I, H] / `mlp.experts.down_proj` [E, H, I] (row slices of one
// view). A tied lm_head is the embedding's view.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "tensor/packed_int4.h"
#include "tensor/weight.h"

namespace whittle {

struct IndexerWeights {
  Weight wq_b;                                    // [index_n_heads * index_head_dim, q_lora_rank]
  Weight wk;                                      // [index_head_dim, hidden]
  std::vector<float> k_norm_weight, k_norm_bias;  // LayerNorm [index_head_dim]
  Weight weights_proj;                            // [index_n_heads, hidden]
};

// The fast path's absorbed attention over a symmetric int4 kv_b_proj (model/weight_source.cc), so
// decode reads kv_b at 4 bits instead of as float32. Per head h, with W = kv_b's rows of the head:
// q_abs = W_UKᵀ q_nope runs as an int4 product over W_UK transposed (unit scales; kv_b's scale of
// row o, group g is folded into q_nope[o], one activation row per group), o = W_UV o_lat over
// kv_b's own packed tiles.
struct AbsorbedKvB {
  int64_t group_size = 0;        // kv_b's, along kv_lora_rank
  std::vector<PackedInt4> uk_t;  // per head: W_UKᵀ [kv_lora_rank, qk_nope_head_dim]
  std::vector<float> uk_scales;  // [heads][groups][qk_nope_head_dim]: kv_b's scales of W_UK
  std::vector<PackedInt4> uv;    // per head: W_UV [v_head_dim, kv_lora_rank], tiles of kv_b
};

struct AttentionWeights {
  Weight q_a_proj;                                   // [q_lora_rank, hidden]
  std::vector<float> q_a_layernorm;                  // [q_lora_rank]
  Weight q_b_proj;                                   // [heads * qk_head_dim, q_lora_rank]
  Weight kv_a_proj_with_mqa;                         // [kv_lora_rank + qk_rope_head_dim, hidden]
  std::vector<float> kv_a_layernorm;                 // [kv_lora_rank]
  Weight kv_b_proj;                                  // [heads * (qk_nope + v_head), kv_lora_rank]
  Weight o_proj;                                     // [hidden, heads * v_head]
  std::optional<IndexerWeights> indexer;             // absent on "shared" (IndexShare) layers
  std::shared_ptr<const AbsorbedKvB> absorbed_int4;  // fast path only, when kv_b allows
};

struct MlpWeights {  // SwiGLU: down(silu(gate x) * up x)
  Weight gate_proj, up_proj, down_proj;
};

struct MoeWeights {
  Weight router;                       // mlp.gate.weight [experts, hidden]
  std::vector<float> correction_bias;  // e_score_correction_bias [experts], selection only
  std::vector<MlpWeights> experts;
  std::optional<MlpWeights> shared;  // n_shared_experts * moe_intermediate_size wide
};

struct LayerWeights {
  std::vector<float> input_layernorm, post_attention_layernorm;
  AttentionWeights attn;
  std::optional<MlpWeights> dense;  // layers with mlp_layer_types == "dense"
  std::optional<MoeWeights> moe;    // layers with mlp_layer_types == "sparse"

  // Calls fn for every Linear of the layer, in the order the forward pass uses them.
  template <typename Fn>
  void for_each_linear(Fn&& fn) const;
  // The same walk with mutable access (a quantizer substituting its own weights).
  template <typename Fn>
  void for_each_linear(Fn&& fn) {
    std::as_const(*this).for_each_linear([&](const Weight& w) { fn(const_cast<Weight&>(w)); });
  }
};

struct ModelWeights {
  Weight embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> norm;  // [hidden]
  Weight lm_head;           // [vocab, hidden]; the embedding's view when tied
};

// Binds every tensor the forward pass needs. Tensors the forward pass does not use (the MTP layers
// `model.layers.<num_hidden_layers + i>.*`, i < num_nextn_predict_layers) are ignored here and
// listed by `whittle info`. A `model.layers.N.*` tensor past those is an error naming it: the
// config would describe a truncated model. The views live as long as `store`.
ModelWeights bind_weights(const TensorStore& store, const ModelConfig& config);
ModelWeights bind_weights(TensorStore&&, const ModelConfig&) = delete;  // views would dangle

// N of a `model.layers.N.` tensor name (saturating at 10^18 for absurdly long numbers), else
// nullopt.
std::optional<int64_t> layer_index(std::string_view name);

template <typename Fn>
void LayerWeights::for_each_linear(Fn&& fn) const {
  const AttentionWeights& a = attn;
  for (const Weight* w : {&a.q_a_proj, &a.q_b_proj, &a.kv_a_proj_with_mqa}) fn(*w);
  if (a.indexer)
    for (const Weight* w : {&a.indexer->wq_b, &a.indexer->wk, &a.indexer->weights_proj}) fn(*w);
  fn(a.kv_b_proj);
  fn(a.o_proj);
  auto mlp = [&](const MlpWeights& m) {
    fn(m.gate_proj);
    fn(m.up_proj);
    fn(m.down_proj);
  };
  if (dense) mlp(*dense);
  if (moe) {
    fn(moe->router);
    for (const MlpWeights& e : moe->experts) mlp(e);
    if (moe->shared) mlp(*moe->shared);
  }
}

}  // namespace whittle
