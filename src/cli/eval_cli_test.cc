// `whittle eval` end to end on models/tiny-glm5-random (random weights: accuracy is ~0, so these
// test mechanics): --json prints one parseable object per task per line with the settings and
// per-file / per-item details; the perplexity numbers equal the transformers golden and follow the
// documented first-token and bits-per-byte rules; results are reproducible for a seed; data files
// are routed by kind and defaults come from MODEL/eval/; bad input ends with a message naming the
// file and line.
#include <fmt/core.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>
#include <sstream>

#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

const fs::path kRoot = WHITTLE_SOURCE_DIR;
const std::string kModel = (kRoot / "models/tiny-glm5-random").string();
const std::string kText = (kRoot / "tests/golden/eval/ppl_text.txt").string();

struct Outcome {
  int status;
  std::string out;  // stdout
  std::string err;  // stderr
};

Outcome run_eval(const std::vector<std::string>& args) {
  static int counter = 0;
  const fs::path err =
      fs::temp_directory_path() /
      ("whittle_eval_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::vector<std::string> cmd = {WHITTLE_BINARY, "eval"};
  cmd.insert(cmd.end(), args.begin(), args.end());
  CommandOutcome run = run_command(cmd, "2>" + shell_quote(err.string()));
  Outcome r{run.status, run.output, ""};
  r.err = read_file(err);
  fs::remove(err);
  return r;
}

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> objects;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);  // throws (fails the test) if a line is not JSON
    EXPECT_TRUE(j.is_object()) << line;
    objects.push_back(std::move(j));
  }
  return objects;
}

