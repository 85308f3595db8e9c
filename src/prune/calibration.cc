// Calibration documents, their seeded order and the packed samples; see calibration.h.
#include "prune/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>

#include "io/json_excerpt.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kEndOfText = "<|endoftext|>";
constexpr std::string_view kCorpusSeparator = "\n<|endoftext|>\n";  // docs_format.py's SEP
// How a corpus-form file written without its final newline ends.
constexpr std::string_view kCorpusTail = "\n<|endoftext|>";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), is_space);
}

int64_t line_at(std::string_view text, size_t offset) {
  return 1 + std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(offset), '\n');
}

bool has_jsonl_extension(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
  return ext == ".jsonl";
}

// Reads `path` whole; refuses a file with nothing but whitespace.
std::string read_nonempty(const std::filesystem::path& path) {
  std::string text = read_file(path);
  if (is_blank(text)) fail("{}: empty calibration file", path.string());
  return text;
}

// Plain text: docs_format.py's split_docs (corpus form when the file holds "\n<|endoftext|>\n",
// else stream form), with each document's trailing newlines dropped and blank ones skipped.
void read_text_documents(const std::filesystem::path& path, size_t file_index,
                         std::vector<CalibrationDocument>* out) {
  const std::string text = read_nonempty(path);
  if (auto bad = find_invalid_utf8(text)) {
    const size_t line_start = *bad == 0 ? std::string::npos : text.rfind('\n', *bad - 1);
    const size_t column = line_start == std::string::npos ? *bad + 1 : *bad - line_start;
    fail("{}:{}: invalid UTF-8 at byte {} of the line", path.string(), line_at(text, *bad), column);
  }
  const std::string_view all(text);
  const bool corpus_form = all.find(kCorpusSeparator) != std::string_view::npos;
  const std::string_view separator = corpus_form ? kCorpusSeparator : kEndOfText;
  const size_t before = out->size();
  size_t counted_to = 0;  // lines are counted incrementally: a file may hold many documents
  int64_t line = 1;
  for (size_t pos = 0; pos < all.size();) {
    size_t end = all.find(separator, pos);
    if (end == std::string_view::npos) end = all.size();
    std::string_view doc = all.substr(pos, end - pos);
    if (corpus_form && end == all.size() && doc.ends_with(kCorpusTail))
      doc.remove_suffix(kCorpusTail.size());
    while (!doc.empty() && doc.back() == '\n') doc.remove_suffix(1);
    line += std::count(all.begin() + counted_to, all.begin() + pos, '\n');
    counted_to = pos;
    if (!is_blank(doc)) out->push_back({std::string(doc), file_index, line});
    pos = end + separator.size();
  }
  if (out->size() == before)
    fail("{}: no documents (only separators and blank text)", path.string());
}

void read_jsonl_documents(const std::filesystem::path& path, size_t file_index,
                          const Glm5ChatTemplate* chat, std::vector<CalibrationDocument>* out) {
  const std::string text = read_nonempty(path);
  const std::string source = path.string();
  const std::string_view all(text);
  int64_t line_no = 0;
  for (size_t pos = 0; pos < all.size();) {
    size_t end = all.find('\n', pos);
    if (end == std::string_view::npos) end = all.size();
    const std::string_view line = all.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (is_blank(line)) continue;
    if (auto bad = find_invalid_utf8(line))
      fail("{}:{}: invalid UTF-8 at byte {} of the line", source, line_no, *bad + 1);
    ojson j;
    try {
      j = ojson::parse(line);
    } catch (const ojson::parse_error& e) {
      fail("{}:{}: malformed JSON near byte {} of the line", source, line_no, e.byte);
    } catch (const ojson::exception& e) {
      fail("{}:{}: malformed JSON: {}", source, line_no, e.what());
    }
    if (!j.is_object())
      fail("{}:{}: expected a JSON object with \"text\" or \"messages\", got {}", source, line_no,
           json_excerpt(j));
    const auto text_it = j.find("text");
    const auto messages_it = j.find("messages");
    if (text_it != j.end() && messages_it != j.end())
      fail("{}:{}: both \"text\" and \"messages\"; expected one of them", source, line_no);
    if (text_it == j.end() && messages_it == j.end())
      fail("{}:{}: neither \"text\" nor \"messages\"", source, line_no);
    CalibrationDocument doc{{}, file_index, line_no};
    if (text_it != j.end()) {
      if (!text_it->is_string())
        fail("{}:{}: field 'text' must be a string, got {}", source, line_no,
             json_excerpt(*text_it));
      doc.text = text_it->get<std::string>();
      if (is_blank(doc.text)) fail("{}:{}: field 'text' is empty", source, line_no);
    } else {
      if (!messages_it->is_array() || messages_it->empty())
        fail("{}:{}: field 'messages' must be a non-empty array of messages, got {}", source,
             line_no, json_excerpt(*messages_it));
      if (!chat)
        fail(
            "{}:{}: 'messages' must be rendered with the model's chat template, and none was "
            "given",
            source, line_no);
      const auto tools_it = j.find("tools");
      const ojson tools = tools_it == j.end() ? ojson() : *tools_it;
      try {
        doc.text = chat->render(*messages_it, tools, ChatTemplateOptions{});
      } catch (const Error& e) {
        fail("{}:{}: {}", source, line_no, e.what());
      }
    }
    out->push_back(std::move(doc));
  }
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias: values below 2^64 mod bound are redrawn.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t x = next();
      if (x >= threshold) return x % bound;
    }
  }

 private:
  uint64_t state_;
};

