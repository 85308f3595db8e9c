// config.json parsing: transformers' defaults and precedence, and a clear error for every missing,
// mistyped or contradictory field.
#include "io/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "ops/rope.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/testing.h"

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
  j["rope_scaling"] = {{"type", "yarn"},
                       {"factor", 40},
                       {"mscale_all_dim", 1.0},
                       {"mscale", 1.0},
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

std::vector<bool> indexer_of(const json& j) {
  return ModelConfig::from_json(j, "c").indexer_full;
}

json four_layers() {
  json j = glm5();
  j["num_hidden_layers"] = 4;
  return j;
}

// transformers 5.23 GlmMoeDsaConfig.__post_init__: indexer_types, else index_topk_pattern (one
// "F"/"S" per layer), else index_topk_freq / index_skip_topk_offset.
TEST(ModelConfig, IndexTopkPatternGivesTheIndexerKinds) {
  json j = four_layers();
  j["index_topk_pattern"] = "FSSF";
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, false, false, true}));
  // The pattern wins over freq/offset ...
  j["index_topk_freq"] = 2;
  j["index_skip_topk_offset"] = 1;
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, false, false, true}));
  // ... and indexer_types wins over the pattern.
  j["indexer_types"] = {"full", "full", "shared", "shared"};
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, true, false, false}));
  // null is absent, as None in transformers.
  j["indexer_types"] = nullptr;
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, false, false, true}));
  j["index_topk_pattern"] = nullptr;
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, false, true, false}));  // freq 2, offset 1
  // A list pattern is taken as indexer_types.
  j["index_topk_pattern"] = {"full", "shared", "full", "full"};
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, false, true, true}));
}

TEST(ModelConfig, IndexTopkPatternLengthFollowsTransformers) {
  // Longer than num_hidden_layers: transformers reads only the first entries.
  json j = four_layers();
  j["index_topk_pattern"] = "FSFSSS";
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, false, true, false}));
  // Shorter: transformers fails building the missing layers (IndexError); whittle says why.
  j["index_topk_pattern"] = "FS";
  EXPECT_THAT(error_of(j), HasSubstr("m/config.json: field 'index_topk_pattern' has 2 entries but "
                                     "num_hidden_layers is 4"));
  j["index_topk_pattern"] = "";
  EXPECT_THAT(error_of(j), HasSubstr("has 0 entries"));
}

TEST(ModelConfig, BadIndexTopkPatternsNameTheField) {
  json j = four_layers();
  j["index_topk_pattern"] = "fssf";  // KeyError 'f' in transformers: upper case only
  EXPECT_THAT(error_of(j), HasSubstr("m/config.json: field 'index_topk_pattern' holds 'f' at "
                                     "position 0; expected \"F\" (full) or \"S\" (shared)"));
  j["index_topk_pattern"] = "FSXF";
  EXPECT_THAT(error_of(j), HasSubstr("holds 'X' at position 2"));
  j["index_topk_pattern"] = "FSFF\n";  // the tail is checked too, as transformers maps it all
  EXPECT_THAT(error_of(j), HasSubstr("holds byte 0x0a at position 4"));
  // transformers would run ["F", "S", ...] as all "full" (only "shared" is shared): refused.
  j["index_topk_pattern"] = {"F", "S", "F", "F"};
  EXPECT_THAT(error_of(j), HasSubstr("field 'index_topk_pattern' holds \"F\" at position 0; a list "
                                     "pattern is taken as indexer_types"));
  j["index_topk_pattern"] = 5;
  EXPECT_THAT(error_of(j), HasSubstr("field 'index_topk_pattern' must be a string of \"F\"/\"S\""));
}

TEST(ModelConfig, SharedLayerZeroIsAnErrorWhereverItComesFrom) {
  json j = four_layers();
  j["index_topk_pattern"] = "SFFF";  // transformers: "Shared DSA layers require top-k indices ..."
  EXPECT_THAT(error_of(j), HasSubstr("field 'index_topk_pattern' makes layer 0 \"S\" (shared)"));
  j.erase("index_topk_pattern");
  j["indexer_types"] = {"shared", "full", "full", "full"};
  EXPECT_THAT(error_of(j), HasSubstr("indexer_types[0] is \"shared\""));
  j.erase("indexer_types");
  j["index_topk_freq"] = 2;
  j["index_skip_topk_offset"] = 0;  // max(0 - 0 + 1, 0) % 2 = 1: layer 0 shared
  EXPECT_THAT(error_of(j), HasSubstr("fields 'index_topk_freq' (2) and 'index_skip_topk_offset' "
                                     "(0) make layer 0 \"shared\""));
}

