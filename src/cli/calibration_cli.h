// Calibration data as `whittle prune` and `whittle quantize` take it: --calib FILE... (default
// MODEL/calibration.txt), --samples, --seqlen (default min(2048, context)), --seed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "prune/calibration.h"

namespace whittle::cli {

struct CalibrationRequest {
  std::filesystem::path model;
  std::vector<std::string> files;     // empty: MODEL/calibration.txt
  int64_t samples = 128, seqlen = 0;  // seqlen 0: min(2048, max_position_embeddings)
  uint64_t seed = 42;
  std::string save_ids;  // non-empty: also write the packed ids to this .npy
};

struct LoadedCalibration {
  CalibrationSet set;
  int64_t seqlen = 0;
  nlohmann::ordered_json record;  // files, samples, seqlen, seed, documents, fingerprint
};

// Reads, tokenizes and packs; prints the set's warning. Errors name the file or option.
LoadedCalibration load_cli_calibration(const CalibrationRequest& r, int64_t context);

}  // namespace whittle::cli
