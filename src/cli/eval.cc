// `whittle eval MODEL --task ppl|arith|gsm8k|loops`: loads the model once and runs each task in
// turn (eval/tasks.h), printing a small table per task or, with --json, one JSON object per task
// per line. Which --data files a task reads, and each task's defaults, are described in
// docs/EVAL.md and the help text below.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "eval/report.h"
#include "eval/tasks.h"
#include "util/error.h"

namespace whittle::cli {
namespace fs = std::filesystem;

namespace {

constexpr const char* kDescription =
    R"(Evaluate a model: perplexity, answer accuracy, repetition loops.

Tasks (several allowed: --task ppl --task arith, or --task ppl,arith):
  ppl    perplexity and bits per byte of each text file, sliding window: windows of --ctx tokens every
         --stride tokens, each token scored once with its window as context. A file's first token is
         context only (not scored; its bytes are left out of bits/byte) unless --doc-start puts a
         token before it. Softmax over the tokenizer's ids only (padding rows excluded).
  arith  GSM8K-format word problems (default: MODEL/eval/arith_one_step.jsonl, arith_two_step.jsonl).
  gsm8k  GSM8K jsonl that you bring (--data test.jsonl; fields question, answer).
         Both: prompt = question + "\n", greedy, stop at EOS, any special token, the end of the line
         holding '####', or --max-tokens. Prediction = the number after the first '####' in the output
         (GSM8K's rule); none = wrong. Gold = text after '####' in answer; commas, surrounding blanks
         and a trailing '.' dropped on both sides before comparing.
  loops  --prompts prompts (evenly spaced 32-token snippets of text files, or questions of jsonl
         files; default MODEL/eval/*.txt), each sampled at --temperature/--top-p with seed + index.
         An output LOOPS when, for some period p >= 1, its last max(64, 3p) tokens repeat with period
         p (x[i] == x[i-p]): >= 3 back-to-back copies of one span covering >= 64 final tokens.

--data: .jsonl files go to arith/gsm8k, other files to ppl, all to loops; a task given none of its
kind uses its default.)";

struct Options {
  std::string model;
  std::vector<std::string> tasks;
  std::vector<std::string> data;
  bool json = false, quiet = false;
  int64_t ctx = 0, stride = 0, limit = 0, max_tokens = 256, prompts = 20, threads = 0;
  bool reference = false;
  float temperature = 0.8f, top_p = 1.0f;
  uint64_t seed = 0;
  std::string doc_start;
};

// Which tasks read a --data file: .jsonl files go to arith, gsm8k and loops, others to ppl and
// loops.
bool task_reads(const std::string& task, const fs::path& file) {
  const bool jsonl = file.extension() == ".jsonl";
  return task == "loops" || (task == "ppl") != jsonl;
}

// A --data file no chosen task reads would be dropped without a word, and the task would run on its
// default files instead: refuse it.
void check_every_file_is_read(const std::vector<std::string>& tasks,
                              const std::vector<std::string>& data) {
  for (const auto& d : data) {
    if (std::any_of(tasks.begin(), tasks.end(),
                    [&](const std::string& t) { return task_reads(t, d); }))
      continue;
    fail(
        "--data {}: no --task given reads it (tasks given: {}; a .jsonl file is read by arith, "
        "gsm8k and "
        "loops, any other file by ppl and loops)",
        d, fmt::join(tasks, ", "));
  }
}

std::vector<fs::path> eval_files(const fs::path& model, const std::string& extension) {
  std::vector<fs::path> out;
  const fs::path dir = model / "eval";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == extension) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The --data files a task reads, else its default; throws Error when it has neither.
std::vector<fs::path> files_for(const std::string& task, const Options& o) {
  std::vector<fs::path> given;
  for (const auto& d : o.data)
    if (task_reads(task, d)) given.emplace_back(d);
  if (!given.empty()) return given;
  const fs::path model(o.model);
  std::vector<fs::path> defaults;
  if (task == "ppl" || task == "loops") {
    defaults = eval_files(model, ".txt");
    if (defaults.empty())
      fail("--task {}: no text files: pass --data FILE (default: {}/*.txt, none found)", task,
           (model / "eval").string());
  } else if (task == "arith") {
    for (const char* name : {"arith_one_step.jsonl", "arith_two_step.jsonl"})
      if (fs::exists(model / "eval" / name)) defaults.push_back(model / "eval" / name);
    if (defaults.empty())
      fail(
          "--task arith: no .jsonl files: pass --data FILE.jsonl (default: "
          "{}/arith_{{one,two}}_step.jsonl, none found)",
          (model / "eval").string());
  } else {
    fail(
        "--task gsm8k: pass --data FILE.jsonl (GSM8K's jsonl: one {{\"question\", \"answer\"}} per "
        "line)");
  }
  return defaults;
}

}  // namespace

Command add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", kDescription);
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--task", o->tasks, "ppl, arith, gsm8k, loops (repeat or comma-separate)")
      ->required()
      ->delimiter(',')
      ->check(CLI::IsMember({"ppl", "arith", "gsm8k", "loops"}));
  cmd->add_option("--data", o->data,
                  "Input files (text for ppl/loops, .jsonl for arith/gsm8k/loops)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--json", o->json,
                "One JSON object per task per line (all numbers, settings, per-item outputs)");
  cmd->add_option("--ctx", o->ctx,
                  "ppl: window length in tokens, at most max_position_embeddings (default min(512, "
                  "max_position_embeddings))")
      ->check(kPositiveInteger);
  cmd->add_option("--stride", o->stride, "ppl: window step in [1, ctx-1] (default ctx/2)")
      ->check(kPositiveInteger);
  cmd->add_option("--limit", o->limit,
                  "Only the first N items (arith/gsm8k) or tokens (ppl) of each file; 0 = all")
      ->capture_default_str()
      ->check(kNonNegativeInteger);
  cmd->add_option(
         "-n,--max-tokens", o->max_tokens,
         "arith/gsm8k/loops: most new tokens per output (fewer where the model's context ends)")
      ->capture_default_str()
      ->check(kNonNegativeInteger);
  cmd->add_option("--prompts", o->prompts, "loops: number of prompts")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("-t,--temperature", o->temperature, "loops: sampling temperature (0 = greedy)")
      ->capture_default_str()
      ->check(kFiniteNonNegative);
  cmd->add_option("--top-p", o->top_p, "loops: nucleus sampling mass in (0, 1]")
      ->capture_default_str()
      ->check(kProbability);
  cmd->add_option("--seed", o->seed, "loops: prompt i is sampled with seed + i")
      ->capture_default_str()
      ->check(kSeed);
  cmd->add_option(
      "--doc-start", o->doc_start,
      "A token put before every text, question and prompt, e.g. '<|endoftext|>' (default: none)");
  add_threads_option(cmd, o->threads);
  add_reference_option(cmd, o->reference);
  cmd->add_flag("-q,--quiet", o->quiet, "No progress on stderr");
  return [=] {
    require_model_folder(o->model);
    // Each task once, in the order given.
    std::vector<std::string> tasks;
    for (const auto& t : o->tasks)
      if (std::find(tasks.begin(), tasks.end(), t) == tasks.end()) tasks.push_back(t);
    // Resolve every task's files before loading anything, so a missing file fails fast.
    check_every_file_is_read(tasks, o->data);
    std::vector<std::vector<fs::path>> files;
    for (const auto& t : tasks) files.push_back(files_for(t, *o));

    BpeTokenizer tokenizer = BpeTokenizer::load(fs::path(o->model) / "tokenizer.json");
    ThreadPool pool(checked_thread_count(o->threads));
    GlmMoeDsa model =
        GlmMoeDsa::load(o->model, pool, o->reference ? Kernels::kReference : Kernels::kFast);
    if (tokenizer.vocab_size() > model.config().vocab_size)
      fail("{}: tokenizer has {} ids but the model's vocab_size is {}", o->model,
           tokenizer.vocab_size(), model.config().vocab_size);
    EvalSetup setup{.model_name = o->model,
                    .model = &model,
                    .tokenizer = &tokenizer,
                    .doc_start = o->doc_start.empty() ? std::nullopt : std::optional(o->doc_start),
                    .progress = !o->quiet};
    setup.prefix_ids();  // checks --doc-start names a token

    SlidingWindow window;
    const int64_t max_pos = model.config().max_position_embeddings;
    window.ctx = o->ctx > 0 ? o->ctx : (max_pos > 0 ? std::min<int64_t>(512, max_pos) : 512);
    window.stride = o->stride > 0 ? o->stride : std::max<int64_t>(1, window.ctx / 2);
    if (max_pos > 0 && window.ctx > max_pos)
      fail("--ctx {} exceeds the model's max_position_embeddings {}", window.ctx, max_pos);

    for (size_t i = 0; i < tasks.size(); ++i) {
      const std::string& task = tasks[i];
      nlohmann::ordered_json result;
      if (task == "ppl") {
        result = run_perplexity(setup, files[i], window, o->limit);
      } else if (task == "arith" || task == "gsm8k") {
        result = run_answers(setup, task, files[i], o->max_tokens, o->limit);
      } else {
        LoopsOptions lo{.prompts = o->prompts,
                        .max_tokens = o->max_tokens,
                        .temperature = o->temperature,
                        .top_p = o->top_p,
                        .seed = o->seed};
        result = run_loops(setup, files[i], lo);
      }
      std::string text =
          o->json ? result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
                  : (i > 0 ? "\n" : "") + format_report(result);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    return 0;
  };
}

}  // namespace whittle::cli
