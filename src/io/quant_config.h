// QuantConfig: config.json's "quantization_config" for GPTQ-layout int4/int8 checkpoints, read with
// vLLM's rules, so that whittle and vLLM agree on which Linear is quantized and how:
//
// - quant_method "gptq" (GPTQConfig / GPTQMarlinConfig.from_config, utils/gptq_utils.py):
//   `bits`, `group_size`, `desc_act` are required, `sym` is optional (absent: zero points are read
//   from qzeros, as vLLM's plain gptq kernel does), `checkpoint_format` "gptq" (v1: qzeros hold
//   zero - 1; also when absent or "") or "gptq_v2" (the zero itself), `lm_head` (default false).
//   `dynamic` maps regexes to overrides, checked in file order, first match wins, matched with
//   Python's re.match (anchored at the start only, not fullmatch) against the whole module name,
//   "model." included: a "-:" key keeps the module in 16 bit, a "+:" or unprefixed key overrides
//   bits / group_size / sym / desc_act (fields it does not set keep the defaults).
//   `modules_in_block_to_quantize` (strings or lists of strings, flattened), when non-empty: a
//   module is quantized only if one entry is a substring of its name. When absent vLLM infers the
//   list from the checkpoint's integer tensors (maybe_update_config), so the file decides;
//   for_module cannot see the file and answers from the rules alone.
// - quant_method "auto-round" (vLLM's AutoRoundConfig, now INCConfig): only packing_format
//   "auto_round:auto_gptq" (the GPTQ v1 layout, also the default) with data_type "int" is read.
//   `bits`, `group_size` required, `sym` default true. `block_name_to_quantize` (or
//   `to_quant_block_names`; a comma-separated string or a list): a module is quantized only if its
//   name starts with one. `extra_config` maps a module name (exact match, checked first) or a
//   regex (a key holding one of *+?^$()[]{}|\, matched with re.search, first match in file order)
//   to bits / group_size / sym; bits >= 16 keeps the module in 16 bit. lm_head is quantized only
//   by an exact extra_config entry. `dynamic` and `checkpoint_format` are not read (vLLM does not).
//
// Neither method reads `modules_to_not_convert`; whittle does not either.
//
// Names: for_module takes the Hugging Face (checkpoint) module name, which is also vLLM's prefix
// for every unfused Linear. vLLM matches `dynamic` against its fused modules instead
// (GLM-5/DeepSeek: `self_attn.fused_qkv_a_proj` for q_a_proj + kv_a_proj_with_mqa,
// `mlp.gate_up_proj` for a dense or shared gate/up pair, `mlp.experts` once for all experts of a
// layer): for_module_as_vllm applies the rules to that name, so a caller can find rules that split
// a fused module.
//
// Regexes are compiled with PCRE2 (UTF, Unicode properties), whose syntax is a superset of Python's
// for the patterns quantizers write; a key that does not compile is an Error naming it.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace whittle {

struct ModuleQuant {
  int bits = 4;              // 4 or 8
  int64_t group_size = 128;  // -1 = one group for the whole row (all input features)
  bool sym = true;           // zero point fixed at 2^(bits-1); false: read qzeros
  bool desc_act = false;     // act-order: g_idx permutes the input features
  bool operator==(const ModuleQuant&) const = default;
};

// "int4 g128", "int8 g-1 asym act-order": how `whittle info` prints a module's settings.
std::string describe(const ModuleQuant& q);

class PythonRegex;  // a compiled pattern (quant_config.cc)

class QuantConfig {
 public:
  // Parses config.json's "quantization_config". nullopt when it is absent (or null), or when it is
  // FP8 block quantization (quant_method "fp8"), which the weight loader reads from the tensors
  // themselves. Any other method, format or malformed value is an Error naming `source`, the field
  // and what was expected. The ordered_json overload keeps the file's key order, which decides
  // `dynamic` and `extra_config` (first match wins); the json overload (keys sorted) refuses a
  // config where that order matters.
  static std::optional<QuantConfig> from_config_json(const nlohmann::ordered_json& config,
                                                     const std::string& source);
  static std::optional<QuantConfig> from_config_json(const nlohmann::json& config,
                                                     const std::string& source);

  // The settings for a Linear by its Hugging Face module name ("model.layers.3.mlp.experts.5.
  // gate_proj", "lm_head"), or nullopt when the config keeps it in 16 bit.
  std::optional<ModuleQuant> for_module(std::string_view module) const;
  // The same rules applied to the module vLLM builds for it (vllm_module_name), as vLLM decides.
  std::optional<ModuleQuant> for_module_as_vllm(std::string_view module) const;
  // vLLM's name for the (fused) module that holds a Hugging Face Linear in GLM-5 / DeepSeek-V3.2
  // (vllm/model_executor/models/deepseek_v2.py): "...mlp.experts.5.gate_proj" -> "...mlp.experts",
  // "...self_attn.q_a_proj" -> "...self_attn.fused_qkv_a_proj", "...mlp.up_proj" ->
  // "...mlp.gate_up_proj"; other names are unchanged.
  static std::string vllm_module_name(std::string_view module);

  // A `dynamic` (gptq) or `extra_config` (auto-round) entry.
  struct Rule {
    std::string key;          // as written in config.json
    bool skip = false;        // gptq "-:": keeps matching modules in 16 bit
    bool exact = false;       // auto-round: a plain module name, compared whole
    std::optional<int> bits;  // auto-round: >= 16 keeps the module in 16 bit
    std::optional<int64_t> group_size;
    std::optional<bool> sym, desc_act;
    std::shared_ptr<const PythonRegex> regex;  // null for exact rules
  };

  std::string quant_method;    // "gptq" or "auto-round"
  int checkpoint_format = 1;   // 1: GPTQ v1 (qzeros store zero - 1), 2: gptq_v2 (the zero)
  ModuleQuant defaults;        // the top-level bits / group_size / sym / desc_act
  bool lm_head = false;        // gptq: lm_head is quantized (with the rules applied)
  std::string packing_format;  // auto-round only: "auto_round:auto_gptq"
  std::vector<Rule> rules;     // in file order
  std::vector<std::string> modules_in_block_to_quantize;  // gptq; empty: every module
  std::vector<std::string> block_name_to_quantize;        // auto-round; empty: every module
  std::string source;                                     // the config.json named in errors

 private:
  std::optional<ModuleQuant> resolve(std::string_view rule_name, std::string_view list_name,
                                     bool check_list) const;
  std::optional<ModuleQuant> resolve_auto_round(std::string_view module) const;
  bool matches(const Rule& rule, std::string_view name, bool anchored) const;
};

}  // namespace whittle