TEST(ModelConfig, DeepSeekV32IgnoresTheIndexPattern) {
  json j = four_layers();
  j["model_type"] = "deepseek_v32";
  j.erase("indexer_rope_interleave");
  j["index_topk_pattern"] = "FSSS";
  EXPECT_EQ(indexer_of(j), (std::vector<bool>{true, true, true, true}));
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
  j["hidden_size"] = uint64_t{18446744073709551615u};  // would read as -1 through int64
  EXPECT_THAT(
      error_of(j),
      HasSubstr("'hidden_size' is 18446744073709551615, outside [-2147483647, 2147483647]"));
  j = glm5();
  j["vocab_size"] = int64_t{1} << 40;
  EXPECT_THAT(error_of(j), HasSubstr("'vocab_size' is 1099511627776, outside"));
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
  EXPECT_THAT(error_of(j),
              HasSubstr("'mlp_layer_types' has 1 entries but num_hidden_layers is 78"));
  j = glm5();
  j["num_key_value_heads"] = 8;
  EXPECT_THAT(error_of(j), HasSubstr("num_key_value_heads"));
  j = glm5();
  j["rope_parameters"] = {{"rope_type", "longrope"}};
  EXPECT_THAT(error_of(j), HasSubstr("rope type 'longrope' is not supported"));
  EXPECT_THAT(error_of(json::array()), HasSubstr("not a JSON object"));
}

// ---------------------------------------------------------------------------------------------
// DeepSeek-V3.2 (deepseek_v32) and YaRN. Expected values come from transformers 5.23.0
// (DeepseekV32Config + ROPE_INIT_FUNCTIONS["yarn"], i.e. _compute_yarn_parameters); the tiny
// end-to-end check is the golden tests/golden/models/deepseek_v32.

// DeepSeek-V3.2-Exp's config.json as shipped: legacy `rope_scaling` with "type", top-level
// rope_theta, no rope_parameters / mlp_layer_types / indexer keys.
json deepseek_v32() {
  return json::parse(R"({
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_shared_experts": 1, "n_routed_experts": 256, "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
    "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": true,
    "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840,
    "initializer_range": 0.02, "rms_norm_eps": 1e-06, "use_cache": true, "bos_token_id": 0,
    "eos_token_id": 1, "tie_word_embeddings": false, "rope_theta": 10000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "attention_bias": false, "attention_dropout": 0.0, "index_head_dim": 128, "index_n_heads": 64,
    "index_topk": 2048, "num_nextn_predict_layers": 1, "torch_dtype": "bfloat16"})");
}

// inv_freq of a 64-dim RoPE at pairs kPairs, exactly as transformers computes them.
const int kPairs[] = {0, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 31};
void expect_inv_freq(const RopeConfig& rope, const std::vector<float>& want) {
  RopeTable table(rope, 64);
  ASSERT_EQ(table.inv_freq().size(), 32u);
  for (size_t k = 0; k < want.size(); ++k)
    EXPECT_EQ(table.inv_freq()[kPairs[k]], want[k]) << "pair " << kPairs[k];
}

