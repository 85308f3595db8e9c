// The eval tasks; see tasks.h and docs/EVAL.md.
#include "eval/tasks.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "eval/gsm8k.h"
#include "serve/generation.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/progress.h"

namespace whittle {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::vector<std::string> names(const std::vector<fs::path>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) out.push_back(f.string());
  return out;
}

// A float option as the decimal the user typed (0.8, not 0.800000011920929).
double as_decimal(float x) {
  return std::stod(fmt::format("{}", x));
}

bool is_jsonl(const fs::path& f) {
  return f.extension() == ".jsonl";
}

int64_t byte_count(const BpeTokenizer& tok, std::span<const int32_t> ids) {
  int64_t n = 0;
  for (int32_t id : ids) n += static_cast<int64_t>(tok.token_bytes(id).size());
  return n;
}

// Perplexity numbers from a total NLL (nats), the tokens it covers and their UTF-8 bytes.
void put_scores(ordered_json& j, double nll, int64_t tokens, int64_t bytes) {
  j["nll"] = nll;
  j["nll_per_token"] = tokens > 0 ? nll / tokens : 0.0;
  j["ppl"] = tokens > 0 ? std::exp(nll / tokens) : 1.0;
  j["bits_per_byte"] = bytes > 0 ? nll / std::numbers::ln2 / bytes : 0.0;
}

// fn(), with an Error it throws prefixed by `where` (the file and line or prompt it came from).
template <typename Fn>
auto blaming(const std::string& where, Fn&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
}

std::vector<int32_t> encode_or_fail(const BpeTokenizer& tok, std::string_view text,
                                    const std::string& where) {
  return blaming(where, [&] { return tok.encode(text); });
}

}  // namespace

std::vector<int64_t> EvalSetup::stop_ids() const {
  std::vector<int64_t> ids = model->config().eos_token_ids;
  for (const AddedToken& t : tokenizer->added_tokens())
    if (t.special && std::find(ids.begin(), ids.end(), t.id) == ids.end()) ids.push_back(t.id);
  return ids;
}

std::vector<int32_t> EvalSetup::prefix_ids() const {
  if (!doc_start) return {};
  auto id = tokenizer->token_to_id(*doc_start);
  if (!id) fail("--doc-start: '{}' is not a token of {}", *doc_start, tokenizer->source_name());
  return {*id};
}

ordered_json run_perplexity(const EvalSetup& setup, const std::vector<fs::path>& files,
                            const SlidingWindow& window, int64_t limit) {
  validate(window);
  const BpeTokenizer& tok = *setup.tokenizer;
  const std::vector<int32_t> prefix = setup.prefix_ids();
  ordered_json result = {
      {"task", "ppl"},
      {"model", setup.model_name},
      {"data", names(files)},
      {"ctx", window.ctx},
      {"stride", window.stride},
      {"doc_start", setup.doc_start ? ordered_json(*setup.doc_start) : ordered_json()},
      {"limit", limit}};
  ordered_json per_file = ordered_json::array();
  double total_nll = 0;
  int64_t total_tokens = 0, total_scored = 0, total_bytes = 0, total_scored_bytes = 0;
  for (const fs::path& file : files) {
    std::vector<int32_t> ids = encode_or_fail(tok, read_file(file), file.string());
    if (limit > 0 && static_cast<int64_t>(ids.size()) > limit)
      ids.resize(static_cast<size_t>(limit));
    std::vector<int32_t> seq = prefix;
    seq.insert(seq.end(), ids.begin(), ids.end());
    if (seq.size() < 2)
      fail(
          "{}: {} token(s): too short to score (the first token of a file is context only; see "
          "--doc-start)",
          file.string(), ids.size());
    const int64_t n = static_cast<int64_t>(seq.size());
    Progress progress("ppl " + file.filename().string(), n - 1, "tokens",
                      {.enabled = setup.progress});
    SequenceNll nll = sliding_window_nll(*setup.model, seq, window, tok.vocab_size(),
                                         [&](int64_t k) { progress.advance(k); });
    progress.finish();
    // Without a document-start token the file's first token is context only: its bytes are not
    // predicted, so they are not in the bits-per-byte denominator either.
    const int64_t bytes = byte_count(tok, ids);
    const int64_t scored_bytes = byte_count(tok, std::span<const int32_t>(seq).subspan(1));
    ordered_json f = {{"file", file.string()},           {"tokens", ids.size()},
                      {"scored_tokens", nll.nll.size()}, {"bytes", bytes},
                      {"scored_bytes", scored_bytes},    {"windows", nll.windows}};
    put_scores(f, nll.total, static_cast<int64_t>(nll.nll.size()), scored_bytes);
    per_file.push_back(std::move(f));
    total_nll += nll.total;
    total_tokens += static_cast<int64_t>(ids.size());
    total_scored += static_cast<int64_t>(nll.nll.size());
    total_bytes += bytes;
    total_scored_bytes += scored_bytes;
  }
  ordered_json total = {{"tokens", total_tokens},
                        {"scored_tokens", total_scored},
                        {"bytes", total_bytes},
                        {"scored_bytes", total_scored_bytes}};
  put_scores(total, total_nll, total_scored, total_scored_bytes);
  result["total"] = std::move(total);
  result["files"] = std::move(per_file);
  return result;
}

