// The tasks of `whittle eval`: perplexity over text files, GSM8K-style answer accuracy (arith,
// gsm8k) and repetition-loop probes. Each runs on a loaded model and tokenizer and returns one
// JSON object holding its settings, totals and per-file / per-item details; eval/report.h turns
// that object into the human table, so both outputs always carry the same numbers.
// The rules (windows, answer extraction, loop detection, prompts) are written down in docs/EVAL.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/loop_detector.h"
#include "eval/perplexity.h"
#include "model/glm_moe_dsa.h"
#include "tokenizer/bpe_tokenizer.h"

namespace whittle {

struct EvalSetup {
  std::string model_name;  // as the user gave it, for the report
  GlmMoeDsa* model = nullptr;
  const BpeTokenizer* tokenizer = nullptr;
  // Prepended to every sequence (text, question, prompt) when set: e.g. <|endoftext|>.
  std::optional<std::string> doc_start;
  bool progress = true;  // progress on stderr

  // Ids that end generation: the model's EOS ids and every special token of the tokenizer (a
  // plain-text task that emits one has left the text).
  std::vector<int64_t> stop_ids() const;
  std::vector<int32_t> prefix_ids() const;  // [doc_start id] or []
};

// Token-level perplexity and bits per byte for each file, sliding window. limit > 0: only the first
// `limit` tokens of each file.
nlohmann::ordered_json run_perplexity(const EvalSetup& setup,
                                      const std::vector<std::filesystem::path>& files,
                                      const SlidingWindow& window, int64_t limit = 0);

// Greedy answers to GSM8K-format items (task "arith" or "gsm8k"): prompt = question + "\n",
// answer read by extract_answer(). limit > 0: only the first `limit` items of each file.
nlohmann::ordered_json run_answers(const EvalSetup& setup, const std::string& task,
                                   const std::vector<std::filesystem::path>& files,
                                   int64_t max_tokens, int64_t limit = 0);

struct LoopsOptions {
  int64_t prompts = 20;
  int64_t prompt_tokens = 32;  // length of a snippet taken from a text file
  int64_t max_tokens = 256;
  float temperature = 0.8f;
  float top_p = 1.0f;
  uint64_t seed = 0;  // prompt i is sampled with seed + i
  LoopRule rule{};
};

// Samples one output per prompt and counts the outputs that end in a loop (detect_loop).
nlohmann::ordered_json run_loops(const EvalSetup& setup,
                                 const std::vector<std::filesystem::path>& files,
                                 const LoopsOptions& options);

}  // namespace whittle
