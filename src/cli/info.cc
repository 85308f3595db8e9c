// `whittle info MODEL`: what a checkpoint is — architecture, layer and expert counts, tensors,
// bytes by dtype, which tensors are quantized, which the whittle recipe keeps in 16 bit, and the
// MTP layer's tensors (recognised, not used for generation yet).
#include <fmt/core.h>

#include <map>
#include <regex>

#include "cli/commands.h"
#include "cli/options.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace whittle::cli {

namespace {

enum class Role { Mtp, Quantized, Protected, Quantizable, Other };

// The recipe keeps dense MLPs, the indexer's weights_proj, the router, embeddings, lm_head and
// norms in 16 bit; attention and expert projections are what int4 quantization targets.
Role classify(const std::string& name, const TensorView& v, const ModelConfig& c) {
  if (const std::optional<int64_t> layer = layer_index(name);
      layer && *layer >= c.num_hidden_layers)
    return Role::Mtp;
  static const std::regex quantized_re(R"(\.(qweight|qzeros|scales|g_idx|weight_scale_inv)$)");
  if (v.dtype() == DType::F8_E4M3 || std::regex_search(name, quantized_re)) return Role::Quantized;
  static const std::regex protected_re(
      R"((embed_tokens|lm_head|norm|indexer\.weights_proj|mlp\.gate\.|e_score_correction_bias)|)"
      R"(^model\.layers\.\d+\.mlp\.(gate|up|down)_proj)");
  if (std::regex_search(name, protected_re)) return Role::Protected;
  if (v.shape().size() >= 2) return Role::Quantizable;  // attention, indexer wq_b/wk, experts
  return Role::Other;
}

}  // namespace

Command add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a model's architecture, tensors and bytes by dtype");
  auto model = std::make_shared<std::string>();
  auto list = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *model, "Hugging Face model folder")->required();
  cmd->add_flag("--tensors", *list, "List every tensor with dtype and shape");
  return [=] {
    require_model_folder(*model);
    ModelConfig c = ModelConfig::load(*model);
    TensorStore store(*model);
    int64_t moe_layers = 0, shared_index = 0;
    for (bool m : c.layer_is_moe) moe_layers += m;
    for (bool f : c.indexer_full) shared_index += !f;

    fmt::print("model          {}\n", *model);
    fmt::print("architecture   {} (model_type {})\n",
               c.architectures.empty() ? std::string("?") : c.architectures[0], c.model_type);
    fmt::print(
        "layers         {} ({} dense, {} MoE){}\n", c.num_hidden_layers,
        c.num_hidden_layers - moe_layers, moe_layers,
        c.num_nextn_predict_layers ? fmt::format(" + {} MTP", c.num_nextn_predict_layers) : "");
    fmt::print("hidden         {}, vocab {}, tied embeddings {}\n", c.hidden_size, c.vocab_size,
               c.tie_word_embeddings ? "yes" : "no");
    fmt::print("attention      MLA: {} heads, q_lora {}, kv_lora {}, qk {}+{} (nope+rope), v {}\n",
               c.num_attention_heads, c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim,
               c.qk_rope_head_dim, c.v_head_dim);
    fmt::print("rope           {} theta {} ({} MLA, {} indexer)\n", c.rope.type, c.rope.theta,
               c.rope_interleave ? "interleaved" : "half-split",
               c.indexer_rope_interleave ? "interleaved" : "half-split");
    fmt::print(
        "DSA indexer    {} heads x {}, top-k {}{}\n", c.index_n_heads, c.index_head_dim,
        c.index_topk,
        shared_index ? fmt::format(", {} layers share the previous selection", shared_index) : "");
    if (moe_layers)
      fmt::print(
          "experts        {} routed (top-{}, {} groups, top-{} groups) + {} shared, width {}; "
          "scaling {}\n",
          c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group, c.n_shared_experts,
          c.moe_intermediate_size, c.routed_scaling_factor);
    fmt::print("dense MLP      width {}\n", c.intermediate_size);

    std::map<std::string, std::pair<int64_t, size_t>> by_dtype;  // dtype -> (tensors, bytes)
    std::map<Role, std::pair<int64_t, size_t>> by_role;
    std::vector<std::string> mtp;
    size_t total = 0;
    for (const std::string& name : store.names()) {
      TensorView v = store.get(name);
      auto& d = by_dtype[std::string(dtype_name(v.dtype()))];
      d.first++;
      d.second += v.bytes.size();
      Role r = classify(name, v, c);
      by_role[r].first++;
      by_role[r].second += v.bytes.size();
      total += v.bytes.size();
      if (r == Role::Mtp) mtp.push_back(name);
    }
    fmt::print("tensors        {} in {} file(s), {:.2f} MiB\n", store.names().size(),
               store.file_count(), total / 1048576.0);
    for (const auto& [dt, nb] : by_dtype)
      fmt::print("  {:<8} {:>6} tensors {:>12.2f} MiB\n", dt, nb.first, nb.second / 1048576.0);
    const std::pair<Role, const char*> roles[] = {
        {Role::Quantized, "quantized"},
        {Role::Quantizable, "to quantize (attention, indexer wq_b/wk, experts)"},
        {Role::Protected,
         "protected, kept 16-bit (embeddings, lm_head, norms, router, dense MLPs, weights_proj)"},
        {Role::Mtp, "MTP layer (recognised; used for speculative decoding later)"},
        {Role::Other, "other"}};
    for (const auto& [role, label] : roles)
      if (by_role.count(role))
        fmt::print("  {:>6} tensors {:>12.2f} MiB  {}\n", by_role[role].first,
                   by_role[role].second / 1048576.0, label);
    for (const auto& name : mtp) fmt::print("  mtp: {}\n", name);
    if (*list)
      for (const std::string& name : store.names()) {
        TensorView v = store.get(name);
        fmt::print("{:<72} {:<8} {}\n", name, dtype_name(v.dtype()), shape_str(v.shape()));
      }
    return 0;
  };
}

}  // namespace whittle::cli
