// write_pruned_checkpoint; see checkpoint_surgery.h.
#include "prune/checkpoint_surgery.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "io/checkpoint_io.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

constexpr std::string_view kExpertsPrefix = "mlp.experts.";

// One layer's plan: kept original ids (ascending) and original id -> new id.
struct LayerPlan {
  std::vector<int32_t> kept;
  std::vector<int32_t> rank;  // [E]; -1 for a dropped expert
  std::set<int32_t> experts_written;
  bool fused_written = false, router_written = false;
};

void check_kept_set(const std::vector<int32_t>& kept, int64_t layer, const ModelConfig& c,
                    const std::string& what) {
  const int64_t E = c.n_routed_experts;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (kept[i] < 0 || kept[i] >= E)
      fail("{} layer {}: kept expert id {} is out of range [0, {})", what, layer, kept[i], E);
    if (i > 0 && kept[i] == kept[i - 1])
      fail("{} layer {}: kept expert id {} appears twice", what, layer, kept[i]);
    if (i > 0 && kept[i] < kept[i - 1])
      fail("{} layer {}: kept expert ids are not ascending ({} after {})", what, layer, kept[i],
           kept[i - 1]);
  }
  if (c.n_group > 1) {
    // Grouped routing reshapes the experts into [n_group, E / n_group]: the kept set must keep the
    // same number in every contiguous original group, or group membership silently changes.
    const int64_t K = static_cast<int64_t>(kept.size());
    const int64_t size = E / c.n_group, per = K / c.n_group;
    if (K % c.n_group != 0)
      fail("{} layer {}: keeps {} experts, not a multiple of n_group {}", what, layer, K,
           c.n_group);
    std::vector<int64_t> count(static_cast<size_t>(c.n_group), 0);
    for (int32_t e : kept) ++count[static_cast<size_t>(e / size)];
    for (int64_t g = 0; g < c.n_group; ++g)
      if (count[static_cast<size_t>(g)] != per)
        fail(
            "{} layer {}: keeps {} expert(s) of routing group {} (experts {}..{}); with n_group "
            "{} every group must keep {} of the {} kept",
            what, layer, count[static_cast<size_t>(g)], g, g * size, (g + 1) * size - 1, c.n_group,
            per, K);
  }
}

