#include "prune/reap_report.h"

#include <fmt/core.h>

#include <cmath>

#include "io/json_excerpt.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

// The statistics' names in the report, in ExpertStats' order.
constexpr const char* kStatNames[] = {"count", "sum_gate_norm", "sum_norm", "sum_gate", "max_norm"};

double* stat_field(ExpertStats& s, int i) {
  double* fields[] = {&s.count, &s.sum_gate_norm, &s.sum_norm, &s.sum_gate, &s.max_norm};
  return fields[i];
}

}  // namespace

ojson layer_report(int64_t layer, std::span<const ExpertStats> stats,
                   const LayerSelection& selection) {
  ojson experts = ojson::array();
  for (size_t e = 0; e < stats.size(); ++e) {
    ExpertStats s = stats[e];
    ojson x = ojson::object();
    for (int i = 0; i < 5; ++i) x[kStatNames[i]] = *stat_field(s, i);
    x["score"] = selection.score[e];
    experts.push_back(std::move(x));
  }
  return {{"layer", layer},
          {"kept", selection.kept},
          {"dropped", selection.dropped},
          {"tied_at_cut", selection.tied_at_cut},
          {"experts", std::move(experts)}};
}

std::vector<std::vector<ExpertStats>> read_report_stats(const fs::path& path,
                                                        const ModelConfig& config) {
  return parse_report_stats(read_file(path), path.string(), config);
}

std::vector<std::vector<ExpertStats>> parse_report_stats(std::string_view text,
                                                         const std::string& file,
                                                         const ModelConfig& config) {
  ojson report;
  try {
    report = ojson::parse(text);
  } catch (const ojson::exception& e) {
    fail("{}: not valid JSON: {}", file, e.what());
  }
  if (!report.is_object()) fail("{}: expected a JSON object, got {}", file, json_excerpt(report));
  if (report.contains("observation") && report["observation"] != "unpruned")
    fail(
        "{}: \"observation\" is {}: statistics gathered while pruning as you go depend on the "
        "ratio and method they were pruned with and cannot be cut again; recalibrate",
        file, json_excerpt(report["observation"]));
  if (!report.contains("layers") || !report["layers"].is_array())
    fail("{}: expected \"layers\" to be an array", file);
  const int64_t N = config.num_hidden_layers, E = config.n_routed_experts;
  std::vector<std::vector<ExpertStats>> stats(static_cast<size_t>(N));
  const ojson& layers = report["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    const ojson& l = layers[i];
    const std::string where = fmt::format("{}: layers[{}]", file, i);
    if (!l.is_object() || !l.contains("layer") || !l["layer"].is_number_integer())
      fail("{}: expected an object with an integer \"layer\"", where);
    const int64_t L = l["layer"].get<int64_t>();
    if (L < 0 || L >= N || !config.layer_is_moe[L])
      fail("{}: layer {} is not a MoE layer of this model ({} layers)", where, L, N);
    if (!stats[L].empty()) fail("{}: layer {} appears twice", where, L);
    if (!l.contains("experts") || !l["experts"].is_array() ||
        static_cast<int64_t>(l["experts"].size()) != E)
      fail("{}: expected \"experts\" to be an array of {} (the model's n_routed_experts)", where,
           E);
    stats[L].resize(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      const ojson& x = l["experts"][static_cast<size_t>(e)];
      for (int k = 0; k < 5; ++k) {
        const char* name = kStatNames[k];
        if (!x.is_object() || !x.contains(name) || !x[name].is_number() ||
            !std::isfinite(x[name].get<double>()) || x[name].get<double>() < 0)
          fail("{}.experts[{}]: expected \"{}\" to be a finite number >= 0", where, e, name);
        *stat_field(stats[L][static_cast<size_t>(e)], k) = x[name].get<double>();
      }
    }
  }
  for (int64_t L = 0; L < N; ++L)
    if (config.layer_is_moe[L] && stats[L].empty())
      fail("{}: no statistics for MoE layer {}", file, L);
  return stats;
}

}  // namespace whittle
