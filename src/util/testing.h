// Helpers shared by the GoogleTest files (included only from *_test.cc).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "util/error.h"

namespace whittle {

// Runs `fn`, which must throw exactly a whittle::Error whose message holds every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    for (const auto& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-whittle exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "did not throw";
}

}  // namespace whittle