// Checks the keep sets against the config and returns one plan per pruned layer (MoE and kept MTP
// layers), indexed by layer; K in *K.
std::map<int64_t, LayerPlan> make_plans(const ModelConfig& c, const ExpertKeep& keep,
                                        const std::set<int64_t>& mtp_moe_layers, bool drop_mtp,
                                        const fs::path& in, int64_t* K_out) {
  const std::string what = in.string();
  const int64_t N = c.num_hidden_layers, E = c.n_routed_experts;
  if (std::find(c.layer_is_moe.begin(), c.layer_is_moe.end(), true) == c.layer_is_moe.end() ||
      E <= 0)
    fail("{}: the model has no MoE layers; there are no experts to prune", what);
  const auto n = static_cast<int64_t>(keep.kept_per_layer.size());
  if (n != N && n != N + c.num_nextn_predict_layers)
    fail(
        "{}: the kept sets cover {} layer(s); expected num_hidden_layers {} (or {} with the MTP "
        "layers)",
        what, n, N, N + c.num_nextn_predict_layers);
  if (c.n_group > 1 && E % c.n_group != 0)
    fail("{}: n_routed_experts {} is not a multiple of n_group {}", what, E, c.n_group);

  std::map<int64_t, LayerPlan> plans;
  int64_t K = -1, first_moe = -1;
  for (int64_t L = 0; L < N; ++L) {
    const auto& kept = keep.kept_per_layer[static_cast<size_t>(L)];
    const bool moe =
        L < static_cast<int64_t>(c.layer_is_moe.size()) && c.layer_is_moe[static_cast<size_t>(L)];
    if (!moe) {
      if (!kept.empty())
        fail("{}: layer {} is a dense layer but {} kept expert id(s) were given for it", what, L,
             kept.size());
      continue;
    }
    if (kept.empty()) fail("{}: MoE layer {} has no kept set (an empty set)", what, L);
    check_kept_set(kept, L, c, what);
    if (K < 0) {
      K = static_cast<int64_t>(kept.size());
      first_moe = L;
    } else if (static_cast<int64_t>(kept.size()) != K) {
      fail(
          "{}: layer {} keeps {} experts but layer {} keeps {}; every MoE layer must keep the same "
          "number (config.json has one n_routed_experts)",
          what, L, kept.size(), first_moe, K);
    }
    plans[L].kept = kept;
  }
  if (K < c.num_experts_per_tok)
    fail("{}: keeping {} expert(s) per layer is fewer than num_experts_per_tok {}", what, K,
         c.num_experts_per_tok);
  if (c.n_group > 1) {
    const int64_t per = K / c.n_group;
    if (per * c.topk_group < c.num_experts_per_tok)
      fail("{}: {} kept expert(s) per group x topk_group {} cannot reach num_experts_per_tok {}",
           what, per, c.topk_group, c.num_experts_per_tok);
    if (per < 2)
      fail(
          "{}: {} kept expert(s) per group; grouped routing scores a group by its two best experts",
          what, per);
  }
  for (int64_t L = N; L < n; ++L)
    if (!keep.kept_per_layer[static_cast<size_t>(L)].empty() && !mtp_moe_layers.contains(L))
      fail("{}: a kept set was given for layer {}, which the checkpoint has no MoE MTP layer at",
           what, L);
  if (!drop_mtp) {
    for (int64_t L : mtp_moe_layers) {
      std::vector<int32_t> kept;
      if (L < n) kept = keep.kept_per_layer[static_cast<size_t>(L)];
      if (kept.empty()) {
        // See ExpertKeep: the first K / n_group experts of every routing group (0..K-1 when
        // n_group is 1), so that grouped routing stays valid.
        const int64_t groups = std::max<int64_t>(c.n_group, 1), size = E / groups, per = K / groups;
        for (int64_t g = 0; g < groups; ++g)
          for (int64_t e = 0; e < per; ++e) kept.push_back(static_cast<int32_t>(g * size + e));
      } else if (static_cast<int64_t>(kept.size()) != K) {
        fail("{}: MTP layer {} keeps {} experts but the decoder layers keep {}", what, L,
             kept.size(), K);
      }
      check_kept_set(kept, L, c, what + " MTP");
      plans[L].kept = std::move(kept);
    }
  }
  for (auto& [L, plan] : plans) {
    plan.rank.assign(static_cast<size_t>(E), -1);
    for (size_t i = 0; i < plan.kept.size(); ++i)
      plan.rank[static_cast<size_t>(plan.kept[i])] = static_cast<int32_t>(i);
  }
  *K_out = K;
  return plans;
}

// The bytes of `view` with only the dim-0 slices `kept` (in order).
std::vector<std::byte> slice_dim0(const TensorView& view, const std::vector<int32_t>& kept,
                                  int64_t E, const std::string& name, const fs::path& file) {
  const auto& shape = view.shape();
  if (shape.empty() || shape[0] != E)
    fail("{}: tensor '{}' has shape {}; expected {} experts in dimension 0", file.string(), name,
         shape_str(shape), E);
  const size_t row = view.bytes.size() / static_cast<size_t>(E);
  std::vector<std::byte> out(row * kept.size());
  for (size_t i = 0; i < kept.size(); ++i)
    std::copy_n(view.bytes.data() + static_cast<size_t>(kept[i]) * row, row, out.data() + i * row);
  return out;
}

