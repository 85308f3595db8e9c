// GSM8K-format question/answer items and the answer rule of `whittle eval --task arith|gsm8k`.
//
// An item is one jsonl line {"question": "...", "answer": "... #### 72"}; other fields are ignored.
// The gold answer is the text after the first "####" of `answer`. Answers are compared as strings
// after normalize_answer(): surrounding whitespace and every comma removed, then one trailing '.'.
// The prediction is read from the generated text by GSM8K's own rule (grade-school-math
// `extract_answer`: the first match of `#### (-?[0-9.,]+)`), relaxed to allow any run of spaces or
// tabs (or none) after "####"; no match means no answer, which counts as wrong.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace whittle {

struct QaItem {
  int64_t line = 0;  // 1-based line number in its file
  std::string question, answer;
  std::string gold;  // normalize_answer(text after "####" in answer)
};

// Reads a GSM8K jsonl file; blank lines are skipped. Throws Error naming the file and line for a
// line that is not a JSON object, lacks a string `question` or `answer`, or whose answer has no
// "####" followed by text; and for a file without items.
std::vector<QaItem> read_qa_jsonl(const std::filesystem::path& path);
// Same, on text already in memory; `source` names it in errors.
std::vector<QaItem> parse_qa_jsonl(std::string_view text, const std::string& source);

// Strips whitespace, removes commas, then one trailing '.' ("1,234." -> "1234").
std::string normalize_answer(std::string_view text);

// The normalised number after the first "####" that is followed by one, or nullopt.
std::optional<std::string> extract_answer(std::string_view generated);

}  // namespace whittle
