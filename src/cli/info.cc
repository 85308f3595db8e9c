// `whittle info MODEL`: what a checkpoint is — architecture, layer and expert counts, tensors,
// bytes by dtype, which tensors are quantized, which the whittle recipe keeps in 16 bit, the MTP
// layer's tensors (recognised, not used for generation yet), and for a GPTQ / AutoRound checkpoint
// which Linear modules the file holds quantized and which in 16 bit, checked against config.json's
// quantization_config.
#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>

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

// ---- GPTQ modules: what the file holds, checked against what config.json's rules say ----

// The tensors of one Linear module as the file holds them.
struct FileModule {
  std::optional<TensorView> qweight, qzeros, scales, g_idx;  // GPTQ
  std::optional<TensorView> weight;                          // 16 bit (or FP8)
  bool gptq() const { return qweight || qzeros || scales || g_idx; }
};

// The Linear modules of a checkpoint by name: GPTQ ones from their <module>.qweight / .qzeros /
// .scales / .g_idx tensors, 16-bit ones from a 2-D <module>.weight (embeddings excepted) or a
// fused-experts tensor (3-D mlp.experts.gate_up_proj / down_proj).
std::map<std::string, FileModule> linear_modules(const TensorStore& store) {
  std::map<std::string, FileModule> out;
  for (const std::string& name : store.names()) {
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) continue;
    const std::string module = name.substr(0, dot), leaf = name.substr(dot + 1);
    TensorView v = store.get(name);
    if (leaf == "qweight")
      out[module].qweight = v;
    else if (leaf == "qzeros")
      out[module].qzeros = v;
    else if (leaf == "scales")
      out[module].scales = v;
    else if (leaf == "g_idx")
      out[module].g_idx = v;
    else if (leaf == "weight" && v.shape().size() == 2 && !module.ends_with("embed_tokens"))
      out[module].weight = v;
    else if (v.shape().size() == 3 && module.ends_with(".mlp.experts"))
      out[name].weight = v;  // fused experts: the tensor is the module
  }
  return out;
}

// "model.layers.3.mlp.experts.5.gate_proj" -> "mlp.experts.*.gate_proj"; MTP layers get "mtp ".
std::string module_kind(const std::string& module, const ModelConfig& c) {
  std::string kind = module;
  if (const std::optional<int64_t> layer = layer_index(module)) {
    kind = module.substr(module.find('.', 13) + 1);  // past "model.layers.N."
    if (*layer >= c.num_hidden_layers) kind = "mtp " + kind;
  }
  static const std::regex expert_re(R"(\.experts\.\d+\.)");
  return std::regex_replace(kind, expert_re, ".experts.*.");
}

// The in-features of a GLM-5 Linear from the config, where the name says which one it is.
std::optional<int64_t> expected_in_features(const std::string& module, const ModelConfig& c) {
  if (module == "lm_head") return c.hidden_size;
  const std::optional<int64_t> layer = layer_index(module);
  if (!layer || *layer >= c.num_hidden_layers) return std::nullopt;
  const auto ends = [&](std::string_view s) { return module.ends_with(s); };
  if (ends(".q_b_proj") || ends(".indexer.wq_b")) return c.q_lora_rank;
  if (ends(".kv_b_proj")) return c.kv_lora_rank;
  if (ends(".o_proj")) return c.num_attention_heads * c.v_head_dim;
  if (ends(".shared_experts.down_proj")) return c.moe_intermediate_size * c.n_shared_experts;
  if (module.find(".experts.") != std::string::npos && ends(".down_proj"))
    return c.moe_intermediate_size;
  if (ends(".mlp.down_proj")) return c.intermediate_size;
  if (ends(".q_a_proj") || ends(".kv_a_proj_with_mqa") || ends(".indexer.wk") ||
      ends(".indexer.weights_proj") || ends(".gate_proj") || ends(".up_proj") || ends(".mlp.gate"))
    return c.hidden_size;
  return std::nullopt;
}

// Modules vLLM's GLM-5 / DeepSeek code builds without a quantization method whatever the config
// says (deepseek_v2.py: the router `mlp.gate` and the indexer's `weights_proj` take
// quant_config=None).
bool vllm_keeps_16bit(const std::string& module) {
  return module.ends_with(".mlp.gate") || module.ends_with(".indexer.weights_proj");
}