ordered_json run_answers(const EvalSetup& setup, const std::string& task,
                         const std::vector<fs::path>& files, int64_t max_tokens, int64_t limit) {
  const BpeTokenizer& tok = *setup.tokenizer;
  const std::vector<int32_t> prefix = setup.prefix_ids();
  std::vector<std::vector<QaItem>> sets;
  size_t n_items = 0;
  for (const fs::path& file : files) {
    sets.push_back(read_qa_jsonl(file));  // validates every file before any generation
    if (limit > 0 && static_cast<int64_t>(sets.back().size()) > limit)
      sets.back().resize(static_cast<size_t>(limit));
    n_items += sets.back().size();
  }
  const GenerationOptions gen{.max_tokens = max_tokens,
                              .sampling = {.temperature = 0.0f},
                              .sample_vocab = tok.vocab_size(),
                              .stop_ids = setup.stop_ids()};
  ordered_json result = {
      {"task", task},
      {"model", setup.model_name},
      {"data", names(files)},
      {"sampling", "greedy"},
      {"max_tokens", max_tokens},
      {"doc_start", setup.doc_start ? ordered_json(*setup.doc_start) : ordered_json()},
      {"limit", limit}};
  ordered_json per_file = ordered_json::array(), items = ordered_json::array();
  int64_t correct = 0, no_answer = 0;
  Progress progress(task, static_cast<int64_t>(n_items), "items", {.enabled = setup.progress});
  KvCache cache(setup.model->config());
  for (size_t fi = 0; fi < files.size(); ++fi) {
    int64_t file_correct = 0, file_no_answer = 0;
    for (const QaItem& item : sets[fi]) {
      std::vector<int32_t> ids = prefix;
      const std::string where = fmt::format("{}:{}", files[fi].string(), item.line);
      std::vector<int32_t> q = encode_or_fail(tok, item.question + "\n", where);
      ids.insert(ids.end(), q.begin(), q.end());
      // Stop at the end of the line holding the first "####": the answer is complete, and what a
      // model writes after it (often the next problem) is never read.
      StreamDecoder stream(tok, /*skip_special=*/true);
      std::string text;
      cache.clear();
      // A question longer than the model's context is an error naming its line; an answer cut
      // short by the context ends with stop "context full".
      GenerationResult r = blaming(where, [&] {
        return generate(*setup.model, cache, ids, gen, [&](int32_t token) {
          text += stream.push(token);
          size_t mark = text.find("####");
          return mark == std::string::npos || text.find('\n', mark) == std::string::npos;
        });
      });
      text += stream.flush();
      std::optional<std::string> prediction = extract_answer(text);
      const bool ok = prediction && *prediction == item.gold;
      file_correct += ok;
      file_no_answer += !prediction;
      items.push_back({{"file", files[fi].string()},
                       {"line", item.line},
                       {"question", item.question},
                       {"gold", item.gold},
                       {"prediction", prediction ? ordered_json(*prediction) : ordered_json()},
                       {"correct", ok},
                       {"generated_tokens", r.tokens.size()},
                       {"stop", stop_reason_name(r.stop)},
                       {"output", text}});
      progress.advance();
    }
    const auto n = static_cast<int64_t>(sets[fi].size());
    per_file.push_back({{"file", files[fi].string()},
                        {"items", n},
                        {"correct", file_correct},
                        {"accuracy", static_cast<double>(file_correct) / n},
                        {"no_answer", file_no_answer}});
    correct += file_correct;
    no_answer += file_no_answer;
  }
  progress.finish();
  result["items"] = n_items;
  result["correct"] = correct;
  result["accuracy"] = n_items ? static_cast<double>(correct) / static_cast<double>(n_items) : 0.0;
  result["no_answer"] = no_answer;
  result["files"] = std::move(per_file);
  result["outputs"] = std::move(items);
  return result;
}