// Rewrites GPTQ's `modules_in_block_to_quantize` (names without the layer prefix, shared by every
// layer) for K experts. The per-layer renumbering differs between layers, so this is possible only
// when every expert is listed with the same projections; otherwise it is refused. auto-round's
// `extra_config` and gptq's `dynamic` name modules with the layer, and a rule naming a single
// expert cannot be renumbered for one layer without the others: refused.
void rewrite_quantization_config(ordered_json& q, int64_t E, int64_t K, const std::string& source) {
  if (!q.is_object()) return;
  auto names_expert = [](std::string_view s) {
    for (size_t p = s.find("experts"); p != std::string_view::npos; p = s.find("experts", p + 1)) {
      std::string_view rest = s.substr(p + 7);
      if (rest.starts_with("\\."))
        rest.remove_prefix(2);
      else if (rest.starts_with("."))
        rest.remove_prefix(1);
      else
        continue;
      if (!rest.empty() && rest[0] >= '0' && rest[0] <= '9') return true;
    }
    return false;
  };
  for (const char* key : {"dynamic", "extra_config"}) {
    if (!q.contains(key) || !q[key].is_object()) continue;
    for (const auto& [k, v] : q[key].items())
      if (names_expert(k))
        fail(
            "{}: quantization_config.{} rule '{}' names a single routed expert; pruning renumbers "
            "experts per layer, so the rule cannot be carried over",
            source, key, k);
  }
  if (!q.contains("modules_in_block_to_quantize")) return;
  ordered_json& blocks = q["modules_in_block_to_quantize"];
  auto rewrite_list = [&](ordered_json& list) {
    if (!list.is_array()) return;
    ordered_json kept_entries = ordered_json::array();
    std::vector<std::vector<std::string>> per_expert(static_cast<size_t>(E));
    bool any = false;
    for (const auto& entry : list) {
      if (!entry.is_string()) {
        kept_entries.push_back(entry);
        continue;
      }
      const std::string s = entry.get<std::string>();
      std::string_view v = s;
      if (v.starts_with(kExpertsPrefix)) {
        std::string_view tail = v.substr(kExpertsPrefix.size());
        size_t used = 0;
        auto id = leading_int(tail, &used);
        if (id && (used == tail.size() || tail[used] == '.')) {
          if (*id >= E)
            fail("{}: quantization_config.modules_in_block_to_quantize names expert {} of {}",
                 source, *id, E);
          per_expert[static_cast<size_t>(*id)].emplace_back(tail.substr(used));
          if (!any) kept_entries.push_back(nullptr);  // placeholder: experts go where they were
          any = true;
          continue;
        }
      }
      kept_entries.push_back(entry);
    }
    if (!any) return;
    for (size_t e = 0; e < per_expert.size(); ++e) {
      auto a = per_expert[e], b = per_expert[0];
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if (a != b)
        fail(
            "{}: quantization_config.modules_in_block_to_quantize lists expert {} differently "
            "from expert 0; pruning renumbers experts per layer, so the list cannot be carried "
            "over",
            source, e);
    }
    ordered_json out = ordered_json::array();
    for (auto& entry : kept_entries) {
      if (!entry.is_null()) {
        out.push_back(std::move(entry));
        continue;
      }
      for (int64_t e = 0; e < K; ++e)
        for (const std::string& suffix : per_expert[0])
          out.push_back(fmt::format("{}{}{}", kExpertsPrefix, e, suffix));
    }
    list = std::move(out);
  };
  if (blocks.is_array() && !blocks.empty() && blocks[0].is_array()) {
    for (auto& list : blocks) rewrite_list(list);
  } else {
    rewrite_list(blocks);
  }
}

}  // namespace

