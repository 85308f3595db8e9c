// libFuzzer target for ModelConfig::from_json, the parser of a model's config.json (outside input:
// any folder a user points whittle at), and ModelConfig::read_generation_config, the reader of
// generation_config.json, which gets the same JSON. Any JSON either parses or throws
// whittle::Error; any other exception, a crash or a sanitizer report is a finding. A parsed config
// must satisfy what the forward pass relies on: positive sizes, top-k within the expert count,
// whole expert groups, a dense/MoE and an indexer kind for every layer, and norms, scales and RoPE
// factors that are positive and finite (in float32 where the forward pass uses float32). A
// generation config's eos ids must be in the vocabulary and its sampling defaults in range.
// The same input read with its key order (as ModelConfig::load reads config.json) feeds
// QuantConfig, the reader of quantization_config: a parsed one must hold only 4/8-bit settings
// with a positive group size or -1, for every module name asked, and its errors name the file.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/model_config.h"
#include "io/quant_config.h"
#include "util/error.h"

namespace {

bool valid(const whittle::ModuleQuant& q) {
  return (q.bits == 4 || q.bits == 8) && (q.group_size > 0 || q.group_size == -1) &&
         !(q.group_size == -1 && q.desc_act);
}

// GLM-5 module names of every kind, and names a rule might trip over.
constexpr const char* kModules[] = {
    "model.layers.0.self_attn.q_a_proj",
    "model.layers.3.self_attn.kv_a_proj_with_mqa",
    "model.layers.10.self_attn.o_proj",
    "model.layers.2.self_attn.indexer.weights_proj",
    "model.layers.0.mlp.gate_proj",
    "model.layers.3.mlp.experts.17.down_proj",
    "model.layers.3.mlp.shared_experts.up_proj",
    "model.layers.78.eh_proj",
    "lm_head",
    "",
};

void check_quant_config(const nlohmann::ordered_json& j) {
  std::optional<whittle::QuantConfig> q;
  try {
    q = whittle::QuantConfig::from_config_json(j, std::string("fuzz/") + "config.json");
  } catch (const whittle::Error& e) {
    if (std::string_view(e.what()).substr(0, 17) != "fuzz/config.json:") __builtin_trap();
    return;
  }
  if (!q) return;
  if (!valid(q->defaults) || (q->checkpoint_format != 1 && q->checkpoint_format != 2))
    __builtin_trap();
  for (const char* module : kModules) {
    try {
      for (const auto& m : {q->for_module(module), q->for_module_as_vllm(module)})
        if (m && !valid(*m)) __builtin_trap();
    } catch (const whittle::Error& e) {  // a regex past PCRE2's match limit
      if (std::string_view(e.what()).substr(0, 17) != "fuzz/config.json:") __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<char> buffer(data, data + size);  // exactly sized: reads past the end are reported
  const nlohmann::json j =
      nlohmann::json::parse(std::string_view(buffer.data(), buffer.size()), nullptr,
                            /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const auto ordered = nlohmann::ordered_json::parse(std::string_view(buffer.data(), buffer.size()),
                                                     nullptr, /*allow_exceptions=*/false);
  check_quant_config(ordered);

  // As generation_config.json, applied to a config with a 2^20-token vocabulary. The source name is
  // a temporary on purpose: the reader once kept a reference to it (a use-after-free in errors).
  whittle::ModelConfig g;
  g.vocab_size = int64_t{1} << 20;
  try {
    g.read_generation_config(j, std::string("fuzz/") + "generation_config.json");
    for (int64_t id : g.eos_token_ids)
      if (id < 0 || id >= g.vocab_size) __builtin_trap();
    if (g.temperature && !(std::isfinite(*g.temperature) && *g.temperature >= 0)) __builtin_trap();
    if (g.top_p && !(*g.top_p >= 0 && *g.top_p <= 1)) __builtin_trap();
    if (g.top_k && *g.top_k < 0) __builtin_trap();
  } catch (const whittle::Error& e) {
    if (std::string_view(e.what()).substr(0, 28) != "fuzz/generation_config.json:")
      __builtin_trap();
  }

  whittle::ModelConfig c;
  try {
    c = whittle::ModelConfig::from_json(j, "fuzz/config.json");
  } catch (const whittle::Error&) {
    // Read in file order too, as ModelConfig::load does (quantization rules need it).
    try {
      c = whittle::ModelConfig::from_json(ordered, "fuzz/config.json");
    } catch (const whittle::Error&) {
      return 0;
    }
  }
  if (c.hidden_size <= 0 || c.vocab_size <= 0 || c.num_hidden_layers <= 0 ||
      c.num_attention_heads <= 0)
    __builtin_trap();
  // Per-layer kinds cover every layer (first_k_dense_replace may exceed the layer count: all
  // dense).
  const auto layers = static_cast<size_t>(c.num_hidden_layers);
  if (c.layer_is_moe.size() != layers || c.indexer_full.size() != layers || !c.indexer_full[0])
    __builtin_trap();
  if (c.n_routed_experts > 0) {
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.n_routed_experts) __builtin_trap();
    if (c.n_group <= 0 || c.n_routed_experts % c.n_group != 0) __builtin_trap();
    if (c.topk_group <= 0 || c.topk_group > c.n_group) __builtin_trap();
  }
  if (c.index_topk <= 0 || c.max_position_embeddings <= 0) __builtin_trap();
  if (c.num_nextn_predict_layers < 0) __builtin_trap();
  for (int64_t id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size) __builtin_trap();
  const auto positive_float = [](double x) {
    const float f = static_cast<float>(x);
    return std::isfinite(x) && x > 0 && std::isfinite(f) && f > 0;
  };
  const auto positive = [](double x) { return std::isfinite(x) && x > 0; };
  if (!positive_float(c.rms_norm_eps) || !positive_float(c.routed_scaling_factor)) __builtin_trap();
  if (!positive(c.softmax_scale()) || !positive(c.rope.attention_factor()) ||
      !positive(c.rope.theta))
    __builtin_trap();
  if (c.rope.type == "yarn") {
    if (!positive_float(c.rope.factor) || !positive(c.rope.beta_fast) ||
        !positive(c.rope.beta_slow) || c.rope.theta == 1.0)
      __builtin_trap();
  }
  return 0;
}
