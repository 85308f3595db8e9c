#include "quant/quant_plan.h"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>

#include "io/quant_config.h"
#include "util/error.h"

namespace whittle {

namespace {

constexpr std::string_view kLayers = "model.layers.";

// "model.layers.L.<suffix>" -> suffix.
std::string layer_suffix(const std::string& module, int64_t layer) {
  const std::string prefix = fmt::format("{}{}.", kLayers, layer);
  if (!module.starts_with(prefix)) fail("internal: module {} is not in layer {}", module, layer);
  return module.substr(prefix.size());
}

// A Python regex matching `s` literally (re.escape of the characters module names hold).
std::string escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view(".^$*+?()[]{}|\\").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// "mlp.experts.7.down_proj" -> "mlp.experts.#.down_proj": one name for every expert's module.
std::string expert_canonical(const std::string& suffix) {
  const size_t p = suffix.find("experts.");
  if (p == std::string::npos) return suffix;
  size_t q = p + 8;
  while (q < suffix.size() && suffix[q] >= '0' && suffix[q] <= '9') ++q;
  if (q == p + 8) return suffix;
  return suffix.substr(0, p + 8) + "#" + suffix.substr(q);
}

std::string canonical_regex(const std::string& canonical) {
  std::string out;
  for (size_t i = 0; i < canonical.size(); ++i) {
    if (canonical[i] == '#')
      out += "\\d+";
    else
      out += escape(canonical.substr(i, 1));
  }
  return out;
}

QuantConfig read_back(const nlohmann::ordered_json& qc) {
  nlohmann::ordered_json cfg = {{"quantization_config", qc}};
  auto q = QuantConfig::from_config_json(cfg, "the generated quantization_config");
  if (!q) fail("internal: the generated quantization_config reads as unquantized");
  return *q;
}

}  // namespace

const LinearPlan* QuantPlan::find(const std::string& module) const {
  for (const auto& layer : layers)
    for (const LinearPlan& p : layer)
      if (p.module == module) return &p;
  return nullptr;
}

int64_t QuantPlan::quantized() const {
  int64_t n = 0;
  for (const auto& layer : layers)
    for (const LinearPlan& p : layer) n += p.quantize;
  return n;
}

int64_t QuantPlan::kept() const {
  int64_t n = 0;
  for (const auto& layer : layers)
    for (const LinearPlan& p : layer) n += !p.quantize;
  return n;
}

QuantPlan plan_quantization(const ModelConfig& config, const ModelWeights& weights,
                            const PlanOptions& opts) {
  const QuantSpec& spec = opts.spec;
  if (spec.bits != 4 && spec.bits != 8)
    fail(
        "--bits: {} is not supported; GPTQ checkpoints that vLLM and transformers load hold 4 or "
        "8 bits",
        spec.bits);
  if (spec.group_size != -1 && (spec.group_size <= 0 || spec.group_size % 32 != 0))
    fail("--group-size: {} is not supported; use -1 (one group per row) or a multiple of 32",
         spec.group_size);
  if (opts.vllm_rules && spec.group_size != -1 && spec.group_size != 32 && spec.group_size != 64 &&
      spec.group_size != 128)
    fail(
        "--group-size: vLLM's GPTQ kernels take -1, 32, 64 or 128, not {} (pass "
        "--no-vllm-rules to write it anyway)",
        spec.group_size);

  // The user's patterns, read exactly as the loaders will read them.
  std::optional<QuantConfig> user;
  if (!opts.keep.empty()) {
    nlohmann::ordered_json dyn = nlohmann::ordered_json::object();
    for (const std::string& k : opts.keep) dyn["-:" + k] = nlohmann::ordered_json::object();
    nlohmann::ordered_json qc = {
        {"quant_method", "gptq"}, {"bits", spec.bits}, {"group_size", spec.group_size},
        {"desc_act", false},      {"sym", true},       {"dynamic", dyn}};
    user = QuantConfig::from_config_json(nlohmann::ordered_json{{"quantization_config", qc}},
                                         "--keep");
  }

  QuantPlan plan;
  plan.mtp_layers = config.num_nextn_predict_layers;
  plan.layers.resize(weights.layers.size());
  for (size_t L = 0; L < weights.layers.size(); ++L) {
    const bool moe = config.layer_is_moe[L];
    weights.layers[L].for_each_linear([&](const Weight& w) {
      const std::string& m = w.module();
      if (m.ends_with(".mlp.gate")) return;  // the router: never quantized, not an nn.Linear
      LinearPlan p{m, w.rows(), w.cols(), true, ""};
      const int64_t N = w.rows(), K = w.cols();
      auto keep = [&](std::string why) {
        if (p.quantize) p.kept_because = std::move(why);
        p.quantize = false;
      };
      if (!moe && m.find(".mlp.") != std::string::npos)
        keep("a dense MLP layer (the recipe keeps them in 16 bit)");
      if (m.ends_with(".indexer.weights_proj"))
        keep("the DSA indexer's weights_proj (the recipe keeps it in 16 bit)");
      if (user && !user->for_module(m)) keep("it matches a --keep pattern");
      if (spec.group_size > 0 && K % spec.group_size != 0)
        keep(fmt::format("its {} inputs are not a multiple of the group size {}", K,
                         spec.group_size));
      if (N % 32 != 0 || K % 32 != 0)
        keep(fmt::format(
            "{} are not a multiple of 32 (the GPTQ export rule auto-round applies)",
            N % 32 != 0 ? fmt::format("its {} outputs", N) : fmt::format("its {} inputs", K)));
      if (opts.vllm_rules && (N % 64 != 0 || K % 128 != 0))
        keep(
            fmt::format("vLLM's Marlin kernels need outputs % 64 == 0 and inputs % 128 == 0 "
                        "(it is [{}, {}]; --no-vllm-rules quantizes it anyway)",
                        N, K));
      plan.layers[L].push_back(std::move(p));
    });
  }

  if (opts.vllm_rules) {
    // vLLM quantizes a fused module as a whole: a kept shard keeps its partners.
    for (auto& layer : plan.layers) {
      std::map<std::string, std::string> kept_shard;  // vLLM module -> a kept member
      for (const LinearPlan& p : layer)
        if (!p.quantize) kept_shard.emplace(QuantConfig::vllm_module_name(p.module), p.module);
      for (LinearPlan& p : layer) {
        auto it = kept_shard.find(QuantConfig::vllm_module_name(p.module));
        if (p.quantize && it != kept_shard.end()) {
          p.quantize = false;
          p.kept_because = fmt::format("vLLM fuses it with {}, which is kept", it->second);
        }
      }
    }
  }

  // Warnings: one line per reason and kind of module, with a count and an example.
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, std::string>> classes;
  for (size_t L = 0; L < plan.layers.size(); ++L)
    for (const LinearPlan& p : plan.layers[L]) {
      if (p.quantize || p.kept_because.find("recipe") != std::string::npos ||
          p.kept_because.find("--keep") != std::string::npos)
        continue;
      auto& c = classes[{expert_canonical(layer_suffix(p.module, static_cast<int64_t>(L))),
                         p.kept_because}];
      if (c.first++ == 0) c.second = fmt::format("{} [{}, {}]", p.module, p.rows, p.cols);
    }
  for (const auto& [key, c] : classes)
    plan.warnings.push_back(
        fmt::format("kept in 16 bit: {} module(s) like {}: {}", c.first, c.second, key.second));

  // `dynamic`: the user's patterns, then one rule per kept unit (the vLLM module, or the module
  // itself without vllm_rules), collapsed over experts and layers where every instance is kept.
  for (const std::string& k : opts.keep) plan.dynamic["-:" + k] = nlohmann::ordered_json::object();
  struct Unit {
    std::set<std::string> alternatives;  // suffixes that name it (vLLM's and Hugging Face's)
    bool kept = true;
  };
  std::map<std::string, std::map<int64_t, Unit>> units;  // canonical suffix -> layer -> unit
  std::set<std::string> quantized;
  for (size_t L = 0; L < plan.layers.size(); ++L)
    for (const LinearPlan& p : plan.layers[L]) {
      const int64_t layer = static_cast<int64_t>(L);
      const std::string unit_name =
          opts.vllm_rules ? QuantConfig::vllm_module_name(p.module) : p.module;
      const std::string unit = layer_suffix(unit_name, layer);
      const std::string hf = layer_suffix(p.module, layer);
      if (p.quantize) quantized.insert(hf);
      // Rules cover what the user's patterns do not.
      const bool by_user = p.kept_because.find("--keep") != std::string::npos;
      Unit& u = units[expert_canonical(unit)][layer];
      if (p.quantize) u.kept = false;
      if (by_user) continue;
      u.alternatives.insert(expert_canonical(unit));
      if (!hf.starts_with(unit + ".") && hf != unit) u.alternatives.insert(expert_canonical(hf));
    }
  for (const auto& [canonical, per_layer] : units) {
    bool everywhere = true;
    std::set<std::string> alts;
    for (const auto& [L, u] : per_layer) {
      everywhere = everywhere && u.kept;
      alts.insert(u.alternatives.begin(), u.alternatives.end());
    }
    auto rule = [&](const std::string& layer, const std::set<std::string>& a) {
      if (a.empty()) return;  // kept by the user's patterns alone
      std::vector<std::string> parts;
      for (const std::string& s : a) parts.push_back(canonical_regex(s));
      const std::string body =
          parts.size() == 1 ? parts[0] : fmt::format("({})", fmt::join(parts, "|"));
      plan.dynamic[fmt::format("-:.*model\\.layers\\.{}\\.{}", layer, body)] =
          nlohmann::ordered_json::object();
    };
    if (everywhere) {
      rule("\\d+", alts);
    } else {
      for (const auto& [L, u] : per_layer)
        if (u.kept) rule(std::to_string(L), u.alternatives);
    }
  }
  for (int64_t i = 0; i < plan.mtp_layers; ++i)
    plan.dynamic[fmt::format("-:.*model\\.layers\\.{}\\.", config.num_hidden_layers + i)] =
        nlohmann::ordered_json::object();
  plan.modules_in_block.assign(quantized.begin(), quantized.end());
  return plan;
}

nlohmann::ordered_json quantization_config(const QuantPlan& plan, const QuantSpec& spec,
                                           const std::string& method,
                                           const nlohmann::ordered_json& extra) {
  nlohmann::ordered_json qc = {
      {"bits", spec.bits}, {"data_type", "int"}, {"group_size", spec.group_size}, {"sym", true}};
  for (const auto& [k, v] : extra.items()) qc[k] = v;
  qc["dynamic"] = plan.dynamic;
  qc["lm_head"] = false;
  qc["provider"] = "whittle";
  qc["whittle_method"] = method;
  qc["quant_method"] = "gptq";
  qc["desc_act"] = false;
  qc["true_sequential"] = false;
  qc["damp_percent"] = 0.01;
  qc["modules_in_block_to_quantize"] = nlohmann::ordered_json::array({plan.modules_in_block});
  return qc;
}

void check_quantization_config(const QuantPlan& plan, const nlohmann::ordered_json& qc,
                               bool vllm_rules) {
  const QuantConfig q = read_back(qc);
  for (const auto& layer : plan.layers)
    for (const LinearPlan& p : layer) {
      const bool hf = q.for_module(p.module).has_value();
      if (hf != p.quantize)
        fail("internal: the quantization_config written would make transformers {} {}",
             hf ? "quantize" : "skip", p.module);
      if (vllm_rules && q.for_module_as_vllm(p.module).has_value() != p.quantize)
        fail("internal: the quantization_config written would make vLLM {} {}",
             p.quantize ? "skip" : "quantize", p.module);
    }
}

}  // namespace whittle
