// ModelConfig: the fields of a Hugging Face config.json that the GlmMoeDsa family needs, resolved
// with the same defaults and precedence as transformers (see docs/ARCHITECTURE.md). DeepSeek-V3.2
// (`deepseek_v32`) is the same architecture and differs only in the values read here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/quant_config.h"

namespace whittle {

struct RopeConfig {
  std::string type = "default";  // "default" or "yarn"
  double theta = 10000.0;        // transformers' default when no rope parameters are given
  // YaRN (DeepSeek-V3/V3.2); unused for "default". Same keys and defaults as transformers'
  // _compute_yarn_parameters (5.23).
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;  // defaults to max_position_embeddings
  double beta_fast = 32.0, beta_slow = 1.0;         // 0 or absent -> 32 / 1 (`or` in Python)
  // 0 means absent: transformers tests both for truthiness, so a missing `mscale` is not 1.
  double mscale = 0.0, mscale_all_dim = 0.0;
  bool truncate = true;                             // floor/ceil the correction range
  std::optional<double> attention_factor_override;  // explicit `attention_factor`

  // The factor YaRN multiplies cos and sin by (transformers' attention_scaling): the explicit
  // `attention_factor`, else mscale(factor, mscale) / mscale(factor, mscale_all_dim) when both are
  // set, else mscale(factor, 1). 1 for "default".
  double attention_factor() const;
};

struct ModelConfig {
  std::string model_type;  // "glm_moe_dsa" or "deepseek_v32"
  std::vector<std::string> architectures;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;

  // MLA
  int64_t q_lora_rank = 0;  // 0: no q low-rank path (q_proj directly); GLM-5 always has one
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool attention_bias = false;

  // DSA lightning indexer
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  // Per layer: true = the layer runs its own indexer ("full"); false = it reuses the previous full
  // layer's selection ("shared", GLM-5.2 IndexShare). transformers' precedence (GlmMoeDsaConfig.
  // __post_init__): `indexer_types`, else `index_topk_pattern` ("F"/"S" per layer), else
  // `index_topk_freq` / `index_skip_topk_offset`.
  std::vector<bool> indexer_full;

  // Feed-forward
  int64_t intermediate_size = 0;      // dense MLP width
  int64_t moe_intermediate_size = 0;  // expert width
  int64_t n_routed_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_shared_experts = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  std::string scoring_func = "sigmoid";
  std::string hidden_act = "silu";
  std::vector<bool> layer_is_moe;  // from mlp_layer_types, else first_k_dense_replace
  int64_t first_k_dense_replace = 0;

  // Norms and positions
  double rms_norm_eps = 1e-6;
  double latent_norm_eps = 1e-6;  // q_a_layernorm / kv_a_layernorm: transformers' RMSNorm default
  double index_k_norm_eps = 1e-6;
  RopeConfig rope;
  bool rope_interleave = true;          // MLA rope pairing (2i, 2i+1)
  bool indexer_rope_interleave = true;  // GLM: interleaved; DeepSeek-V3.2: half-split
  int64_t max_position_embeddings = 0;

  int64_t num_nextn_predict_layers = 0;
  bool tie_word_embeddings = false;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id, pad_token_id;
  std::string torch_dtype = "bfloat16";
  // generation_config.json's defaults, validated on load; sampling_defaults() (serve/generation.h)
  // turns them into what `whittle generate` does without flags, as transformers does.
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p;
  std::optional<int64_t> top_k, max_new_tokens;
  // config.json's GPTQ / AutoRound "quantization_config"; nullopt for 16-bit (and FP8) checkpoints.
  std::optional<QuantConfig> quantization;

  // Softmax scale of MLA: qk_head_dim^-0.5, times mscale^2 for YaRN with mscale_all_dim.
  double softmax_scale() const;

  // Parses a config.json object. `source` names the file in errors. The ordered_json overload keeps
  // the file's key order, which quantization_config's first-match rules need (load() uses it); the
  // json overload refuses a quantization_config whose rule order matters.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_json(const nlohmann::ordered_json& j, const std::string& source);
  // Applies a generation_config.json object: its eos_token_id replaces config.json's; temperature,
  // top_p, top_k, do_sample and max_new_tokens are checked and kept. `source` names the file in
  // errors.
  void read_generation_config(const nlohmann::json& j, const std::string& source);
  // Reads `<dir>/config.json` (and `generation_config.json` when present).
  static ModelConfig load(const std::filesystem::path& dir);
};

}  // namespace whittle