TEST(ModelConfig, DeepSeekV32ShippedConfigMatchesTransformers) {
  ModelConfig c = ModelConfig::from_json(deepseek_v32(), "c");
  EXPECT_EQ(c.rope.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 40.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor(), 1.0);  // mscale == mscale_all_dim: cos/sin unscaled
  const double m = 0.1 * std::log(40.0) + 1.0;       // ... but the softmax scale gets mscale^2
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(192.0), 1e-15);
  EXPECT_TRUE(c.rope_interleave);
  EXPECT_FALSE(c.indexer_rope_interleave);
  EXPECT_EQ(std::count(c.indexer_full.begin(), c.indexer_full.end(), true), 61);
  EXPECT_FALSE(c.layer_is_moe[2]);
  EXPECT_TRUE(c.layer_is_moe[3]);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1}));
  expect_inv_freq(
      c.rope, {0x1.0p+0f, 0x1.33281ap-4f, 0x1.ccab84p-5f, 0x1.3f8b74p-5f, 0x1.b86436p-6f,
               0x1.2d1b86p-6f, 0x1.97e506p-7f, 0x1.111aeep-7f, 0x1.6872b2p-8f, 0x1.d2e0ccp-9f,
               0x1.26d42cp-9f, 0x1.67459ap-10f, 0x1.9e7c6ep-11f, 0x1.b32624p-12f, 0x1.74eea6p-13f,
               0x1.17a8e2p-15f, 0x1.bf749ep-19f});
  EXPECT_FLOAT_EQ(RopeTable(c.rope, 64).attention_scaling(), 1.0f);
}

TEST(ModelConfig, DeepSeekV32DefaultsFollowTransformers) {
  json j = deepseek_v32();
  for (const char* k : {"n_group", "topk_group", "rms_norm_eps", "max_position_embeddings",
                        "index_head_dim", "index_n_heads", "index_topk", "first_k_dense_replace",
                        "routed_scaling_factor", "rope_theta", "rope_scaling"})
    j.erase(k);
  // yarn without original_max_position_embeddings: transformers uses max_position_embeddings,
  // whose deepseek_v32 default is 163840 (not GLM-5's 202752).
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 40}};
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 163840);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_topk, 2048);
  EXPECT_FALSE(c.layer_is_moe[2]);
  EXPECT_TRUE(c.layer_is_moe[3]);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 163840);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor(), 1.3688879454113936);  // no mscale keys: mscale(40)
  EXPECT_DOUBLE_EQ(c.softmax_scale(), 1.0 / std::sqrt(192.0));      // no mscale_all_dim
  expect_inv_freq(c.rope,
                  {0x1.0p+0f, 0x1.33281ap-4f, 0x1.ccab84p-5f, 0x1.59742ap-5f, 0x1.030dc6p-5f,
                   0x1.84869ep-6f, 0x1.235a72p-6f, 0x1.b4f7e4p-7f, 0x1.47ae14p-7f, 0x1.eb736p-8f,
                   0x1.708938p-8f, 0x1.145ceep-8f, 0x1.9e7c7p-9f, 0x1.36d21ap-9f, 0x1.d22a5p-10f,
                   0x1.5d931cp-10f, 0x1.bf749ep-15f});
  j["max_position_embeddings"] = 4096;
  EXPECT_EQ(ModelConfig::from_json(j, "c").rope.original_max_position_embeddings, 4096);
}

TEST(ModelConfig, YarnAttentionFactorFollowsTransformers) {
  json j = deepseek_v32();
  // mscale absent: transformers falls back to mscale(factor) (it tests `mscale and
  // mscale_all_dim`); it does not treat the missing mscale as 1 (which would give 1.3689 / 1.2608
  // = 1.0857).
  j["rope_scaling"].erase("mscale");
  j["rope_scaling"]["mscale_all_dim"] = 0.707;
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_DOUBLE_EQ(c.rope.attention_factor(), 1.3688879454113936);
  EXPECT_FLOAT_EQ(RopeTable(c.rope, 64).attention_scaling(), 1.3688879454113936f);
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(192.0), 1e-15);
  // DeepSeek-V2 style: mscale == mscale_all_dim != 1 -> 1.
  j["rope_scaling"]["mscale"] = 0.707;
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j, "c").rope.attention_factor(), 1.0);
  // An explicit attention_factor wins.
  j["rope_scaling"]["attention_factor"] = 1.25;
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j, "c").rope.attention_factor(), 1.25);
  // beta_fast / beta_slow of 0 fall back to 32 / 1 (`or` in transformers).
  j = deepseek_v32();
  j["rope_scaling"]["beta_fast"] = 0;
  j["rope_scaling"]["beta_slow"] = nullptr;
  c = ModelConfig::from_json(j, "c");
  EXPECT_DOUBLE_EQ(c.rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope.beta_slow, 1.0);
  // A default rope never scales.
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(glm5(), "c").rope.attention_factor(), 1.0);
}

