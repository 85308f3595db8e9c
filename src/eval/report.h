// The human form of an eval task's JSON result (eval/tasks.h): a few header words with the settings
// and a small aligned table.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace whittle {

std::string format_report(const nlohmann::ordered_json& result);

}  // namespace whittle
