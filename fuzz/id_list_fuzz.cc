// libFuzzer target for parse_id_list, the parser of `whittle logits --ids` (outside input: a
// command line). Any text either parses or throws whittle::Error naming the option; a parsed list
// has one id per comma-separated entry, each entry the decimal spelling of its id (up to leading
// zeros and a minus sign on zero). Any other exception, a crash or a sanitizer report is a finding.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cli/options.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<int64_t> ids;
  try {
    ids = whittle::cli::parse_id_list(text, "--ids");
  } catch (const whittle::Error& e) {
    if (std::strncmp(e.what(), "--ids: ", 7) != 0) __builtin_trap();
    return 0;
  }
  size_t entries = 1, start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ',') continue;
    if (i == start) __builtin_trap();  // an empty entry was accepted
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(text.data() + start, text.data() + i, v);
    if (ec != std::errc() || ptr != text.data() + i || entries > ids.size() ||
        ids[entries - 1] != v)
      __builtin_trap();
    if (i < text.size()) ++entries;
    start = i + 1;
  }
  if (entries != ids.size()) __builtin_trap();
  return 0;
}
