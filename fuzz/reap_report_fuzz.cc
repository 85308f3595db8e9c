// libFuzzer target for parse_report_stats, the reader of a previous run's reap_report.json
// (`whittle prune --stats FILE`: outside input, a file a user points whittle at). Any text either
// parses or throws whittle::Error naming the source; parsed statistics hold, for exactly the MoE
// layers of the model, one finite non-negative set of numbers per routed expert, and nothing for
// dense layers. Any other exception, a crash or a sanitizer report is a finding.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/model_config.h"
#include "prune/reap_report.h"
#include "util/error.h"

namespace {

// A small GlmMoeDsa: layer 0 dense, layers 1..3 MoE with 8 routed experts.
const whittle::ModelConfig& config() {
  static const whittle::ModelConfig c = whittle::ModelConfig::from_json(nlohmann::json::parse(R"({
        "architectures": ["GlmMoeDsaForCausalLM"], "model_type": "glm_moe_dsa",
        "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
        "moe_intermediate_size": 8, "num_hidden_layers": 4, "num_attention_heads": 2,
        "num_key_value_heads": 2, "n_routed_experts": 8, "n_shared_experts": 1,
        "num_experts_per_tok": 2, "first_k_dense_replace": 1, "q_lora_rank": 8,
        "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4,
        "index_n_heads": 2, "index_head_dim": 8, "index_topk": 4,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "n_group": 1, "topk_group": 1,
        "routed_scaling_factor": 2.5, "norm_topk_prob": true})"),
                                                                        "fuzz-config");
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const whittle::ModelConfig& c = config();
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::vector<whittle::ExpertStats>> stats;
  try {
    stats = whittle::parse_report_stats(text, "report.json", c);
  } catch (const whittle::Error& e) {
    if (std::strncmp(e.what(), "report.json", 11) != 0) __builtin_trap();
    return 0;
  }
  if (static_cast<int64_t>(stats.size()) != c.num_hidden_layers) __builtin_trap();
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const auto& layer = stats[static_cast<size_t>(L)];
    if (static_cast<int64_t>(layer.size()) != (c.layer_is_moe[L] ? c.n_routed_experts : 0))
      __builtin_trap();
    for (const whittle::ExpertStats& s : layer)
      for (double v : {s.count, s.sum_gate_norm, s.sum_norm, s.sum_gate, s.max_norm})
        if (!std::isfinite(v) || v < 0) __builtin_trap();
  }
  return 0;
}
