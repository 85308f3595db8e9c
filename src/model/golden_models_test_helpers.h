// The golden checkpoints of tests/golden/models (made by tools/oracle/make_model_goldens.py) as the
// tests find them (included only from *_test.cc).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/npy.h"

namespace whittle {

inline const std::filesystem::path kGoldenModels =
    std::filesystem::path(WHITTLE_SOURCE_DIR) / "tests/golden/models";

// The input ids transformers ran for golden `name`.
inline std::vector<int32_t> golden_ids(const std::string& name) {
  std::vector<int32_t> ids;
  for (int64_t id : read_npy_i64(kGoldenModels / name / "input_ids.npy"))
    ids.push_back(static_cast<int32_t>(id));
  return ids;
}

}  // namespace whittle