TEST(ModelConfig, YarnTruncateFalseKeepsFractionalCorrectionRange) {
  json j = deepseek_v32();
  j["rope_scaling"]["truncate"] = false;
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_FALSE(c.rope.truncate);
  expect_inv_freq(
      c.rope, {0x1.0p+0f, 0x1.33281ap-4f, 0x1.ccab84p-5f, 0x1.4ab0f6p-5f, 0x1.c603c4p-6f,
               0x1.3500d4p-6f, 0x1.a041bp-7f, 0x1.14c428p-7f, 0x1.6a0664p-8f, 0x1.cf5f94p-9f,
               0x1.1fcc8p-9f, 0x1.56206cp-10f, 0x1.7adedap-11f, 0x1.6ee22ep-12f, 0x1.f08dc4p-14f,
               0x1.17a8e2p-15f, 0x1.bf749ep-19f});
}

TEST(ModelConfig, DeepSeekV32PairingAndIndexerLayersAreFixed) {
  // transformers builds an indexer in every deepseek_v32 layer and ignores indexer_types.
  json j = deepseek_v32();
  j["num_hidden_layers"] = 2;
  j["first_k_dense_replace"] = 1;
  j["indexer_types"] = {"full", "shared"};
  j["index_topk_freq"] = 2;
  EXPECT_EQ(ModelConfig::from_json(j, "c").indexer_full, (std::vector<bool>{true, true}));
  // ... and hard-codes the pairing: interleaved MLA, half-split indexer.
  j = deepseek_v32();
  j["indexer_rope_interleave"] = true;
  EXPECT_THAT(error_of(j), HasSubstr("half-split RoPE in the indexer"));
  j = deepseek_v32();
  j["rope_interleave"] = false;
  EXPECT_THAT(error_of(j), HasSubstr("deepseek_v32 uses interleaved RoPE in MLA"));
  j = deepseek_v32();
  j["indexer_rope_interleave"] = false;
  j["rope_interleave"] = true;
  EXPECT_NO_THROW(ModelConfig::from_json(j, "c"));
}

TEST(ModelConfig, BadYarnParametersGiveClearErrors) {
  json j = deepseek_v32();
  j["rope_scaling"].erase("factor");
  EXPECT_THAT(error_of(j), HasSubstr("yarn rope parameters need 'factor'"));
  j = deepseek_v32();
  j["rope_scaling"]["partial_rotary_factor"] = 0.5;
  EXPECT_THAT(error_of(j), HasSubstr("partial_rotary_factor 0.5 is not supported"));
  j = deepseek_v32();
  j["rope_scaling"]["original_max_position_embeddings"] = 0;
  EXPECT_THAT(error_of(j),
              HasSubstr("'rope_scaling.original_max_position_embeddings' must be positive"));
  j = deepseek_v32();
  j["rope_scaling"]["truncate"] = "yes";
  EXPECT_THAT(error_of(j), HasSubstr("'rope_scaling.truncate' must be true or false"));
}

// ---------------------------------------------------------------------------------------------
// Hostile values: every one must end in an error naming the file and the field, never a NaN in the
// forward pass or a message built from freed memory.