// What is wrong with a GPTQ module's tensors for the settings `q`, or "" when they fit.
std::string check_gptq(const std::string& module, const FileModule& m, const ModuleQuant& q,
                       const ModelConfig& c) {
  if (!m.qweight || !m.scales || !m.qzeros)
    return fmt::format("missing {}{}{}", m.qweight ? "" : ".qweight ", m.qzeros ? "" : ".qzeros ",
                       m.scales ? "" : ".scales");
  const auto& qw = m.qweight->shape();
  const auto& sc = m.scales->shape();
  const auto& qz = m.qzeros->shape();
  if (m.qweight->dtype() != DType::I32 || m.qzeros->dtype() != DType::I32)
    return fmt::format("qweight is {} and qzeros {}; GPTQ packs both in I32",
                       dtype_name(m.qweight->dtype()), dtype_name(m.qzeros->dtype()));
  if (!dtype_is_float(m.scales->dtype()))
    return fmt::format("scales are {}; expected F16", dtype_name(m.scales->dtype()));
  if (qw.size() != 2 || sc.size() != 2 || qz.size() != 2)
    return fmt::format("qweight {}, scales {}, qzeros {}: each must be 2-D", shape_str(qw),
                       shape_str(sc), shape_str(qz));
  const int64_t per_word = 32 / q.bits;
  const int64_t in = qw[0] * per_word, out = qw[1];
  const std::string settings = fmt::format("config.json's rules give {}", describe(q));
  if (const std::optional<int64_t> expected = expected_in_features(module, c);
      expected && *expected != in) {
    std::string hint;  // the bit width the rows would fit: 32 / (in-features per int32)
    if (qw[0] > 0 && *expected % qw[0] == 0 && 32 % (*expected / qw[0]) == 0)
      hint = fmt::format(" (the rows fit {}-bit)", 32 / (*expected / qw[0]));
    return fmt::format("{}, but qweight {} holds {} x {} = {} in-features and the layer takes {}{}",
                       settings, shape_str(qw), qw[0], per_word, in, *expected, hint);
  }
  const int64_t groups = q.group_size == -1 ? 1 : (in + q.group_size - 1) / q.group_size;
  if (sc[0] != groups || sc[1] != out) {
    std::string hint;
    if (sc[0] > 0 && in % sc[0] == 0)
      hint = fmt::format(" (the file's group size is {})", in / sc[0]);
    return fmt::format("{}, so scales should be [{}, {}], but the file has {}{}", settings, groups,
                       out, shape_str(sc), hint);
  }
  if (out * q.bits % 32 != 0 || qz[0] != groups || qz[1] != out * q.bits / 32)
    return fmt::format("{}, so qzeros should be [{}, {} x {} / 32], but the file has {}", settings,
                       groups, out, q.bits, shape_str(qz));
  if (m.g_idx && (m.g_idx->dtype() != DType::I32 || m.g_idx->shape() != std::vector<int64_t>{in}))
    return fmt::format("g_idx is {} {}; expected I32 [{}]", dtype_name(m.g_idx->dtype()),
                       shape_str(m.g_idx->shape()), in);
  return "";
}