std::string describe_files(std::span<const std::filesystem::path> files) {
  if (files.size() == 1) return files[0].string();
  if (files.size() <= 3) {
    std::string s;
    for (size_t i = 0; i < files.size(); ++i) s += (i ? ", " : "") + files[i].string();
    return s;
  }
  return fmt::format("the {} calibration files", files.size());
}

}  // namespace

std::vector<CalibrationDocument> read_calibration_documents(
    std::span<const std::filesystem::path> files, const Glm5ChatTemplate* chat) {
  if (files.empty()) fail("no calibration files given");
  std::vector<CalibrationDocument> docs;
  for (size_t i = 0; i < files.size(); ++i) {
    if (has_jsonl_extension(files[i]))
      read_jsonl_documents(files[i], i, chat, &docs);
    else
      read_text_documents(files[i], i, &docs);
  }
  return docs;
}

std::vector<size_t> calibration_permutation(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  SplitMix64 rng(seed);
  for (size_t i = n; i-- > 1;) std::swap(order[i], order[rng.below(i + 1)]);
  return order;
}

uint64_t calibration_fingerprint(const std::vector<std::vector<int32_t>>& samples) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& sample : samples)
    for (int32_t id : sample) {
      const auto u = static_cast<uint32_t>(id);
      for (int shift = 0; shift < 32; shift += 8) {
        h ^= (u >> shift) & 0xFF;
        h *= 0x100000001b3ull;
      }
    }
  return h;
}

CalibrationSet load_calibration(std::span<const std::filesystem::path> files,
                                const BpeTokenizer& tokenizer, const Glm5ChatTemplate* chat,
                                const CalibrationOptions& options) {
  WHITTLE_CHECK(options.samples >= 1, "calibration: samples must be at least 1, got {}",
                options.samples);
  WHITTLE_CHECK(options.seqlen >= 1, "calibration: sequence length must be at least 1, got {}",
                options.seqlen);
  WHITTLE_CHECK(options.samples <= std::numeric_limits<int64_t>::max() / options.seqlen,
                "calibration: {} samples of {} tokens is too many tokens", options.samples,
                options.seqlen);
  const std::optional<int32_t> separator = tokenizer.token_to_id(kEndOfText);
  WHITTLE_CHECK(separator.has_value(),
                "{}: the tokenizer has no {} token to separate calibration documents",
                tokenizer.source_name(), kEndOfText);

  const std::vector<CalibrationDocument> docs = read_calibration_documents(files, chat);
  const std::vector<size_t> order = calibration_permutation(docs.size(), options.seed);
  const int64_t needed = options.samples * options.seqlen;

  CalibrationSet set;
  set.documents = static_cast<int64_t>(docs.size());
  set.separator = *separator;
  std::vector<int32_t> stream;
  std::vector<int64_t> starts;  // where each tokenized document begins in `stream`
  for (size_t k = 0; k < order.size() && static_cast<int64_t>(stream.size()) < needed; ++k) {
    const CalibrationDocument& doc = docs[order[k]];
    std::vector<int32_t> ids;
    try {
      ids = tokenizer.encode(doc.text, /*parse_special=*/true);
    } catch (const Error& e) {
      fail("{}:{}: {}", files[doc.file].string(), doc.line, e.what());
    }
    starts.push_back(static_cast<int64_t>(stream.size()));
    stream.insert(stream.end(), ids.begin(), ids.end());
    stream.push_back(*separator);
  }
  set.tokens_read = static_cast<int64_t>(stream.size());

  const int64_t available = set.tokens_read / options.seqlen;
  if (available == 0)
    fail(
        "calibration: {} hold{} {} tokens in {} document{} (each followed by {}); one sample of {} "
        "tokens needs {} ({} samples need {})",
        describe_files(files), files.size() == 1 ? "s" : "", set.tokens_read, set.documents,
        set.documents == 1 ? "" : "s", kEndOfText, options.seqlen, options.seqlen, options.samples,
        needed);
  const int64_t count = std::min(available, options.samples);
  if (count < options.samples)
    set.warning = fmt::format(
        "calibration: only {} of the {} samples of {} tokens asked for: {} hold{} {} tokens, {} "
        "needed; using {} samples ({} tokens)",
        count, options.samples, options.seqlen, describe_files(files), files.size() == 1 ? "s" : "",
        set.tokens_read, needed, count, count * options.seqlen);

  set.samples.reserve(static_cast<size_t>(count));
  for (int64_t s = 0; s < count; ++s)
    set.samples.emplace_back(stream.begin() + s * options.seqlen,
                             stream.begin() + (s + 1) * options.seqlen);
  const int64_t used_tokens = count * options.seqlen;
  set.documents_used = std::count_if(starts.begin(), starts.end(),
                                     [&](int64_t start) { return start < used_tokens; });
  set.fingerprint = calibration_fingerprint(set.samples);
  return set;
}

}  // namespace whittle
