// A GoogleTest fixture that loads models/tiny-glm5-random once per test suite (included only from
// *_test.cc): the small complete model folder the eval and generation tests run on.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>

#include "model/glm_moe_dsa.h"
#include "util/thread_pool.h"

namespace whittle {

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