// Prints which Linear modules the file holds quantized and which in 16 bit, grouped by kind of
// module, and every disagreement between config.json's quantization_config and the tensors.
void print_quantized_modules(const TensorStore& store, const ModelConfig& c) {
  const std::map<std::string, FileModule> modules = linear_modules(store);
  const bool any_gptq =
      std::any_of(modules.begin(), modules.end(), [](const auto& m) { return m.second.gptq(); });
  const std::optional<QuantConfig>& q = c.quantization;
  if (!q && !any_gptq) return;
  if (q) {
    std::string line = fmt::format("{}, {}, {} zero points", q->quant_method, describe(q->defaults),
                                   q->checkpoint_format == 2 ? "gptq_v2" : "GPTQ v1 (stored - 1)");
    if (!q->rules.empty())
      line += fmt::format(", {} {} rule(s)", q->rules.size(),
                          q->quant_method == "gptq" ? "dynamic" : "extra_config");
    fmt::print("quantization   {}\n", line);
  } else {
    fmt::print("quantization   none in config.json\n");
  }

  std::map<std::pair<std::string, std::string>, int64_t> rows;  // (kind, how) -> modules
  std::vector<std::string> mismatches, vllm_notes;
  int64_t quantized = 0, sixteen = 0;
  for (const auto& [name, m] : modules) {
    const std::string kind = module_kind(name, c);
    const std::optional<ModuleQuant> rule = q ? q->for_module(name) : std::nullopt;
    if (m.gptq()) {
      ++quantized;
      if (!q) {
        rows[{kind, "GPTQ"}]++;
        mismatches.push_back(fmt::format(
            "{}: the file holds GPTQ tensors but config.json has no quantization_config", name));
        continue;
      }
      if (!rule) {
        rows[{kind, "GPTQ"}]++;
        mismatches.push_back(fmt::format(
            "{}: the file holds GPTQ tensors but config.json's rules keep it in 16 bit", name));
        continue;
      }
      rows[{kind, describe(*rule)}]++;
      if (std::string problem = check_gptq(name, m, *rule, c); !problem.empty())
        mismatches.push_back(fmt::format("{}: {}", name, problem));
      if (vllm_keeps_16bit(name))
        mismatches.push_back(fmt::format(
            "{}: quantized in the file, but vLLM builds this module without quantization", name));
    } else {
      ++sixteen;
      rows[{kind, std::string(dtype_name(m.weight->dtype()))}]++;
      // With no module list vLLM takes the quantized modules from the file (maybe_update_config),
      // so a 16-bit module is what the rules mean; with a list, or for AutoRound, it is not.
      const bool list_decides =
          q && (q->quant_method == "auto-round" || !q->modules_in_block_to_quantize.empty());
      if (rule && list_decides && !vllm_keeps_16bit(name) &&
          !name.ends_with(".mlp.experts.gate_up_proj") && !name.ends_with(".mlp.experts.down_proj"))
        mismatches.push_back(
            fmt::format("{}: config.json's rules give {} but the file stores it in {}", name,
                        describe(*rule), dtype_name(m.weight->dtype())));
    }
    if (q && q->quant_method == "gptq" && !vllm_keeps_16bit(name)) {
      const std::optional<ModuleQuant> as_vllm = q->for_module_as_vllm(name);
      if (as_vllm != rule)
        vllm_notes.push_back(
            fmt::format("{}: {} here, {} in vLLM, which matches the rules against {}", name,
                        rule ? describe(*rule) : "16-bit", as_vllm ? describe(*as_vllm) : "16-bit",
                        QuantConfig::vllm_module_name(name)));
    }
  }
  fmt::print(
      "linear modules {} quantized, {} 16-bit (from the tensors; bits and group size from "
      "config.json's rules, checked against the shapes)\n",
      quantized, sixteen);
  size_t width = 0;
  for (const auto& [key, n] : rows) width = std::max(width, key.first.size());
  for (const auto& [key, n] : rows)
    fmt::print("  {:<{}}  {:<14} x {}\n", key.first, width, key.second, n);
  const auto print_list = [](const std::vector<std::string>& lines, const char* label) {
    constexpr size_t kShown = 20;
    for (size_t i = 0; i < std::min(lines.size(), kShown); ++i)
      fmt::print("  {}: {}\n", label, lines[i]);
    if (lines.size() > kShown) fmt::print("  {}: ... and {} more\n", label, lines.size() - kShown);
  };
  if (mismatches.empty()) {
    if (q) fmt::print("  config.json's quantization_config and the file agree on every module\n");
  } else {
    fmt::print("  config.json and the file DISAGREE on {} module(s):\n", mismatches.size());
    print_list(mismatches, "mismatch");
  }
  if (!vllm_notes.empty()) {
    fmt::print("  vLLM would read {} module(s) differently (rules that split a fused module):\n",
               vllm_notes.size());
    print_list(vllm_notes, "vllm");
  }
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
    print_quantized_modules(store, c);
    if (*list)
      for (const std::string& name : store.names()) {
        TensorView v = store.get(name);
        fmt::print("{:<72} {:<8} {}\n", name, dtype_name(v.dtype()), shape_str(v.shape()));
      }
    return 0;
  };
}

}  // namespace whittle::cli