namespace {

struct LoopPrompt {
  std::string source;  // "file@token" or "file:line"
  std::vector<int32_t> ids;
  std::string text;
};

// `n` prompts from one file: snippets of `len` tokens at evenly spaced token offsets of a text
// file, or the questions of evenly spaced items of a jsonl file.
std::vector<LoopPrompt> prompts_from(const BpeTokenizer& tok, const fs::path& file, int64_t n,
                                     int64_t len) {
  std::vector<LoopPrompt> out;
  if (is_jsonl(file)) {
    std::vector<QaItem> items = read_qa_jsonl(file);
    const auto m = static_cast<int64_t>(items.size());
    for (int64_t j = 0; j < n; ++j) {
      const QaItem& item = items[static_cast<size_t>(j * m / n)];
      std::string text = item.question + "\n";
      std::string where = fmt::format("{}:{}", file.string(), item.line);
      out.push_back({where, encode_or_fail(tok, text, where), text});
    }
    return out;
  }
  std::vector<int32_t> ids = encode_or_fail(tok, read_file(file), file.string());
  if (ids.empty()) fail("{}: no text to take loop prompts from", file.string());
  const auto total = static_cast<int64_t>(ids.size());
  len = std::min(len, total);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t start = (total - len) * j / n;
    std::vector<int32_t> snippet(ids.begin() + start, ids.begin() + start + len);
    out.push_back({fmt::format("{}@{}", file.string(), start), snippet, tok.decode(snippet)});
  }
  return out;
}

}  // namespace

ordered_json run_loops(const EvalSetup& setup, const std::vector<fs::path>& files,
                       const LoopsOptions& o) {
  if (o.prompts < 1) fail("--prompts must be at least 1, got {}", o.prompts);
  if (files.empty()) fail("loops: no prompt files");
  const BpeTokenizer& tok = *setup.tokenizer;
  const std::vector<int32_t> prefix = setup.prefix_ids();
  // Prompts are shared out over the files as evenly as possible, the first files taking the extra.
  std::vector<LoopPrompt> prompts;
  const auto n_files = static_cast<int64_t>(files.size());
  for (int64_t f = 0; f < n_files; ++f) {
    const int64_t n = o.prompts / n_files + (f < o.prompts % n_files);
    if (n == 0) continue;
    for (auto& p : prompts_from(tok, files[static_cast<size_t>(f)], n, o.prompt_tokens))
      prompts.push_back(std::move(p));
  }
  ordered_json result = {
      {"task", "loops"},
      {"model", setup.model_name},
      {"data", names(files)},
      {"prompts", prompts.size()},
      {"prompt_tokens", o.prompt_tokens},
      {"temperature", as_decimal(o.temperature)},
      {"top_p", as_decimal(o.top_p)},
      {"seed", o.seed},
      {"max_tokens", o.max_tokens},
      {"doc_start", setup.doc_start ? ordered_json(*setup.doc_start) : ordered_json()},
      {"rule", {{"min_tail", o.rule.min_tail}, {"min_repeats", o.rule.min_repeats}}}};
  GenerationOptions gen{.max_tokens = o.max_tokens,
                        .sampling = {.temperature = o.temperature, .top_p = o.top_p},
                        .sample_vocab = tok.vocab_size(),
                        .stop_ids = setup.stop_ids()};
  ordered_json items = ordered_json::array();
  int64_t looping = 0;
  Progress progress("loops", static_cast<int64_t>(prompts.size()), "prompts",
                    {.enabled = setup.progress});
  KvCache cache(setup.model->config());
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> ids = prefix;
    ids.insert(ids.end(), prompts[i].ids.begin(), prompts[i].ids.end());
    gen.sampling.seed = o.seed + i;
    cache.clear();
    GenerationResult r =
        blaming(prompts[i].source, [&] { return generate(*setup.model, cache, ids, gen); });
    std::optional<LoopMatch> loop = detect_loop(r.tokens, o.rule);
    looping += loop.has_value();
    items.push_back({{"index", i},
                     {"source", prompts[i].source},
                     {"prompt", prompts[i].text},
                     {"generated_tokens", r.tokens.size()},
                     {"stop", stop_reason_name(r.stop)},
                     {"loops", loop.has_value()},
                     {"period", loop ? ordered_json(loop->period) : ordered_json()},
                     {"repeated_tail", loop ? ordered_json(loop->tail) : ordered_json()},
                     {"output", tok.decode(r.tokens, /*skip_special=*/true)}});
    progress.advance();
  }
  progress.finish();
  result["looping"] = looping;
  result["rate"] =
      prompts.empty() ? 0.0 : static_cast<double>(looping) / static_cast<double>(prompts.size());
  result["outputs"] = std::move(items);
  return result;
}

}  // namespace whittle