// A model folder holding config.json (GLM-5's) and, when given, generation_config.json text.
class ConfigFolder {
 public:
  explicit ConfigFolder(const std::string& generation_config = "")
      : dir_(std::filesystem::temp_directory_path() /
             ("whittle_config_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++))) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    write_file_atomic(dir_ / "config.json", glm5().dump());
    if (!generation_config.empty())
      write_file_atomic(dir_ / "generation_config.json", generation_config);
  }
  ~ConfigFolder() { std::filesystem::remove_all(dir_); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
};

std::string load_error(const std::string& generation_config) {
  ConfigFolder folder(generation_config);
  try {
    ModelConfig::load(folder.dir());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, GenerationConfigErrorsNameTheFileAndTheField) {
  // Each message starts with the file's path (a heap use-after-free once made it garbage) and names
  // the field.
  const std::string file = "generation_config.json: ";
  EXPECT_THAT(
      load_error(R"({"eos_token_id": "x"})"),
      HasSubstr(file + "field 'eos_token_id' must be an integer or a list of integers, got \"x\""));
  EXPECT_THAT(load_error(R"({"eos_token_id": [1, "x"]})"),
              HasSubstr(file + "field 'eos_token_id' must hold integers, got \"x\""));
  EXPECT_THAT(load_error(R"({"eos_token_id": [1, 18446744073709551615]})"),
              HasSubstr(file + "field 'eos_token_id' holds 18446744073709551615, outside"));
  EXPECT_THAT(
      load_error(R"({"eos_token_id": 154880})"),
      HasSubstr(file + "field 'eos_token_id' holds 154880, outside the vocabulary [0, 154880)"));
  EXPECT_THAT(load_error(R"({"eos_token_id": -1})"),
              HasSubstr(file + "field 'eos_token_id' holds -1"));
  EXPECT_THAT(load_error(R"({"temperature": "hot"})"),
              HasSubstr(file + "field 'temperature' must be a number, got \"hot\""));
  EXPECT_THAT(load_error(R"({"temperature": -0.5})"),
              HasSubstr(file + "field 'temperature' must not be negative, got -0.5"));
  EXPECT_THAT(load_error(R"({"temperature": 1e999})"),
              HasSubstr(file + "malformed JSON"));  // nlohmann refuses it
  EXPECT_THAT(load_error(R"({"top_p": [0.9]})"),
              HasSubstr(file + "field 'top_p' must be a number, got an array"));
  EXPECT_THAT(load_error(R"({"top_p": 1.5})"),
              HasSubstr(file + "field 'top_p' must be in (0, 1], got 1.5"));
  EXPECT_THAT(load_error(R"({"do_sample": 1})"),
              HasSubstr(file + "field 'do_sample' must be true or false, got 1"));
  EXPECT_THAT(load_error(R"({"max_new_tokens": 0})"),
              HasSubstr(file + "field 'max_new_tokens' must be positive, got 0"));
  EXPECT_THAT(load_error(R"({"top_k": 0.5})"),
              HasSubstr(file + "field 'top_k' must be an integer, got 0.5"));
  EXPECT_THAT(load_error(R"({"top_k": -3})"),
              HasSubstr(file + "field 'top_k' must not be negative, got -3"));
  EXPECT_THAT(load_error(R"({"eos_token_id": )"), HasSubstr(file + "malformed JSON"));
  EXPECT_THAT(load_error("[1, 2]"), HasSubstr(file + "generation config is not a JSON object"));
  for (const char* text : {R"({"eos_token_id": "x"})", R"({"temperature": "hot"})", "{"})
    EXPECT_THAT(load_error(text),
                ::testing::StartsWith(std::filesystem::temp_directory_path().string()))
        << text;

  // A well-formed file replaces config.json's eos ids and keeps the sampling defaults.
  ConfigFolder folder(R"({"eos_token_id": [7, 9], "temperature": 0.8, "top_p": 0.95, "top_k": 50,
                          "do_sample": true, "max_new_tokens": 64, "pad_token_id": null})");
  const ModelConfig c = ModelConfig::load(folder.dir());
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{7, 9}));
  EXPECT_DOUBLE_EQ(c.temperature.value_or(-1), 0.8);
  EXPECT_DOUBLE_EQ(c.top_p.value_or(-1), 0.95);
  EXPECT_EQ(c.top_k.value_or(-1), 50);
  EXPECT_TRUE(c.do_sample.value_or(false));
  EXPECT_EQ(c.max_new_tokens.value_or(-1), 64);
}

