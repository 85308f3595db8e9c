// libFuzzer target for the GSM8K jsonl reader and the answer rule of `whittle eval --task
// arith|gsm8k` (outside input: the test set a user brings, and whatever a model generates). The
// reader either returns items or throws whittle::Error naming the source and line; every item has
// a non-empty gold answer. extract_answer on any text returns nothing or a normalised number with a
// digit. Any other exception, a crash or a sanitizer report is a finding.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "eval/gsm8k.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<char> buffer(data, data + size);  // exactly sized: reads past the end are reported
  const std::string_view text(buffer.data(), buffer.size());

  try {
    for (const whittle::QaItem& item : whittle::parse_qa_jsonl(text, "fuzz.jsonl")) {
      if (item.gold.empty() || item.line < 1) __builtin_trap();
      if (item.answer.find("####") == std::string::npos) __builtin_trap();
    }
  } catch (const whittle::Error& e) {
    if (std::strncmp(e.what(), "fuzz.jsonl", 10) != 0) __builtin_trap();  // names the source
  }

  if (const auto answer = whittle::extract_answer(text)) {
    if (answer->empty() || answer->find(',') != std::string::npos) __builtin_trap();
    if (std::none_of(answer->begin(), answer->end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      __builtin_trap();
  }
  (void)whittle::normalize_answer(text);
  return 0;
}
