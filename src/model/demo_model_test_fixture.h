// A GoogleTest fixture that loads models/tiny-glm5-random once per test suite (included only from
// *_test.cc): the small complete model folder the eval and generation tests run on.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>

#include "io/safetensors.h"
#include "model/glm_moe_dsa.h"
#include "util/thread_pool.h"

namespace whittle {

// The model of `dir` with its context cut to `max_pos` positions (for tests of the context limit).
inline GlmMoeDsa load_model_with_context(const std::filesystem::path& dir, int64_t max_pos,
                                         ThreadPool& pool) {
  ModelConfig config = ModelConfig::load(dir);
  config.max_position_embeddings = max_pos;
  auto weights = std::make_shared<const WeightSource>(dir, config);
  return GlmMoeDsa(std::move(config), std::move(weights), pool);
}

class DemoModelTest : public ::testing::Test {
 protected:
  static std::filesystem::path model_dir() {
    return std::filesystem::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5-random";
  }
  static void SetUpTestSuite() {
    pool_ = new ThreadPool(2);
    model_ = new GlmMoeDsa(GlmMoeDsa::load(model_dir(), *pool_));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete pool_;
  }
  static inline ThreadPool* pool_ = nullptr;
  static inline GlmMoeDsa* model_ = nullptr;
};

}  // namespace whittle
