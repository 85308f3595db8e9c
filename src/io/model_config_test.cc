// config.json parsing: transformers' defaults and precedence, and a clear error for every missing,
// mistyped or contradictory field.
#include "io/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace whittle {
namespace {
using nlohmann::json;
using ::testing::HasSubstr;

// The GLM-5 config.json values of spec §1 (sizes as shipped).
json glm5() {
  return json::parse(R"({
    "architectures": ["GlmMoeDsaForCausalLM"], "model_type": "glm_moe_dsa",
    "vocab_size": 154880, "hidden_size": 6144, "num_hidden_layers": 78,
    "num_attention_heads": 64, "num_key_value_heads": 64, "q_lora_rank": 2048, "kv_lora_rank": 512,
    "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "head_dim": 64, "v_head_dim": 256,
    "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1,
    "moe_intermediate_size": 2048, "intermediate_size": 12288, "first_k_dense_replace": 3,
    "n_group": 1, "topk_group": 1, "norm_topk_prob": true, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "hidden_act": "silu",
    "rope_parameters": {"rope_theta": 1000000, "rope_type": "default"},
    "rope_interleave": true, "indexer_rope_interleave": true, "rms_norm_eps": 1e-5,
    "index_n_heads": 32, "index_head_dim": 128, "index_topk": 2048, "num_nextn_predict_layers": 1,
    "max_position_embeddings": 202752, "tie_word_embeddings": false,
    "eos_token_id": [154820, 154827, 154829], "pad_token_id": 154820, "dtype": "bfloat16"})");
}

std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, ParsesGlm5) {
  ModelConfig c = ModelConfig::from_json(glm5(), "config.json");
  EXPECT_EQ(c.qk_head_dim(), 256);
  EXPECT_DOUBLE_EQ(c.softmax_scale(), 1.0 / 16);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_TRUE(c.rope_interleave);
  EXPECT_TRUE(c.indexer_rope_interleave);
  ASSERT_EQ(c.layer_is_moe.size(), 78u);
  EXPECT_FALSE(c.layer_is_moe[2]);
  EXPECT_TRUE(c.layer_is_moe[3]);
  EXPECT_EQ(std::count(c.indexer_full.begin(), c.indexer_full.end(), true), 78);
  EXPECT_DOUBLE_EQ(c.latent_norm_eps, 1e-6);  // transformers' q_a/kv_a_layernorm default
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{154820, 154827, 154829}));
}

TEST(ModelConfig, RopeThetaPrecedenceFollowsTransformers) {
  json j = glm5();
  j.erase("rope_parameters");
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j, "c").rope.theta, 10000.0);  // the silent fallback
  j["rope_theta"] = 500000.0;
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j, "c").rope.theta, 500000.0);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j, "c").rope.theta, 1e6);
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 40}, {"mscale_all_dim", 1.0}, {"mscale", 1.0},
                       {"original_max_position_embeddings", 4096}};
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_EQ(c.rope.type, "yarn");  // legacy rope_scaling replaces rope_parameters
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), m * m / 16, 1e-12);
}

TEST(ModelConfig, MlpLayerTypesWinOverFirstKDense) {
  json j = glm5();
  j["num_hidden_layers"] = 3;
  j["mlp_layer_types"] = {"sparse", "dense", "sparse"};
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{true, false, true}));
}

TEST(ModelConfig, IndexShareFromFreqAndOffset) {
  json j = glm5();
  j["index_topk_freq"] = 4;
  j["index_skip_topk_offset"] = 3;
  ModelConfig c = ModelConfig::from_json(j, "c");
  std::vector<int> full;
  for (int i = 0; i < 78; ++i)
    if (c.indexer_full[i]) full.push_back(i);
  EXPECT_EQ(full.size(), 21u);  // GLM-5.2: 0, 1, 2, 6, 10, ..., 74
  EXPECT_EQ(full[3], 6);
  EXPECT_EQ(full.back(), 74);
}

TEST(ModelConfig, DeepSeekV32DiffersOnlyByConfiguration) {
  json j = glm5();
  j["model_type"] = "deepseek_v32";
  j.erase("indexer_rope_interleave");
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_FALSE(c.indexer_rope_interleave);  // half-split indexer RoPE
  EXPECT_TRUE(c.rope_interleave);
}

TEST(ModelConfig, BadFieldsGiveClearErrors) {
  json j = glm5();
  j["model_type"] = "llama";
  EXPECT_THAT(error_of(j), HasSubstr("unknown model_type 'llama'"));
  j = glm5();
  j.erase("hidden_size");
  EXPECT_THAT(error_of(j), HasSubstr("m/config.json: missing required field 'hidden_size'"));
  j = glm5();
  j["hidden_size"] = "big";
  EXPECT_THAT(error_of(j), HasSubstr("'hidden_size' must be an integer"));
  j = glm5();
  j["qk_head_dim"] = 128;
  EXPECT_THAT(error_of(j), HasSubstr("qk_head_dim (128) contradicts"));
  j = glm5();
  j["indexer_rope_interleave"] = false;
  EXPECT_THAT(error_of(j), HasSubstr("interleaved RoPE"));
  j = glm5();
  j["num_experts_per_tok"] = 300;
  EXPECT_THAT(error_of(j), HasSubstr("num_experts_per_tok (300) exceeds"));
  j = glm5();
  j["n_group"] = 3;
  EXPECT_THAT(error_of(j), HasSubstr("not divisible by n_group"));
  j = glm5();
  j["mlp_layer_types"] = {"dense"};
  EXPECT_THAT(error_of(j), HasSubstr("'mlp_layer_types' has 1 entries but num_hidden_layers is 78"));
  j = glm5();
  j["num_key_value_heads"] = 8;
  EXPECT_THAT(error_of(j), HasSubstr("num_key_value_heads"));
  j = glm5();
  j["rope_parameters"] = {{"rope_type", "longrope"}};
  EXPECT_THAT(error_of(j), HasSubstr("rope type 'longrope' is not supported"));
  EXPECT_THAT(error_of(json::array()), HasSubstr("not a JSON object"));
}

}  // namespace
}  // namespace whittle
