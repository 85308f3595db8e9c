// GSM8K items and answer extraction; see gsm8k.h.
#include "eval/gsm8k.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "io/json_excerpt.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

}  // namespace

std::string normalize_answer(std::string_view text) {
  size_t b = 0, e = text.size();
  while (b < e && is_space(text[b])) ++b;
  while (e > b && is_space(text[e - 1])) --e;
  std::string out;
  for (char c : text.substr(b, e - b))
    if (c != ',') out += c;
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

std::optional<std::string> extract_answer(std::string_view s) {
  for (size_t at = s.find("####"); at != std::string_view::npos; at = s.find("####", at + 1)) {
    size_t i = at + 4;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    size_t start = i;
    if (i < s.size() && s[i] == '-') ++i;
    size_t digits_from = i;
    bool has_digit = false;
    while (i < s.size() && (is_digit(s[i]) || s[i] == '.' || s[i] == ','))
      has_digit |= is_digit(s[i++]);
    // GSM8K's regex accepts "." or "," alone; a number needs a digit to be worth comparing.
    if (i > digits_from && has_digit) return normalize_answer(s.substr(start, i - start));
  }
  return std::nullopt;
}

std::vector<QaItem> read_qa_jsonl(const std::filesystem::path& path) {
  return parse_qa_jsonl(read_file(path), path.string());
}

std::vector<QaItem> parse_qa_jsonl(std::string_view text, const std::string& source) {
  std::vector<QaItem> items;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (std::all_of(line.begin(), line.end(), is_space)) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail("{}:{}: malformed JSON line", source, line_no);
    if (!j.is_object())
      fail("{}:{}: expected a JSON object, got {}", source, line_no, json_excerpt(j));
    QaItem item;
    item.line = line_no;
    for (auto [field, out] :
         {std::pair{"question", &item.question}, std::pair{"answer", &item.answer}}) {
      auto it = j.find(field);
      if (it == j.end()) fail("{}:{}: missing field '{}'", source, line_no, field);
      if (!it->is_string())
        fail("{}:{}: field '{}' must be a string, got {}", source, line_no, field,
             json_excerpt(*it));
      *out = it->get<std::string>();
    }
    size_t mark = item.answer.find("####");
    if (mark == std::string::npos)
      fail("{}:{}: 'answer' has no '#### <answer>' (GSM8K format)", source, line_no);
    item.gold = normalize_answer(std::string_view(item.answer).substr(mark + 4));
    if (item.gold.empty()) fail("{}:{}: nothing after '####' in 'answer'", source, line_no);
    items.push_back(std::move(item));
  }
  if (items.empty())
    fail("{}: no items (expected GSM8K jsonl: one {{\"question\", \"answer\"}} per line)", source);
  return items;
}

}  // namespace whittle
