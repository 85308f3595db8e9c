// libFuzzer target for ModelConfig::from_json, the parser of a model's config.json (outside input:
// any folder a user points whittle at). Any JSON either parses into a config or throws
// whittle::Error; any other exception, a crash or a sanitizer report is a finding. A parsed config
// must satisfy what the forward pass relies on: positive sizes, top-k within the expert count,
// whole expert groups, a dense/MoE and an indexer kind for every layer.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/model_config.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<char> buffer(data, data + size);  // exactly sized: reads past the end are reported
  const nlohmann::json j = nlohmann::json::parse(std::string_view(buffer.data(), buffer.size()), nullptr,
                                                 /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  whittle::ModelConfig c;
  try {
    c = whittle::ModelConfig::from_json(j, "fuzz/config.json");
  } catch (const whittle::Error&) {
    return 0;
  }
  if (c.hidden_size <= 0 || c.vocab_size <= 0 || c.num_hidden_layers <= 0 || c.num_attention_heads <= 0)
    __builtin_trap();
  // Per-layer kinds cover every layer (first_k_dense_replace may exceed the layer count: all dense).
  const auto layers = static_cast<size_t>(c.num_hidden_layers);
  if (c.layer_is_moe.size() != layers || c.indexer_full.size() != layers || !c.indexer_full[0]) __builtin_trap();
  if (c.n_routed_experts > 0) {
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.n_routed_experts) __builtin_trap();
    if (c.n_group <= 0 || c.n_routed_experts % c.n_group != 0) __builtin_trap();
    if (c.topk_group <= 0 || c.topk_group > c.n_group) __builtin_trap();
  }
  if (c.index_topk <= 0 || c.max_position_embeddings <= 0) __builtin_trap();
  (void)c.softmax_scale();
  return 0;
}
