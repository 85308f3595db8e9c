// reap_report.json: what `whittle prune` decided and why — the criterion, the calibration, and
// every routed expert's raw statistics, score and fate — written beside the pruned checkpoint. The
// raw accumulators are kept so that another ratio or criterion can be cut from the same calibration
// (`whittle prune --stats REPORT`) without running the model again.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "io/model_config.h"
#include "prune/expert_selection.h"

namespace whittle {

// One MoE layer's part of the report.
nlohmann::ordered_json layer_report(int64_t layer, std::span<const ExpertStats> stats,
                                    const LayerSelection& selection);

// The statistics of a previous report, per decoder layer (empty for dense layers), checked against
// `config`: every MoE layer present once with n_routed_experts experts, every statistic a finite
// non-negative number. Reports gathered with prune-as-you-go (`"observation": "sequential"`) are
// refused: their statistics depend on the ratio and criterion they were pruned with. Errors name
// the file and the field.
std::vector<std::vector<ExpertStats>> read_report_stats(const std::filesystem::path& path,
                                                        const ModelConfig& config);
// The same for a report's text; `source` names it in errors. Exposed for the fuzzer.
std::vector<std::vector<ExpertStats>> parse_report_stats(std::string_view text,
                                                         const std::string& source,
                                                         const ModelConfig& config);

}  // namespace whittle
