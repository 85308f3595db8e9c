// Error: the one exception type whittle throws for bad input or failed I/O. Its message always
// names what was being read (file, tensor, field) and what was expected, so a user can act on it.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace whittle {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Checks an invariant of outside input; throws Error with the formatted message when it does not
// hold.
#define WHITTLE_CHECK(cond, ...)               \
  do {                                         \
    if (!(cond)) ::whittle::fail(__VA_ARGS__); \
  } while (0)

}  // namespace whittle