TEST(ModelConfig, ValuesThatWouldGiveNanOrNonsenseAreRejected) {
  const auto with = [](const char* key, const json& value) {
    json j = glm5();
    j[key] = value;
    return error_of(j);
  };
  for (const json& eps : {json(-1), json(0), json(-1e-6), json(1e-50)})
    EXPECT_THAT(with("rms_norm_eps", eps), HasSubstr("m/config.json: field 'rms_norm_eps'")) << eps;
  EXPECT_THAT(with("rms_norm_eps", -1),
              HasSubstr("field 'rms_norm_eps' must be a positive number, got -1"));
  EXPECT_THAT(with("rms_norm_eps", 1e-50),
              HasSubstr("field 'rms_norm_eps' is 1e-50, outside float32's positive range"));
  // JSON text cannot hold infinity (nlohmann refuses 1e999), but a json built in memory can.
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_THAT(with("rms_norm_eps", inf),
              HasSubstr("field 'rms_norm_eps' must be a finite number, got inf"));
  for (const json& f : {json(0), json(-2.5), json(1e300)})
    EXPECT_THAT(with("routed_scaling_factor", f), HasSubstr("field 'routed_scaling_factor'")) << f;
  EXPECT_THAT(with("num_nextn_predict_layers", -1),
              HasSubstr("field 'num_nextn_predict_layers' is -1, outside [0, 65536]"));
  // 2^31 - 1 layers once cost 5 s and 0.5 GB of per-layer tables for a 1 KB config.json.
  json layers = glm5();
  layers["num_hidden_layers"] = 2147483647;
  layers.erase("mlp_layer_types");
  EXPECT_THAT(error_of(layers), HasSubstr("m/config.json: field 'num_hidden_layers' is 2147483647, "
                                          "beyond whittle's limit of 65536"));
  EXPECT_THAT(
      with("eos_token_id", json::array({1, 200000})),
      HasSubstr(
          "m/config.json: field 'eos_token_id' holds 200000, outside the vocabulary [0, 154880)"));
  EXPECT_THAT(with("rope_theta", inf), HasSubstr("field 'rope_theta' must be a finite number"));
  ModelConfig c = ModelConfig::from_json(glm5(), "c");
  expect_error(
      [&] {
        c.read_generation_config(json{{"temperature", -inf}}, "g.json");
      },
      {"g.json: field 'temperature' must be a finite number, got -inf"});
}

TEST(ModelConfig, YarnValuesThatWouldGiveNanAreRejected) {
  const auto with = [](const char* key, const json& value) {
    json j = deepseek_v32();
    j["rope_scaling"][key] = value;
    return error_of(j);
  };
  EXPECT_THAT(
      with("factor", 0),
      HasSubstr("m/config.json: field 'rope_scaling.factor' must be a positive number, got 0"));
  EXPECT_THAT(with("factor", -40),
              HasSubstr("field 'rope_scaling.factor' must be a positive number, got -40"));
  EXPECT_THAT(with("factor", 1e-60),
              HasSubstr("field 'rope_scaling.factor' is 1e-60, outside float32"));
  EXPECT_THAT(with("factor", "40"),
              HasSubstr("field 'rope_scaling.factor' must be a number, got \"40\""));
  EXPECT_THAT(with("beta_fast", -32), HasSubstr("field 'rope_scaling.beta_fast' must be positive"));
  EXPECT_THAT(with("beta_slow", -1), HasSubstr("field 'rope_scaling.beta_slow' must be positive"));
  EXPECT_THAT(with("attention_factor", 0),
              HasSubstr("field 'rope_scaling.attention_factor' must be a positive"));
  EXPECT_THAT(with("original_max_position_embeddings", -1),
              HasSubstr("field 'rope_scaling.original_max_position_embeddings' must be positive"));
  // mscale(40, m) = 0.1 m ln 40 + 1 turns negative below m = -10 / ln 40; cos/sin are scaled by
  // mscale(40, mscale) / mscale(40, mscale_all_dim).
  EXPECT_THAT(with("mscale_all_dim", -10), HasSubstr("give an attention factor of -0.5"));
  json j = deepseek_v32();
  j["rope_scaling"].erase("mscale");
  j["rope_scaling"]["mscale_all_dim"] = 1e308;  // the softmax scale squares mscale(40, 1e308)
  EXPECT_THAT(error_of(j), HasSubstr("gives an attention softmax scale of inf"));
  j = deepseek_v32();
  j["rope_theta"] = 1;
  EXPECT_THAT(error_of(j), HasSubstr("rope_theta must not be 1 with yarn"));
  j["rope_scaling"] = {{"type", "default"}};
  EXPECT_NO_THROW(ModelConfig::from_json(j, "c"));  // theta 1 is odd but finite without YaRN
  j = deepseek_v32();
  j["rope_parameters"] = j["rope_scaling"];
  j.erase("rope_scaling");
  j["rope_parameters"]["factor"] = 0;
  EXPECT_THAT(error_of(j), HasSubstr("field 'rope_parameters.factor' must be a positive number"));
}

}  // namespace
}  // namespace whittle