PruneWriteResult write_pruned_checkpoint(const fs::path& in, const fs::path& out,
                                         const ModelConfig& config, const ExpertKeep& keep,
                                         const PruneWriteOptions& opts) {
  const ModelConfig& c = config;
  const int64_t N = c.num_hidden_layers, E = c.n_routed_experts;
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec))
    fail("{}: the output folder is the input model folder", out.string());
  for (const auto& [name, text] : opts.extra_files) {
    const fs::path p(name);
    if (name.empty() || p.has_parent_path() || name == "." || name == ".." ||
        name == "config.json" || name == kSafetensorsIndex || name.ends_with(".safetensors"))
      fail("{}: extra file name '{}' is not a plain file name the checkpoint does not use",
           out.string(), name);
  }

  TensorStore store(in);
  // MTP layers present in the checkpoint that carry routed experts.
  std::set<int64_t> mtp_moe_layers;
  for (size_t f = 0; f < store.file_count(); ++f)
    for (const TensorInfo& t : store.file(f).tensors())
      if (auto split = split_layer(t.name);
          split && split->first >= N && split->second == "mlp.gate.weight")
        mtp_moe_layers.insert(split->first);

  int64_t K = 0;
  std::map<int64_t, LayerPlan> plans = make_plans(c, keep, mtp_moe_layers, opts.drop_mtp, in, &K);

  ordered_json cfg = read_json_file(in / "config.json");
  if (!cfg.is_object()) fail("{}: not a JSON object", (in / "config.json").string());
  cfg["n_routed_experts"] = K;
  if (opts.drop_mtp) cfg["num_nextn_predict_layers"] = 0;
  if (cfg.contains("quantization_config"))
    rewrite_quantization_config(cfg["quantization_config"], E, K, (in / "config.json").string());

  const uint64_t max_shard = opts.max_shard_bytes ? opts.max_shard_bytes : shard_bytes_like(store);

  AtomicDir dir(out, opts.overwrite);
  PruneWriteResult result;
  result.kept_experts = K;
  result.pruned_layers = static_cast<int64_t>(plans.size());
  {
    std::map<std::string, std::string> metadata;
    if (store.file_count() > 0) metadata = store.file(0).metadata();
    SafeTensorsWriter writer(dir.path(), max_shard, std::move(metadata));
    // Tensors in the input's file and data order: the input is read front to back, once.
    for (size_t f = 0; f < store.file_count(); ++f) {
      const SafeTensorsFile& file = store.file(f);
      for (const TensorInfo& info : file.tensors()) {
        const TensorView view = file.view(info);
        auto split = split_layer(info.name);
        if (split && split->first >= N && opts.drop_mtp) continue;
        LayerPlan* plan = nullptr;
        if (split) {
          auto it = plans.find(split->first);
          if (it != plans.end()) plan = &it->second;
        }
        auto copy = [&](std::string_view name, std::span<const std::byte> bytes,
                        std::span<const int64_t> shape) {
          writer.add(name, info.dtype, shape, bytes);
          ++result.tensors_written;
          result.tensor_bytes_written += bytes.size();
        };
        if (!plan) {
          copy(info.name, view.bytes, info.shape);
        } else {
          const std::string_view rest = split->second;
          const std::string prefix = fmt::format("{}{}.", kLayerPrefix, split->first);
          std::vector<int64_t> shape = info.shape;
          if (rest.starts_with(kExpertsPrefix)) {
            std::string_view tail = rest.substr(kExpertsPrefix.size());
            size_t used = 0;
            auto id = leading_int(tail, &used);
            if (id && used < tail.size() && tail[used] == '.') {
              if (*id >= E)
                fail("{}: tensor '{}' names expert {}, but n_routed_experts is {}",
                     file.path().string(), info.name, *id, E);
              const int32_t r = plan->rank[static_cast<size_t>(*id)];
              if (r >= 0) {
                copy(fmt::format("{}{}{}{}", prefix, kExpertsPrefix, r, tail.substr(used)),
                     view.bytes, info.shape);
                plan->experts_written.insert(r);
              }
            } else {  // fused [E, ...]
              auto bytes = slice_dim0(view, plan->kept, E, info.name, file.path());
              shape[0] = K;
              copy(info.name, bytes, shape);
              plan->fused_written = true;
            }
          } else if (rest == "mlp.gate.weight" || rest == "mlp.gate.e_score_correction_bias" ||
                     rest == "mlp.gate.bias") {
            auto bytes = slice_dim0(view, plan->kept, E, info.name, file.path());
            shape[0] = K;
            copy(info.name, bytes, shape);
            if (rest == "mlp.gate.weight") plan->router_written = true;
          } else {
            copy(info.name, view.bytes, info.shape);
          }
        }
        // Streaming: this tensor's pages leave the process (they stay in the page cache). A
        // fault maps the whole read-around block, which reaches back into tensors already copied
        // (up to 15 pages each, ~1.5 GB over GLM-5's 57,600 expert tensors), so the drop starts
        // 2 MiB before the tensor: everything before it in the file is done.
        drop_copied_pages(file, view.bytes);
      }
    }
    for (const auto& [L, plan] : plans) {
      if (!plan.router_written)
        fail("{}: layer {} is an MoE layer but has no router 'model.layers.{}.mlp.gate.weight'",
             in.string(), L, L);
      if (!plan.fused_written && static_cast<int64_t>(plan.experts_written.size()) != K)
        fail("{}: layer {}: found tensors for {} of the {} kept experts", in.string(), L,
             plan.experts_written.size(), K);
    }
    result.files = writer.finish();
  }

  write_file_atomic(dir.path() / "config.json", dump_hf_json(cfg));
  // auto-round's copy of quantization_config is kept consistent with config.json's.
  const fs::path sidecar = in / "quantization_config.json";
  bool sidecar_rewritten = false;
  if (fs::is_regular_file(sidecar) && !opts.extra_files.contains(sidecar.filename().string())) {
    ordered_json q = read_json_file(sidecar);
    const ordered_json before = q;
    rewrite_quantization_config(q, E, K, sidecar.string());
    if (q != before) {  // else copied byte for byte below
      write_file_atomic(dir.path() / sidecar.filename(), dump_hf_json(q));
      sidecar_rewritten = true;
    }
  }
  copy_side_files(in, dir.path(), [&](const std::string& name) {
    // A previous pruning's report describes another model.
    return opts.extra_files.contains(name) || name == "reap_report.json" ||
           (sidecar_rewritten && name == "quantization_config.json");
  });
  for (const auto& [name, text] : opts.extra_files) write_file_atomic(dir.path() / name, text);
  dir.commit();

  // Report the final paths.
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(out)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  result.files = std::move(files);
  return result;
}

}  // namespace whittle
