// quantization_config as vLLM reads it: the GPTQ and AutoRound (GPTQ layout) keys, `dynamic`'s
// first-match re.match rules, the module lists, the refusals, and the errors naming the field.
#include "io/quant_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/model_config.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {
using ojson = nlohmann::ordered_json;
using ::testing::HasSubstr;

// What AutoRound writes for --format auto_gptq (shared/specs/autoround_gptq.md §4.1).
ojson autoround_gptq() {
  return ojson::parse(R"({"quantization_config": {
    "quant_method": "gptq", "provider": "auto-round", "autoround_version": "0.12.0",
    "bits": 4, "group_size": 128, "sym": true, "data_type": "int", "desc_act": false,
    "true_sequential": false, "damp_percent": 0.01, "lm_head": false}})");
}

QuantConfig parse(const ojson& j) {
  std::optional<QuantConfig> q = QuantConfig::from_config_json(j, "m/config.json");
  if (!q) throw Error("no quantization_config");
  return *q;
}

QuantConfig with_dynamic(const char* dynamic_json) {
  ojson j = autoround_gptq();
  j["quantization_config"]["dynamic"] = ojson::parse(dynamic_json);
  return parse(j);
}

std::string error_of(const ojson& j) {
  try {
    QuantConfig::from_config_json(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string error_with(const char* key, const ojson& value) {
  ojson j = autoround_gptq();
  j["quantization_config"][key] = value;
  return error_of(j);
}

const ModuleQuant kInt4G128{4, 128, true, false};

TEST(QuantConfig, AbsentOrFp8IsNotAGptqConfig) {
  EXPECT_FALSE(QuantConfig::from_config_json(ojson::object(), "c"));
  EXPECT_FALSE(
      QuantConfig::from_config_json(ojson::parse(R"({"quantization_config": null})"), "c"));
  EXPECT_FALSE(QuantConfig::from_config_json(
      ojson::parse(R"({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3"}})"), "c"));
}

TEST(QuantConfig, ReadsWhatAutoRoundWritesForGptq) {
  const QuantConfig q = parse(autoround_gptq());
  EXPECT_EQ(q.quant_method, "gptq");
  EXPECT_EQ(q.checkpoint_format, 1);  // AutoRound writes no checkpoint_format: v1
  EXPECT_EQ(q.defaults, kInt4G128);
  EXPECT_EQ(q.for_module("model.layers.3.mlp.experts.5.gate_proj"), kInt4G128);
  EXPECT_EQ(q.for_module("model.layers.0.self_attn.q_a_proj"), kInt4G128);
  EXPECT_FALSE(q.for_module("lm_head"));  // "lm_head": false
}

TEST(QuantConfig, CheckpointFormatAndLmHead) {
  ojson j = autoround_gptq();
  j["quantization_config"]["checkpoint_format"] = "gptq_v2";
  j["quantization_config"]["lm_head"] = true;
  const QuantConfig q = parse(j);
  EXPECT_EQ(q.checkpoint_format, 2);
  EXPECT_EQ(q.for_module("lm_head"), kInt4G128);
  j["quantization_config"]["checkpoint_format"] = "gptq";
  EXPECT_EQ(parse(j).checkpoint_format, 1);
  j["quantization_config"]["checkpoint_format"] = "";  // vLLM's default: v1
  EXPECT_EQ(parse(j).checkpoint_format, 1);
  EXPECT_THAT(error_with("checkpoint_format", "marlin"),
              HasSubstr("m/config.json: field 'quantization_config.checkpoint_format' is "
                        "\"marlin\"; whittle reads \"gptq\""));
}

TEST(QuantConfig, MissingSymMeansZerosFromTheFile) {
  ojson j = autoround_gptq();
  j["quantization_config"].erase("sym");
  EXPECT_FALSE(parse(j).defaults.sym);
}

TEST(QuantConfig, ActOrderWithOneGroupPerRowIsNoActOrder) {
  const QuantConfig q = with_dynamic(R"({"+:.*o_proj": {"group_size": -1, "desc_act": true}})");
  EXPECT_EQ(q.for_module("model.layers.1.self_attn.o_proj"), (ModuleQuant{4, -1, true, false}));
}

TEST(QuantConfig, DynamicSkipKeepsSixteenBit) {
  // AutoRound's ignore-list rules (spec §4.1).
  const QuantConfig q = with_dynamic(
      R"({"-:.*weights_proj.*": {}, "-:.*mlp\\.gate.*": {}, "-:.*shared_experts.*": {}})");
  EXPECT_FALSE(q.for_module("model.layers.4.self_attn.indexer.weights_proj"));
  EXPECT_FALSE(q.for_module("model.layers.4.mlp.shared_experts.down_proj"));
  EXPECT_EQ(q.for_module("model.layers.4.self_attn.indexer.wq_b"), kInt4G128);
  // The spec's caveat: ".*mlp\.gate.*" also matches gate_proj (substring regex).
  EXPECT_FALSE(q.for_module("model.layers.0.mlp.gate_proj"));
}

TEST(QuantConfig, DynamicOverrideSetsOnlyItsFields) {
  const QuantConfig q =
      with_dynamic(R"({"+:.*\\.(?:1[0-5])\\..*": {"bits": 8}, ".*\\.down_proj": {"group_size": 32,
                      "sym": false}})");
  EXPECT_EQ(q.for_module("model.layers.12.self_attn.o_proj"), (ModuleQuant{8, 128, true, false}));
  // An unprefixed key is an override, as "+:".
  EXPECT_EQ(q.for_module("model.layers.2.mlp.experts.1.down_proj"),
            (ModuleQuant{4, 32, false, false}));
  EXPECT_EQ(q.for_module("model.layers.2.mlp.experts.1.up_proj"), kInt4G128);
}

TEST(QuantConfig, DynamicFirstMatchWinsInFileOrder) {
  // Both rules match layer 10's down_proj: the one written first decides.
  const QuantConfig skip_first =
      with_dynamic(R"({"-:.*layers\\.10\\..*": {}, "+:.*down_proj": {"bits": 8}})");
  EXPECT_FALSE(skip_first.for_module("model.layers.10.mlp.down_proj"));
  const QuantConfig override_first =
      with_dynamic(R"({"+:.*down_proj": {"bits": 8}, "-:.*layers\\.10\\..*": {}})");
  EXPECT_EQ(override_first.for_module("model.layers.10.mlp.down_proj"),
            (ModuleQuant{8, 128, true, false}));
  // A later matching override is not merged into the first one.
  const QuantConfig two =
      with_dynamic(R"({"+:.*layers\\.10\\..*": {"group_size": 64}, "+:.*down_proj": {"bits": 8}})");
  EXPECT_EQ(two.for_module("model.layers.10.mlp.down_proj"), (ModuleQuant{4, 64, true, false}));
}

TEST(QuantConfig, DynamicIsReMatchAnchoredAtTheStartOnly) {
  // re.match: anchored at the start of the whole name ("model." included), not at the end.
  const QuantConfig q = with_dynamic(R"({"-:layers\\.3\\.": {}, "-:model\\.layers\\.4": {}})");
  EXPECT_EQ(q.for_module("model.layers.3.self_attn.o_proj"), kInt4G128);  // not at the start
  EXPECT_FALSE(q.for_module("model.layers.4.self_attn.o_proj"));  // a prefix match is enough
  // Not fullmatch: "model\.layers\.4" also matches "model.layers.40...".
  EXPECT_FALSE(q.for_module("model.layers.40.self_attn.o_proj"));
}

TEST(QuantConfig, ModulesInBlockToQuantizeIsASubstringTest) {
  ojson j = autoround_gptq();
  j["quantization_config"]["modules_in_block_to_quantize"] =
      ojson::parse(R"([["self_attn.q_a_proj", "mlp.experts.1"], ["self_attn.o_proj"]])");
  const QuantConfig q = parse(j);
  EXPECT_EQ(q.for_module("model.layers.7.self_attn.q_a_proj"), kInt4G128);
  EXPECT_EQ(q.for_module("model.layers.7.self_attn.o_proj"), kInt4G128);
  EXPECT_FALSE(q.for_module("model.layers.7.self_attn.kv_b_proj"));
  // A substring, as vLLM tests it: "mlp.experts.1" also names experts 1N.
  EXPECT_EQ(q.for_module("model.layers.7.mlp.experts.1.gate_proj"), kInt4G128);
  EXPECT_EQ(q.for_module("model.layers.7.mlp.experts.12.down_proj"), kInt4G128);
  EXPECT_FALSE(q.for_module("model.layers.7.mlp.experts.2.gate_proj"));
}

TEST(QuantConfig, VllmMatchesItsFusedModules) {
  EXPECT_EQ(QuantConfig::vllm_module_name("model.layers.3.mlp.experts.5.gate_proj"),
            "model.layers.3.mlp.experts");
  EXPECT_EQ(QuantConfig::vllm_module_name("model.layers.3.mlp.experts.5.down_proj"),
            "model.layers.3.mlp.experts");
  EXPECT_EQ(QuantConfig::vllm_module_name("model.layers.3.mlp.shared_experts.up_proj"),
            "model.layers.3.mlp.shared_experts.gate_up_proj");
  EXPECT_EQ(QuantConfig::vllm_module_name("model.layers.0.mlp.gate_proj"),
            "model.layers.0.mlp.gate_up_proj");
  EXPECT_EQ(QuantConfig::vllm_module_name("model.layers.0.mlp.down_proj"),
            "model.layers.0.mlp.down_proj");
  EXPECT_EQ(QuantConfig::vllm_module_name("model.layers.0.self_attn.kv_a_proj_with_mqa"),
            "model.layers.0.self_attn.fused_qkv_a_proj");
  EXPECT_EQ(QuantConfig::vllm_module_name("lm_head"), "lm_head");

  // A per-expert rule applies to the checkpoint's module but not to vLLM's FusedMoE, which is
  // decided once per layer.
  const QuantConfig q = with_dynamic(R"({"+:.*experts\\.5\\..*": {"bits": 8}})");
  const std::string expert = "model.layers.3.mlp.experts.5.gate_proj";
  EXPECT_EQ(q.for_module(expert), (ModuleQuant{8, 128, true, false}));
  EXPECT_EQ(q.for_module_as_vllm(expert), kInt4G128);
}

TEST(QuantConfig, BadRegexIsAnErrorNamingTheKey) {
  ojson j = autoround_gptq();
  j["quantization_config"]["dynamic"] = ojson::parse(R"({"-:.*(unclosed": {}})");
  EXPECT_THAT(error_of(j), HasSubstr("m/config.json: field 'quantization_config.dynamic' has key "
                                     "\"-:.*(unclosed\" whose regex does not compile"));
}

TEST(QuantConfig, RuleOrderNeedsTheOrderedJson) {
  ojson j = autoround_gptq();
  j["quantization_config"]["dynamic"] = ojson::parse(R"({"-:b": {}, "-:a": {}})");
  const nlohmann::json sorted = j;  // keys sorted: "-:a" before "-:b"
  try {
    QuantConfig::from_config_json(sorted, "m/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("first match wins"));
  }
  // One rule has no order to lose.
  j["quantization_config"]["dynamic"] = ojson::parse(R"({"-:a": {}})");
  EXPECT_TRUE(QuantConfig::from_config_json(nlohmann::json(j), "m/config.json"));
}

TEST(QuantConfig, MalformedValuesNameTheFieldAndWhatWasExpected) {
  EXPECT_THAT(error_with("bits", 3),
              HasSubstr("m/config.json: field 'quantization_config.bits' is 3; whittle reads 4- "
                        "and 8-bit GPTQ weights"));
  EXPECT_THAT(error_with("bits", "4"),
              HasSubstr("field 'quantization_config.bits' must be an integer (4 or 8), got \"4\""));
  EXPECT_THAT(error_with("group_size", 0),
              HasSubstr("field 'quantization_config.group_size' must be a positive integer or -1"));
  EXPECT_THAT(error_with("group_size", -2), HasSubstr("group_size"));
  EXPECT_THAT(error_with("sym", 1),
              HasSubstr("field 'quantization_config.sym' must be true or false, got 1"));
  EXPECT_THAT(error_with("desc_act", nullptr),
              HasSubstr("missing required field 'quantization_config.desc_act'"));
  EXPECT_THAT(error_with("dynamic", ojson::array()),
              HasSubstr("field 'quantization_config.dynamic' must be an object"));
  EXPECT_THAT(error_with("dynamic", ojson::parse(R"({"+:x": {"bits": 16}})")),
              HasSubstr("field 'quantization_config.dynamic[\"+:x\"].bits' is 16"));
  EXPECT_THAT(error_with("dynamic", ojson::parse(R"({"+:x": 4})")),
              HasSubstr("maps \"+:x\" to 4; expected an object"));
  EXPECT_THAT(error_with("modules_in_block_to_quantize", "q_proj"),
              HasSubstr("'quantization_config.modules_in_block_to_quantize' must be a list"));
  EXPECT_THAT(error_with("quant_method", "awq"),
              HasSubstr("field 'quantization_config.quant_method' is \"awq\"; whittle reads "
                        "\"gptq\" and \"auto-round\""));
  EXPECT_THAT(error_with("quant_method", nullptr),
              HasSubstr("missing required field 'quantization_config.quant_method'"));
  EXPECT_THAT(error_of(ojson::parse(R"({"quantization_config": [1]})")),
              HasSubstr("field 'quantization_config' must be an object, got an array"));
}

// What AutoRound writes for its own format with sym int weights (export_to_autoround).
ojson autoround_native() {
  return ojson::parse(R"({"quantization_config": {
    "quant_method": "auto-round", "packing_format": "auto_round:auto_gptq", "bits": 4,
    "group_size": 128, "sym": true, "data_type": "int", "autoround_version": "0.12.0",
    "block_name_to_quantize": "model.layers",
    "extra_config": {
      "model.layers.0.mlp.gate_proj": {"bits": 16},
      "model.layers.1.self_attn.o_proj": {"bits": 8, "group_size": 32},
      ".*shared_experts.*": {"bits": 16},
      ".*experts\\.[0-3]\\.down_proj": {"group_size": 64},
      ".*experts\\.1\\..*": {"bits": 8}}}})");
}

TEST(QuantConfig, AutoRoundInGptqLayout) {
  const QuantConfig q = parse(autoround_native());
  EXPECT_EQ(q.quant_method, "auto-round");
  EXPECT_EQ(q.checkpoint_format, 1);
  EXPECT_EQ(q.for_module("model.layers.2.self_attn.q_b_proj"), kInt4G128);
  // Exact names first.
  EXPECT_FALSE(q.for_module("model.layers.0.mlp.gate_proj"));
  EXPECT_EQ(q.for_module("model.layers.1.self_attn.o_proj"), (ModuleQuant{8, 32, true, false}));
  // Regex keys with re.search, first match in file order.
  EXPECT_FALSE(q.for_module("model.layers.3.mlp.shared_experts.up_proj"));
  EXPECT_EQ(q.for_module("model.layers.3.mlp.experts.1.down_proj"),
            (ModuleQuant{4, 64, true, false}));
  EXPECT_EQ(q.for_module("model.layers.3.mlp.experts.1.up_proj"),
            (ModuleQuant{8, 128, true, false}));
  // Outside block_name_to_quantize, and lm_head: 16 bit.
  EXPECT_FALSE(q.for_module("lm_head"));
  EXPECT_FALSE(q.for_module("mtp.eh_proj"));
}

TEST(QuantConfig, AutoRoundOtherFormatsAreRefused) {
  ojson j = autoround_native();
  j["quantization_config"]["packing_format"] = "auto_round:auto_awq";
  EXPECT_THAT(error_of(j),
              HasSubstr("m/config.json: field 'quantization_config.packing_format' is "
                        "\"auto_round:auto_awq\"; whittle reads AutoRound's GPTQ layout only"));
  j["quantization_config"]["packing_format"] = "auto_round:exllamav2";
  EXPECT_THAT(error_of(j), HasSubstr("packing_format"));
  j = autoround_native();
  j["quantization_config"]["data_type"] = "nv_fp";
  EXPECT_THAT(error_of(j), HasSubstr("field 'quantization_config.data_type' is \"nv_fp\""));
  j = autoround_native();
  j["quantization_config"].erase("packing_format");  // vLLM's default is the GPTQ layout
  EXPECT_EQ(parse(j).packing_format, "auto_round:auto_gptq");
  j["quantization_config"]["extra_config"]["bad[("] = ojson::object();
  EXPECT_THAT(error_of(j), HasSubstr("key \"bad[(\" whose regex does not compile"));
}

TEST(QuantConfig, ModelConfigCarriesIt) {
  ojson j = ojson::parse(R"({"model_type": "glm_moe_dsa", "vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 1, "num_attention_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 16,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "index_head_dim": 16,
    "intermediate_size": 32, "first_k_dense_replace": 1})");
  EXPECT_FALSE(ModelConfig::from_json(j, "c").quantization);
  j["quantization_config"] = autoround_gptq()["quantization_config"];
  j["quantization_config"]["dynamic"] = ojson::parse(R"({"-:b": {}, "-:a": {}})");
  const ModelConfig c = ModelConfig::from_json(j, "c");
  ASSERT_TRUE(c.quantization);
  EXPECT_EQ(c.quantization->rules.at(0).key, "-:b");  // file order kept
  expect_error([&] { ModelConfig::from_json(nlohmann::json(j), "m/config.json"); },
               {"m/config.json", "first match wins"});

  ScratchDir dir;
  write_file_atomic(dir.path() / "config.json", j.dump());
  const ModelConfig loaded = ModelConfig::load(dir.path());
  ASSERT_TRUE(loaded.quantization);
  EXPECT_EQ(loaded.quantization->rules.at(0).key, "-:b");
}

}  // namespace
}  // namespace whittle