// A scratch folder removed at the end of the test.
class Scratch {
 public:
  Scratch()
      : dir_(fs::temp_directory_path() /
             ("whittle_eval_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++))) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~Scratch() { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) const {
    fs::create_directories((dir_ / name).parent_path());
    write_file_atomic(dir_ / name, text);
    return (dir_ / name).string();
  }
  const fs::path& dir() const { return dir_; }

 private:
  static inline int counter_ = 0;
  fs::path dir_;
};

const std::string kArith =
    "{\"question\": \"Tom has 3 apples and buys 4 more. How many apples does he have?\", "
    "\"answer\": \"3 + 4 = 7\\n#### 7\"}\n"
    "{\"question\": \"A box holds 12 eggs. How many eggs are in 2 boxes?\", \"answer\": \"12 * 2 = "
    "24\\n#### 24\"}\n"
    "{\"question\": \"Sam had 1,000 coins and lost 1. How many are left?\", \"answer\": \"1000 - 1 "
    "= 999\\n#### 999\"}\n";

TEST(EvalCli, HelpDescribesTasksAndTheLoopRule) {
  Outcome r = run_eval({"--help"});
  ASSERT_EQ(r.status, 0);
  for (const char* s :
       {"MODEL", "--task", "ppl", "arith", "gsm8k", "loops", "--data", "--json", "--seed",
        "--limit", "--threads", "--ctx", "--stride", "max(64, 3p)", "first '####'"})
    EXPECT_THAT(r.out, HasSubstr(s));
  EXPECT_EQ(run_eval({kModel}).status, 2);  // --task is required
  EXPECT_EQ(run_eval({kModel, "--task", "bleu"}).status, 2);
}

TEST(EvalCli, PerplexityMatchesTheGoldenAndTheByteRule) {
  json golden = json::parse(read_file(kRoot / "tests/golden/eval/ppl_golden.json"));
  auto golden_case = [&](const std::string& name) {
    for (const auto& c : golden["cases"])
      if (c["name"] == name) return c;
    ADD_FAILURE() << name;
    return json();
  };
  BpeTokenizer tok = BpeTokenizer::load(fs::path(kModel) / "tokenizer.json");
  const auto first_bytes =
      static_cast<int64_t>(tok.token_bytes(golden["ids"][0].get<int32_t>()).size());
  const int64_t text_bytes = golden["text_bytes"];

  Outcome r = run_eval(
      {kModel, "--task", "ppl", "--data", kText, "--ctx", "32", "--stride", "16", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<json> lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  const json& res = lines[0];
  EXPECT_EQ(res["task"], "ppl");
  EXPECT_EQ(res["ctx"], 32);
  EXPECT_EQ(res["stride"], 16);
  EXPECT_TRUE(res["doc_start"].is_null());
  ASSERT_EQ(res["files"].size(), 1u);
  const json& f = res["files"][0];
  EXPECT_EQ(f["file"], kText);
  EXPECT_EQ(f["tokens"], golden["ids"].size());
  EXPECT_EQ(f["scored_tokens"], golden["ids"].size() - 1);  // the first token is context only
  EXPECT_EQ(f["bytes"], text_bytes);
  EXPECT_EQ(f["scored_bytes"], text_bytes - first_bytes);
  const double want = golden_case("ctx32_stride16")["total_nll"];
  const double nll = f["nll"];
  EXPECT_NEAR(nll, want, 1e-4 * want);
  EXPECT_NEAR(f["ppl"].get<double>(), std::exp(nll / f["scored_tokens"].get<double>()),
              1e-9 * f["ppl"].get<double>());
  EXPECT_NEAR(f["bits_per_byte"].get<double>(),
              nll / std::numbers::ln2 / (text_bytes - first_bytes), 1e-12);
  EXPECT_EQ(res["total"]["nll"], f["nll"]);

  // With a document-start token every text token is scored, and bits/byte covers the whole file.
  r = run_eval({kModel, "--task", "ppl", "--data", kText, "--ctx", "32", "--stride", "16",
                "--doc-start", "<|endoftext|>", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json g = json_lines(r.out).at(0)["files"][0];
  EXPECT_EQ(g["scored_tokens"], golden["ids"].size());
  EXPECT_EQ(g["scored_bytes"], text_bytes);
  const double want_doc = golden_case("ctx32_stride16_doc_start")["total_nll"];
  EXPECT_NEAR(g["nll"].get<double>(), want_doc, 1e-4 * want_doc);

  // The human table carries the same numbers.
  r = run_eval({kModel, "--task", "ppl", "--data", kText, "--ctx", "32", "--stride", "16", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("bits/byte"));
  EXPECT_THAT(r.out, HasSubstr(fmt::format("{:.4f}", f["bits_per_byte"].get<double>())));
}

TEST(EvalCli, ArithCountsJsonShapeAndReproducibility) {
  Scratch s;
  const std::string data = s.write("arith.jsonl", kArith);
  const std::vector<std::string> args = {kModel, "--task", "arith",  "--data", data,
                                         "-n",   "24",     "--json", "-q"};
  Outcome a = run_eval(args), b = run_eval(args);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);  // greedy: identical
  const json r = json_lines(a.out).at(0);
  EXPECT_EQ(r["task"], "arith");
  EXPECT_EQ(r["model"], kModel);
  EXPECT_EQ(r["data"], json::array({data}));
  EXPECT_EQ(r["max_tokens"], 24);
  EXPECT_EQ(r["items"], 3);
  EXPECT_LE(r["correct"].get<int64_t>(), 3);
  EXPECT_DOUBLE_EQ(r["accuracy"].get<double>(), r["correct"].get<double>() / 3);
  ASSERT_EQ(r["files"].size(), 1u);
  EXPECT_EQ(r["files"][0]["items"], 3);
  ASSERT_EQ(r["outputs"].size(), 3u);
  int64_t correct = 0, none = 0;
  const std::vector<std::string> gold = {"7", "24", "999"};
  for (size_t i = 0; i < 3; ++i) {
    const json& item = r["outputs"][i];
    EXPECT_EQ(item["line"], static_cast<int64_t>(i + 1));
    EXPECT_EQ(item["gold"], gold[i]);
    for (const char* key :
         {"question", "prediction", "correct", "generated_tokens", "stop", "output"})
      EXPECT_TRUE(item.contains(key)) << key;
    EXPECT_LE(item["generated_tokens"].get<int64_t>(), 24);
    correct += item["correct"].get<bool>();
    none += item["prediction"].is_null();
  }
  EXPECT_EQ(r["correct"], correct);
  EXPECT_EQ(r["no_answer"], none);

  Outcome limited = run_eval(
      {kModel, "--task", "arith", "--data", data, "-n", "8", "--limit", "2", "--json", "-q"});
  ASSERT_EQ(limited.status, 0) << limited.err;
  EXPECT_EQ(json_lines(limited.out).at(0)["items"], 2);

  Outcome table = run_eval({kModel, "--task", "arith", "--data", data, "-n", "8"});
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("accuracy"));
  EXPECT_THAT(table.out, HasSubstr("arith.jsonl        3"));
  EXPECT_THAT(table.err, HasSubstr("arith: 3/3 items"));  // progress goes to stderr
}

TEST(EvalCli, MalformedJsonlNamesFileAndLine) {
  Scratch s;
  const std::string bad =
      s.write("bad.jsonl", kArith + "{\"question\": \"q\", \"answer\": \"no marks\"}\n");
  Outcome r = run_eval({kModel, "--task", "gsm8k", "--data", bad, "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr(bad + ":4: 'answer' has no '####"));
  const std::string broken = s.write("broken.jsonl", "{\"question\": \"q\",\n");
  r = run_eval({kModel, "--task", "gsm8k", "--data", broken, "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr(broken + ":1: malformed JSON line"));
  EXPECT_TRUE(r.out.empty());  // nothing is evaluated before the data is validated
}

TEST(EvalCli, LoopsAreReproducibleForASeed) {
  const std::vector<std::string> base = {kModel, "--task", "loops", "--data", kText, "--prompts",
                                         "4",    "-n",     "40",    "--json", "-q"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return run_eval(args);
  };
  Outcome a = with({"--seed", "5"}), b = with({"--seed", "5"}), c = with({"--seed", "6"});
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  const json r = json_lines(a.out).at(0);
  EXPECT_EQ(r["task"], "loops");
  EXPECT_EQ(r["prompts"], 4);
  EXPECT_EQ(r["seed"], 5);
  EXPECT_DOUBLE_EQ(r["temperature"].get<double>(), 0.8);  // the published GLM-5.1 REAP setting
  EXPECT_EQ(r["rule"]["min_tail"], 64);
  EXPECT_EQ(r["rule"]["min_repeats"], 3);
  ASSERT_EQ(r["outputs"].size(), 4u);
  int64_t looping = 0;
  std::set<std::string> sources;
  for (const auto& item : r["outputs"]) {
    looping += item["loops"].get<bool>();
    sources.insert(item["source"].get<std::string>());
    EXPECT_LE(item["generated_tokens"].get<int64_t>(), 40);
    EXPECT_THAT(item["source"].get<std::string>(), HasSubstr(kText + "@"));
  }
  EXPECT_EQ(sources.size(), 4u);  // four different snippets
  EXPECT_EQ(r["looping"], looping);
}

TEST(EvalCli, SeveralTasksPrintOneObjectPerLineInOrder) {
  Scratch s;
  const std::string data = s.write("arith.jsonl", kArith);
  Outcome r = run_eval({kModel, "--task", "ppl,arith", "--task", "loops", "--data", kText, "--data",
                        data, "--ctx", "32", "-n", "8", "--prompts", "2", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<json> lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["task"], "ppl");
  EXPECT_EQ(lines[0]["data"], json::array({kText}));  // text files to ppl
  EXPECT_EQ(lines[1]["task"], "arith");
  EXPECT_EQ(lines[1]["data"], json::array({data}));  // .jsonl to arith
  EXPECT_EQ(lines[2]["task"], "loops");
  EXPECT_EQ(lines[2]["data"], json::array({kText, data}));  // both to loops
  EXPECT_EQ(lines[0]["stride"], 16);                        // default ctx / 2
}

TEST(EvalCli, DefaultDataComesFromTheModelsEvalFolder) {
  Scratch s;
  const fs::path model = s.dir() / "model";
  fs::copy(kModel, model, fs::copy_options::recursive);
  s.write("model/eval/arith_one_step.jsonl", kArith);
  s.write("model/eval/prose.txt", read_file(kText));
  Outcome r = run_eval(
      {model.string(), "--task", "ppl,arith,loops", "-n", "8", "--prompts", "2", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<json> lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["data"], json::array({(model / "eval/prose.txt").string()}));
  EXPECT_EQ(lines[0]["ctx"], 512);  // min(512, max_position_embeddings 4096)
  EXPECT_EQ(lines[1]["data"], json::array({(model / "eval/arith_one_step.jsonl").string()}));
  EXPECT_EQ(lines[2]["data"], json::array({(model / "eval/prose.txt").string()}));
}

TEST(EvalCli, UsageErrorsAreClear) {
  Outcome r = run_eval({kModel, "--task", "gsm8k", "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("--task gsm8k: pass --data FILE.jsonl"));
  r = run_eval({kModel, "--task", "ppl", "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("--task ppl: no text files"));
  r = run_eval({kModel, "--task", "ppl", "--data", kText, "--ctx", "16", "--stride", "16", "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("--stride must be in [1, ctx - 1]"));
  r = run_eval({kModel, "--task", "ppl", "--data", kText, "--ctx", "5000", "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("max_position_embeddings"));
  r = run_eval({kModel, "--task", "ppl", "--data", kText, "--doc-start", "<|nope|>", "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("--doc-start: '<|nope|>' is not a token"));
  r = run_eval({kModel, "--task", "ppl", "--data", "/nonexistent.txt"});
  EXPECT_EQ(r.status, 2);  // CLI11: the file must exist
  Scratch s;
  r = run_eval({kModel, "--task", "ppl", "--data", s.write("one.txt", "a"), "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("too short to score"));
  // A --data file no task reads was once dropped, and the task ran on its defaults instead.
  const std::string chat = s.write("chat.txt", "hello there");
  r = run_eval({kModel, "--task", "arith", "--data", chat, "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err,
              HasSubstr("--data " + chat + ": no --task given reads it (tasks given: arith;"));
  r = run_eval(
      {kModel, "--task", "ppl,gsm8k", "--data", s.write("a.jsonl", kArith), "--data", chat, "-q"});
  EXPECT_EQ(r.status, 0) << r.err;  // each file is read by one of the tasks
  // A missing model folder is blamed, not the eval data it would hold.
  r = run_eval({"models/nope", "--task", "arith", "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("models/nope: no such model folder"));
}

TEST(EvalCli, TheModelsContextBoundsQuestionsAndAnswers) {
  Scratch s;
  const fs::path model = s.dir() / "model";
  fs::copy(kModel, model, fs::copy_options::recursive);
  json config = json::parse(read_file(model / "config.json"));
  config["max_position_embeddings"] = 48;
  write_file_atomic(model / "config.json", config.dump());
  std::string words;
  for (int i = 0; i < 100; ++i) words += "apple ";
  const std::string long_question = "{\"question\": \"" + words + "\", \"answer\": \"#### 1\"}\n";
  Outcome r = run_eval({model.string(), "--task", "gsm8k", "--data",
                        s.write("long.jsonl", kArith + long_question), "-q"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("long.jsonl:4: the prompt has"));
  EXPECT_THAT(r.err, HasSubstr("the model's context is 48 (max_position_embeddings)"));
  // Answers are cut where the context ends, and say so.
  r = run_eval({model.string(), "--task", "gsm8k", "--data", s.write("short.jsonl", kArith), "-n",
                "100", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json result = json_lines(r.out).at(0);
  for (const json& item : result["outputs"])
    EXPECT_TRUE(item["stop"] == "context full" || item["stop"] == "eos" || item["stop"] == "stop")
        << item;
  EXPECT_TRUE(std::any_of(result["outputs"].begin(), result["outputs"].end(),
                          [](const json& item) { return item["stop"] == "context full"; }));
}

// The bundled trained model (models/tiny-glm5) measured by the commands of docs/RESULTS.md on a
// prefix of the held-out data: a regression test of the whole engine on a model whose outputs mean
// something (random weights score near-uniform perplexity, ~4,000, and no arithmetic). The bounds
// are loose multiples of the measured numbers, so that only a real regression fails them.
// Measured (docs/RESULTS.md): whole-file perplexity 27x (prose) to 381x (arith) below the
// unigram's; 24 of the first 50 one-step problems solved.
constexpr double kBundledPplGain = 10.0;
constexpr int kBundledArithFloor = 15;

TEST(BundledModel, PredictsHeldOutTextAndSolvesArithmetic) {
  const fs::path model = kRoot / "models/tiny-glm5";
  const json unigram = json::parse(read_file(model / "eval/unigram_baseline.json"))["eval"];
  Outcome r = run_eval({model.string(), "--task", "ppl", "--doc-start", "<|endoftext|>", "--limit",
                        "2048", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json ppl = json_lines(r.out).at(0);
  EXPECT_EQ(ppl["ctx"], 256);  // the trained context, from max_position_embeddings
  ASSERT_EQ(ppl["files"].size(), 4u);
  for (const json& f : ppl["files"]) {
    const std::string domain = fs::path(f["file"].get<std::string>()).stem().string();
    const double baseline = unigram.at(domain)["perplexity"];
    EXPECT_LT(f["ppl"].get<double>(), baseline / kBundledPplGain)
        << domain << ": perplexity " << f["ppl"] << " vs unigram " << baseline;
  }
  r = run_eval({model.string(), "--task", "arith", "--data",
                (model / "eval/arith_one_step.jsonl").string(), "--limit", "50", "--json", "-q"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json arith = json_lines(r.out).at(0);
  EXPECT_EQ(arith["items"], 50);
  EXPECT_GE(arith["correct"].get<int>(), kBundledArithFloor)
      << arith["correct"] << "/50 one-step problems";
}

// The chat turn of `make demo`, with the Makefile's arguments: it once asked about `ls` and showed
// an answer that read as broken; the prompt now asks for what the model answers well. The demo asks
// it of the pruned int4 model it has just made; here it is asked of the bundled model the recipe
// starts from.
TEST(BundledModel, DemoChatTurnGivesASensibleAnswer) {
  const std::string makefile = read_file(kRoot / "Makefile");
  const std::string marker = "$(BUILD)/whittle generate $(DEMO_OUT)/tiny-glm5-reap25-w4g128";
  const size_t at = makefile.find(marker);
  ASSERT_NE(at, std::string::npos) << "no generate command in the Makefile's demo";
  const std::string args =
      makefile.substr(at + marker.size(), makefile.find('\n', at) - at - marker.size());
  const std::string command = shell_quote(WHITTLE_BINARY) + " generate " +
                              shell_quote((kRoot / "models/tiny-glm5").string()) + args +
                              " 2>/dev/null";
  CommandOutcome r = run_command({"sh", "-c", command}, "");
  ASSERT_EQ(r.status, 0) << command;
  EXPECT_THAT(r.output, HasSubstr("arithmetic word problems")) << command;
}

}  // namespace
}  // namespace whittle
