// The whittle binary end to end: every subcommand has --help, and bad input (a missing folder or
// file, malformed JSON, an unknown architecture, a missing tensor, a wrong shape, a truncated file,
// invalid UTF-8 in a prompt, an out-of-range id) ends with one clear message and a non-zero exit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>

#include "io/npy.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

const fs::path kRoot = WHITTLE_SOURCE_DIR;
const fs::path kModel = kRoot / "tests/golden/models/dsa_long";

struct Outcome {
  int status;
  std::string output;  // stdout and stderr together
};

// An output path no test creates: commands given it must fail before writing.
std::string never_written() {
  return (fs::temp_directory_path() / ("whittle_cli_never_" + std::to_string(::getpid()) + ".npy"))
      .string();
}

Outcome whittle(const std::vector<std::string>& args) {
  std::vector<std::string> cmd = {WHITTLE_BINARY};
  cmd.insert(cmd.end(), args.begin(), args.end());
  CommandOutcome r = run_command(cmd, "2>&1");
  return {r.status, r.output};
}

// A scratch copy of the golden model that a test may damage.
class ScratchModel {
 public:
  explicit ScratchModel(const fs::path& from = kModel)
      : dir_(fs::temp_directory_path() /
             ("whittle_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++))) {
    fs::remove_all(dir_);
    fs::copy(from, dir_, fs::copy_options::recursive);
  }
  ~ScratchModel() { fs::remove_all(dir_); }
  const fs::path& dir() const { return dir_; }
  std::string str() const { return dir_.string(); }

  void edit_config(const std::function<void(nlohmann::json&)>& edit) const {
    nlohmann::json j = nlohmann::json::parse(read_file(dir_ / "config.json"));
    edit(j);
    write_file_atomic(dir_ / "config.json", j.dump(2));
  }
  // Rewrites model.safetensors, letting `edit` drop (return false) or reshape a tensor.
  void rewrite_weights(const std::function<bool(const std::string&, std::vector<int64_t>&)>& edit,
                       const std::function<void(SafeTensorsWriter&)>& extra = {}) const {
    fs::path src = dir_ / "original.bin";
    fs::rename(dir_ / "model.safetensors", src);
    {
      SafeTensorsFile in(src);
      SafeTensorsWriter out(dir_, uint64_t{1} << 30);
      for (const TensorInfo& t : in.tensors()) {
        std::vector<int64_t> shape = t.shape;
        if (!edit(t.name, shape)) continue;
        out.add(t.name, t.dtype, shape, in.view(t).bytes);
      }
      if (extra) extra(out);
      out.finish();
    }
    fs::remove(src);
  }

 private:
  static inline int counter_ = 0;
  fs::path dir_;
};

TEST(Cli, EverySubcommandHasHelp) {
  for (const char* sub : {"info", "generate", "logits", "bench"}) {
    Outcome r = whittle({sub, "--help"});
    EXPECT_EQ(r.status, 0) << sub;
    EXPECT_THAT(r.output, HasSubstr("MODEL")) << sub;
  }
  EXPECT_EQ(whittle({"--help"}).status, 0);
  EXPECT_EQ(whittle({"generate"}).status, 2);  // usage error: MODEL and --prompt required
}

TEST(Cli, InfoDescribesTheModel) {
  Outcome r = whittle({"info", kModel.string()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("GlmMoeDsaForCausalLM"));
  EXPECT_THAT(r.output, HasSubstr("2 (1 dense, 1 MoE)"));
  EXPECT_THAT(r.output, HasSubstr("top-k 8"));
  EXPECT_THAT(r.output, HasSubstr("BF16"));
  EXPECT_THAT(r.output, HasSubstr("protected"));
}

TEST(Cli, InfoListsTheMtpLayer) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) { j["num_nextn_predict_layers"] = 1; });
  m.rewrite_weights([](const std::string&, auto&) { return true; },
                    [](SafeTensorsWriter& w) {
                      std::vector<std::byte> zeros(64 * 128 * 2);
                      w.add("model.layers.2.eh_proj.weight", DType::BF16, {64, 128}, zeros);
                      w.add("model.layers.2.enorm.weight", DType::BF16, {64},
                            std::span(zeros).first(128));
                    });
  Outcome r = whittle({"info", m.str()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2 (1 dense, 1 MoE) + 1 MTP"));
  EXPECT_THAT(r.output, HasSubstr("mtp: model.layers.2.eh_proj.weight"));
  EXPECT_THAT(r.output, HasSubstr("mtp: model.layers.2.enorm.weight"));
  // The forward pass ignores the MTP layer.
  EXPECT_EQ(
      whittle({"logits", m.str(), "--ids", "1,2", "--out", (m.dir() / "x.npy").string()}).status,
      0);
}

TEST(Cli, LogitsWritesTheGoldenLogits) {
  fs::path out =
      fs::temp_directory_path() / ("whittle_cli_logits_" + std::to_string(::getpid()) + ".npy");
  std::string ids;
  for (int64_t id : read_npy_i64(kModel / "input_ids.npy")) {
    if (!ids.empty()) ids += ',';
    ids += std::to_string(id);
  }
  std::vector<int64_t> golden_shape;
  std::vector<float> golden = read_npy_f32(kModel / "logits.npy", &golden_shape);
  float scale = 0;
  for (float x : golden) scale = std::max(scale, std::fabs(x));
  for (const char* mode : {"prefill", "decode"}) {
    Outcome r =
        whittle({"logits", kModel.string(), "--ids", ids, "--out", out.string(), "--mode", mode});
    ASSERT_EQ(r.status, 0) << r.output;
    std::vector<int64_t> shape;
    std::vector<float> logits = read_npy_f32(out, &shape);
    ASSERT_EQ(shape, golden_shape) << mode;
    for (size_t i = 0; i < logits.size(); ++i)
      ASSERT_NEAR(logits[i], golden[i], 1e-3f * scale) << mode << " " << i;
  }
  fs::remove(out);
}

TEST(Cli, GenerateIsReproducibleAndStaysInTheTokenizerVocabulary) {
  const std::string demo = (kRoot / "models/tiny-glm5-random").string();
  for (const char* chat : {"", "--chat"}) {
    std::vector<std::string> args = {"generate", demo,  "-p",     "Hello world", "-n", "48",
                                     "-t",       "1.0", "--seed", "7",           "-q"};
    if (*chat) args.push_back(chat);
    Outcome a = whittle(args), b = whittle(args);
    ASSERT_EQ(a.status, 0) << a.output;
    EXPECT_EQ(a.output, b.output);  // same seed, same text
    EXPECT_FALSE(find_invalid_utf8(a.output).has_value());
  }
}

// OpenBLAS chooses its kernels from the CPU's model number when it loads; on a VM with a generic
// model it takes SSE3 (Prescott) ones. whittle then runs itself again with OPENBLAS_CORETYPE set,
// so what computes (the last core OpenBLAS reports) is never below this CPU's vector width.
TEST(Cli, OpenBlasRunsKernelsForThisCpu) {
  if (!__builtin_cpu_supports("avx2")) GTEST_SKIP() << "a CPU without AVX2";
  CommandOutcome r = run_command({"env", "-u", "OPENBLAS_CORETYPE", "OPENBLAS_VERBOSE=2",
                                  WHITTLE_BINARY, "info", kModel.string()},
                                 "2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  const size_t at = r.output.rfind("Core: ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string core = r.output.substr(at + 6, r.output.find('\n', at) - at - 6);
  for (const char* old : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                          "Sandybridge", "Katmai", "Coppermine", "Northwood", "Banias"})
    EXPECT_NE(core, old) << r.output;
}

TEST(Cli, MissingModelFolder) {
  Outcome r = whittle({"info", "/nonexistent/model"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/model"));
}

TEST(Cli, MalformedConfigJson) {
  ScratchModel m;
  write_file_atomic(m.dir() / "config.json", "{\"model_type\": ");
  Outcome r = whittle({"info", m.str()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("config.json: malformed JSON"));
}

TEST(Cli, UnknownModelType) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) { j["model_type"] = "llama"; });
  Outcome r = whittle({"info", m.str()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("config.json: unknown model_type 'llama'"));
}

TEST(Cli, MissingTensor) {
  ScratchModel m;
  m.rewrite_weights([](const std::string& name, auto&) {
    return name != "model.layers.1.self_attn.o_proj.weight";
  });
  Outcome r = whittle({"logits", m.str(), "--ids", "1,2", "--out", (m.dir() / "x.npy").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("missing tensor 'model.layers.1.self_attn.o_proj.weight'"));
  EXPECT_THAT(r.output, HasSubstr(m.str()));
  EXPECT_FALSE(fs::exists(m.dir() / "x.npy"));
}

TEST(Cli, WrongShape) {
  ScratchModel m;
  m.rewrite_weights([](const std::string& name, std::vector<int64_t>& shape) {
    if (name == "model.layers.0.self_attn.q_a_proj.weight") std::swap(shape[0], shape[1]);
    return true;
  });
  Outcome r = whittle({"logits", m.str(), "--ids", "1,2", "--out", (m.dir() / "x.npy").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("tensor 'model.layers.0.self_attn.q_a_proj.weight' has shape "
                                  "[64, 32], expected [32, 64]"));
  EXPECT_THAT(r.output, HasSubstr("model.safetensors"));
}

TEST(Cli, TruncatedWeights) {
  ScratchModel m;
  fs::resize_file(m.dir() / "model.safetensors",
                  fs::file_size(m.dir() / "model.safetensors") - 1000);
  Outcome r = whittle({"info", m.str()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("model.safetensors"));
  EXPECT_THAT(r.output, HasSubstr("truncated"));
}

TEST(Cli, MissingTokenizer) {
  Outcome r = whittle({"generate", kModel.string(), "-p", "hello"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("tokenizer.json"));
}

TEST(Cli, InvalidUtf8Prompt) {
  ScratchModel m;
  fs::copy_file(kRoot / "tests/golden/tokenizer/tokenizer.json", m.dir() / "tokenizer.json");
  Outcome r = whittle({"generate", m.str(), "-p", "abc\xff\xfe"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("error: prompt: "));
  EXPECT_THAT(r.output, HasSubstr("invalid UTF-8 at byte offset 3"));
}

TEST(Cli, TokenIdOutsideVocabulary) {
  Outcome r = whittle({"logits", kModel.string(), "--ids", "1,512", "--out", never_written()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("token id 512 is outside the vocabulary [0, 512)"));
}

// What a hostile run of the CLI found (issue 7): each of these was accepted silently, crashed, or
// printed an unhelpful message before.

TEST(Cli, UnknownSubcommandIsNamed) {
  Outcome r = whittle({"foo"});
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("unknown subcommand 'foo' (expected one of: info, generate, "
                                  "logits, eval, prune, quantize, bench, serve, chat)"));
}

TEST(Cli, BadOptionValuesAreUsageErrorsNamingTheOptionAndRange) {
  const std::string model = kModel.string();
  const auto usage_error = [&](std::vector<std::string> args, const std::string& message) {
    Outcome r = whittle(args);
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_THAT(r.output, HasSubstr(message));
    EXPECT_THAT(r.output, ::testing::Not(HasSubstr("e+308")));  // no DBL_MAX in a range
  };
  // NaN passed the old range checks, and the sampler then always took the last candidate.
  usage_error({"generate", model, "-p", "a", "-t", "nan"},
              "--temperature: must be a finite number >= 0, got 'nan'");
  usage_error({"generate", model, "-p", "a", "-t", "inf"},
              "--temperature: must be a finite number >= 0");
  usage_error({"generate", model, "-p", "a", "--top-p", "nan"},
              "--top-p: must be a number in (0, 1], got 'nan'");
  usage_error({"generate", model, "-p", "a", "--top-p", "1.5"},
              "--top-p: must be a number in (0, 1]");
  usage_error({"generate", model, "-p", "a", "-n", "-1"},
              "--max-tokens: must be an integer >= 0, got '-1'");
  usage_error({"generate", model, "-p", "a", "--top-k", "-2"}, "--top-k: must be an integer >= 0");
  // -1 once became SIZE_MAX threads and 1000000 tried to start them all.
  usage_error({"generate", model, "-p", "a", "--threads", "-1"},
              "--threads: must be between 0 and");
  usage_error({"logits", model, "--ids", "1", "--out", "x.npy", "--threads", "1000000"},
              "got 1000000");
  usage_error({"eval", model, "--task", "ppl", "--threads", "-1"},
              "--threads: must be between 0 and");
  usage_error({"generate", model, "-p", "a", "--think"}, "--think requires --chat");
  // --ctx -5 and --stride -3 once fell back to the defaults.
  usage_error({"eval", model, "--task", "ppl", "--ctx", "-5"},
              "--ctx: must be an integer >= 1, got '-5'");
  usage_error({"eval", model, "--task", "ppl", "--stride", "-3"},
              "--stride: must be an integer >= 1, got '-3'");
  usage_error({"eval", model, "--task", "loops", "--top-p", "nan"},
              "--top-p: must be a number in (0, 1]");
  usage_error({"eval", model, "--task", "loops", "-t", "nan"},
              "--temperature: must be a finite number >= 0");
  usage_error({"eval", model, "--task", "arith", "--limit", "-1"},
              "--limit: must be an integer >= 0");
  // CLI11 alone saturates an integer past int64 and wraps -1 into a uint64 seed.
  usage_error({"generate", model, "-p", "a", "-n", "99999999999999999999"},
              "--max-tokens: must be an integer >= 0, got '99999999999999999999'");
  usage_error({"generate", model, "-p", "a", "--seed", "-1"},
              "--seed: must be an integer in [0, 2^64 - 1], got '-1'");
  usage_error({"eval", model, "--task", "loops", "--seed", "x"},
              "--seed: must be an integer in [0, 2^64 - 1]");
  usage_error({"generate", model, "-p", "a", "--threads", "99999999999999999999"},
              "--threads: must be an integer");
}

TEST(Cli, IdListsMustBeWholeIntegers) {
  // "" once ran as id 0 and "1,,2" as 1,2.
  const auto error_of = [](const std::string& ids) {
    Outcome r = whittle({"logits", kModel.string(), "--ids", ids, "--out", never_written()});
    EXPECT_EQ(r.status, 1) << ids;
    return r.output;
  };
  EXPECT_THAT(error_of(""), HasSubstr("--ids: no token ids"));
  EXPECT_THAT(error_of("1,,2"), HasSubstr("--ids: empty entry at position 2 of '1,,2'"));
  EXPECT_THAT(error_of("1,2,"), HasSubstr("--ids: empty entry at position 3"));
  EXPECT_THAT(error_of("1,x"), HasSubstr("--ids: 'x' is not an integer token id"));
  EXPECT_THAT(error_of("1, 2"), HasSubstr("--ids: ' 2' is not an integer token id"));
  EXPECT_FALSE(fs::exists(never_written()));
}

TEST(Cli, TheModelFolderIsBlamedFirst) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"eval", "models/nope", "--task", "arith"},
        {"generate", "models/nope", "-p", "hi"},
        {"logits", "models/nope", "--ids", "1", "--out", never_written()},
        {"info", "models/nope"}}) {
    Outcome r = whittle(args);
    EXPECT_EQ(r.status, 1) << args[0];
    EXPECT_THAT(r.output, HasSubstr("models/nope: no such model folder")) << args[0];
  }
  Outcome r = whittle({"info", (kModel / "config.json").string()});
  EXPECT_THAT(r.output, HasSubstr("config.json: not a folder"));
}

TEST(Cli, InputsLongerThanTheContextAreRefused) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) { j["max_position_embeddings"] = 4; });
  Outcome r =
      whittle({"logits", m.str(), "--ids", "1,2,3,4,5", "--out", (m.dir() / "x.npy").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(
      r.output,
      HasSubstr("--ids: 5 tokens exceed the model's context of 4 (max_position_embeddings)"));
  for (const char* mode : {"prefill", "decode"}) {
    r = whittle({"logits", m.str(), "--ids", "1,2,3,4", "--out", (m.dir() / "x.npy").string(),
                 "--mode", mode});
    EXPECT_EQ(r.status, 0) << r.output;
  }
  ScratchModel chat(kRoot / "models/tiny-glm5-random");
  chat.edit_config([](nlohmann::json& j) { j["max_position_embeddings"] = 4; });
  r = whittle({"generate", chat.str(), "-p", "one two three four five six"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("the prompt has"));
  EXPECT_THAT(r.output, HasSubstr("the model's context is 4 (max_position_embeddings)"));
}

TEST(Cli, GenerationStopsAtTheContextWithAWarning) {
  ScratchModel m(kRoot / "models/tiny-glm5-random");
  m.edit_config([](nlohmann::json& j) { j["max_position_embeddings"] = 8; });
  Outcome r = whittle({"generate", m.str(), "-p", "Hello", "-n", "100", "-t", "0"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(
      r.output,
      HasSubstr("warning: 100 new tokens do not fit after the 4-token prompt in the model's "
                "context of 8 (max_position_embeddings); generating at most 4"));
  EXPECT_THAT(r.output, HasSubstr("generated 4 tokens"));
  EXPECT_THAT(r.output, HasSubstr("stop: context full"));
}

TEST(Cli, EmptyPromptNamesTheTokenizer) {
  const fs::path model = kRoot / "models/tiny-glm5";
  Outcome r = whittle({"generate", model.string(), "-p", ""});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("prompt: encodes to no tokens with " +
                                  (model / "tokenizer.json").string()));
}

TEST(Cli, ErrorsNameTheUsersOutputPathNotTheTemporary) {
  Outcome r =
      whittle({"logits", kModel.string(), "--ids", "1,2", "--out", "/nonexistent-dir/x.npy"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(
      r.output,
      HasSubstr("/nonexistent-dir/x.npy: cannot create a temporary file in /nonexistent-dir"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr(".tmp.")));
}

TEST(Cli, GenerateDefaultsToTheModelsGenerationConfig) {
  // models/tiny-glm5: do_sample true, temperature 0.8, top_k 50, top_p 0.95, max_new_tokens 256.
  const std::string model = (kRoot / "models/tiny-glm5").string();
  Outcome r = whittle({"generate", model, "-p", "1 + 2 =", "-n", "4", "--seed", "3"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(
      r.output,
      HasSubstr("[sampling: temperature 0.8, top-k 50, top-p 0.95, seed 3, max 4 new tokens]"));
  r = whittle({"generate", model, "-p", "1 + 2 =", "-n", "4", "-t", "0"});
  EXPECT_THAT(r.output, HasSubstr("[greedy, max 4 new tokens]"));
  r = whittle({"generate", model, "-p", "1 + 2 =", "-n", "4", "--top-k", "0", "--top-p", "0.5"});
  EXPECT_THAT(r.output, HasSubstr("[sampling: temperature 0.8, top-k 0, top-p 0.5, seed 0"));
  // Its max_new_tokens 256 is cut to the context (256 - 5 prompt tokens) without a warning.
  r = whittle({"generate", model, "-p", "1 + 2 =", "-t", "0"});
  EXPECT_THAT(r.output, HasSubstr("[greedy, max 251 new tokens]"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("warning")));
  // Without do_sample in generation_config.json: greedy, as transformers does.
  ScratchModel m(kRoot / "models/tiny-glm5-random");
  nlohmann::json g = nlohmann::json::parse(read_file(m.dir() / "generation_config.json"));
  g.erase("do_sample");
  write_file_atomic(m.dir() / "generation_config.json", g.dump());
  r = whittle({"generate", m.str(), "-p", "Hello", "-n", "4"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[greedy, max 4 new tokens]"));
  r = whittle({"generate", m.str(), "-p", "Hello"});
  EXPECT_THAT(r.output, HasSubstr("[greedy, max 128 new tokens]"));
}

TEST(Cli, ConfigWithFewerLayersThanTheWeightsIsRefused) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) {
    j["num_hidden_layers"] = 1;
    if (j.contains("mlp_layer_types")) j["mlp_layer_types"] = {j["mlp_layer_types"][0]};
    if (j.contains("indexer_types")) j["indexer_types"] = {j["indexer_types"][0]};
  });
  Outcome r = whittle({"logits", m.str(), "--ids", "1,2", "--out", (m.dir() / "x.npy").string()});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_THAT(
      r.output,
      HasSubstr("is beyond num_hidden_layers 1 + num_nextn_predict_layers 0 of config.json"));
}

TEST(Cli, MalformedGenerationConfigIsNamed) {
  // A use-after-free once printed garbage here (and ASan reported it).
  ScratchModel m;
  write_file_atomic(m.dir() / "generation_config.json", R"({"eos_token_id": "x"})");
  Outcome r = whittle({"info", m.str()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(
      r.output,
      HasSubstr((m.dir() / "generation_config.json").string() +
                ": field 'eos_token_id' must be an integer or a list of integers, got \"x\""));
}

// ---- whittle info on GPTQ checkpoints ----

// GPTQ tensors for a Linear with `in` inputs and `out` outputs (zeros: info reads the shapes);
// `scale_rows` overrides the scales' group count.
void add_gptq(SafeTensorsWriter& w, const std::string& module, int64_t in, int64_t out, int bits,
              int64_t group, int64_t scale_rows = -1) {
  const int64_t per_word = 32 / bits;
  const int64_t groups =
      scale_rows >= 0 ? scale_rows : (group == -1 ? 1 : (in + group - 1) / group);
  std::vector<std::byte> bytes(static_cast<size_t>(std::max(in, groups) * out * 4));
  const auto first = [&](int64_t n) { return std::span(bytes).first(static_cast<size_t>(n)); };
  w.add(module + ".qweight", DType::I32, {in / per_word, out}, first(in / per_word * out * 4));
  w.add(module + ".qzeros", DType::I32, {groups, out * bits / 32}, first(groups * out * bits / 8));
  w.add(module + ".scales", DType::F16, {groups, out}, first(groups * out * 2));
  w.add(module + ".g_idx", DType::I32, {in}, first(in * 4));
}

// dsa_long with every o_proj and routed expert gate/up_proj in GPTQ int4 g32; expert 3's up_proj
// gets `odd_scale_rows` scale rows when given.
void quantize_dsa_long(const ScratchModel& m, int64_t odd_scale_rows = -1) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> picked;
  static const std::regex pick(R"(.*(o_proj|experts\.\d+\.(gate|up)_proj)\.weight)");
  m.rewrite_weights(
      [&](const std::string& name, std::vector<int64_t>& shape) {
        if (!std::regex_match(name, pick)) return true;
        picked.push_back({name.substr(0, name.size() - 7), shape});
        return false;
      },
      [&](SafeTensorsWriter& w) {
        for (const auto& [module, shape] : picked)
          add_gptq(w, module, shape[1], shape[0], 4, 32,
                   module.ends_with("experts.3.up_proj") ? odd_scale_rows : -1);
      });
}

nlohmann::json gptq_config() {
  return nlohmann::json::parse(R"({"quant_method": "gptq", "bits": 4, "group_size": 32,
    "sym": true, "desc_act": false, "dynamic": {"-:.*shared_experts.*": {}}})");
}

TEST(Cli, InfoReportsQuantizedAndSixteenBitModulesFromTheFile) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) { j["quantization_config"] = gptq_config(); });
  quantize_dsa_long(m);
  Outcome r = whittle({"info", m.str()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output,
              HasSubstr("quantization   gptq, int4 g32, GPTQ v1 (stored - 1) zero points, "
                        "1 dynamic rule(s)"));
  EXPECT_THAT(r.output, HasSubstr("linear modules 18 quantized, 30 16-bit"));
  EXPECT_THAT(r.output, ContainsRegex(R"(mlp\.experts\.\*\.gate_proj +int4 g32 +x 8)"));
  EXPECT_THAT(r.output, ContainsRegex(R"(self_attn\.o_proj +int4 g32 +x 2)"));
  EXPECT_THAT(r.output, ContainsRegex(R"(mlp\.experts\.\*\.down_proj +BF16 +x 8)"));
  EXPECT_THAT(r.output, ContainsRegex(R"(self_attn\.indexer\.weights_proj +BF16 +x 2)"));
  EXPECT_THAT(r.output, ContainsRegex(R"(lm_head +BF16 +x 1)"));
  EXPECT_THAT(r.output, HasSubstr("agree on every module"));
  EXPECT_THAT(r.output, Not(HasSubstr("mismatch")));
}

TEST(Cli, InfoReportsWhereConfigAndFileDisagree) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) {
    j["quantization_config"] = gptq_config();
    // Layer 1's o_proj said to be int8: its int4 qweight has half the rows that needs.
    j["quantization_config"]["dynamic"]["+:.*layers\\.1\\.self_attn\\.o_proj"] = {{"bits", 8}};
    // vLLM matches its FusedMoE "model.layers.1.mlp.experts" instead: this rule misses it there.
    j["quantization_config"]["dynamic"]["-:.*experts\\.\\d+\\.down_proj"] =
        nlohmann::json::object();
  });
  quantize_dsa_long(m, /*odd_scale_rows=*/4);
  Outcome r = whittle({"info", m.str()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("config.json and the file DISAGREE on 2 module(s)"));
  EXPECT_THAT(r.output,
              HasSubstr("mismatch: model.layers.1.mlp.experts.3.up_proj: config.json's rules give "
                        "int4 g32, so scales should be [2, 24], but the file has [4, 24] (the "
                        "file's group size is 16)"));
  EXPECT_THAT(r.output,
              HasSubstr("mismatch: model.layers.1.self_attn.o_proj: config.json's rules give int8 "
                        "g32, but qweight [8, 64] holds 8 x 4 = 32 in-features and the layer takes "
                        "64 (the rows fit 4-bit)"));
  EXPECT_THAT(r.output, HasSubstr("vLLM would read 8 module(s) differently"));
  EXPECT_THAT(r.output,
              HasSubstr("vllm: model.layers.1.mlp.experts.0.down_proj: 16-bit here, int4 g32 in "
                        "vLLM, which matches the rules against model.layers.1.mlp.experts"));
}

TEST(Cli, InfoReportsGptqTensorsWithoutAConfig) {
  ScratchModel m;
  quantize_dsa_long(m);
  Outcome r = whittle({"info", m.str()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("quantization   none in config.json"));
  EXPECT_THAT(r.output, HasSubstr("mismatch: model.layers.0.self_attn.o_proj: the file holds GPTQ "
                                  "tensors but config.json has no quantization_config"));
}

TEST(Cli, InfoRefusesAQuantizationConfigItCannotRead) {
  ScratchModel m;
  m.edit_config([](nlohmann::json& j) {
    j["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}};
  });
  Outcome r = whittle({"info", m.str()});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr((m.dir() / "config.json").string() +
                                  ": field 'quantization_config.quant_method' is \"awq\""));
}

// ---- chat templates ----

TEST(Cli, ChatRefusesATemplateItDoesNotRenderExactly) {
  ScratchModel m(kRoot / "models/tiny-glm5-random");
  const fs::path jinja = m.dir() / "chat_template.jinja";
  std::string text = read_file(jinja);
  const size_t user = text.find("<|user|>") + 8;
  text = text.substr(0, user) + " " + text.substr(user);  // one space more after the user marker
  write_file_atomic(jinja, text);
  const std::vector<std::string> chat = {"generate", m.str(), "-p", "Hi",
                                         "-n",       "1",     "-q", "--chat"};
  Outcome r = whittle(chat);
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr(jinja.string() + ": chat template is a GLM template, but not one "
                                                   "whose rendering whittle has checked"));
  EXPECT_THAT(r.output, HasSubstr("GLM-5.1 as reconstructed for whittle"));
  EXPECT_THAT(r.output, HasSubstr("replace the model's template with one of these"));
  // Without --chat no template is used.
  EXPECT_EQ(whittle({"generate", m.str(), "-p", "Hi", "-n", "1", "-q"}).status, 0);
  // Known by content, whatever the file: GLM-4.7's template in chat_template.jinja is accepted ...
  fs::copy_file(kRoot / "tests/golden/tokenizer/chat_template_glm47.jinja", jinja,
                fs::copy_options::overwrite_existing);
  r = whittle(chat);
  EXPECT_EQ(r.status, 0) << r.output;
  // ... and so is tokenizer_config.json's copy of the GLM-5.1 one when there is no .jinja file.
  fs::remove(jinja);
  r = whittle(chat);
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST(Cli, FifoShardIsRefusedWithoutBlocking) {
  ScratchModel m;
  fs::rename(m.dir() / "model.safetensors", m.dir() / "real.bin");
  ASSERT_EQ(::mkfifo((m.dir() / "model.safetensors").c_str(), 0600), 0);
  Outcome r = whittle({"info", m.str()});  // blocked forever in open() before
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("model.safetensors: not a regular file (it is a FIFO)"));
}

// `whittle prune` end to end on the small random model: the output is a model whittle loads with
// E - floor(E x R) experts, and reap_report.json records the statistics and the sets.
TEST(Cli, PruneWritesAPrunedCheckpointAndItsReport) {
  const fs::path model = kRoot / "models/tiny-glm5-random";
  ScratchDir tmp;
  const fs::path out = tmp.path() / "pruned";
  Outcome r = whittle({"prune", model.string(), out.string(), "--ratio", "0.25", "--calib",
                       (kRoot / "README.md").string(), "--samples", "4", "--seqlen", "64"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("6 of 8 routed experts kept in each of 1 MoE layers (reap)"));
  const nlohmann::json report = nlohmann::json::parse(read_file(out / "reap_report.json"));
  EXPECT_EQ(report["experts_after"], 6);
  EXPECT_EQ(report["calibration"]["samples"], 4);
  ASSERT_EQ(report["layers"].size(), 1u);
  EXPECT_EQ(report["layers"][0]["kept"].size(), 6u);
  EXPECT_EQ(report["layers"][0]["dropped"].size(), 2u);
  double routed = 0;
  for (const auto& e : report["layers"][0]["experts"]) routed += e["count"].get<double>();
  EXPECT_EQ(routed, 4 * 64 * 2);  // every calibration token routed to top-2 experts
  EXPECT_EQ(nlohmann::json::parse(read_file(out / "config.json"))["n_routed_experts"], 6);
  // The model card says what the checkpoint is, above the source's card, kept unchanged.
  const std::string card = read_file(out / "README.md");
  EXPECT_THAT(card, HasSubstr("6 of the 8 routed experts of each of the 1 MoE layers kept (reap"));
  EXPECT_TRUE(card.ends_with(read_file(model / "README.md")));
  Outcome gen = whittle({"generate", out.string(), "-p", "Hello", "-n", "4", "-t", "0"});
  EXPECT_EQ(gen.status, 0) << gen.output;
  // An existing output is refused without --force, before any calibration runs.
  Outcome again =
      whittle({"prune", model.string(), out.string(), "--ratio", "0.25", "--method", "random"});
  EXPECT_EQ(again.status, 1);
  EXPECT_THAT(again.output, HasSubstr("already exists; pass --force"));
  Outcome forced = whittle(
      {"prune", model.string(), out.string(), "--ratio", "0.5", "--method", "random", "--force"});
  EXPECT_EQ(forced.status, 0) << forced.output;
  EXPECT_EQ(nlohmann::json::parse(read_file(out / "config.json"))["n_routed_experts"], 4);
  // A card's YAML front matter stays first.
  ScratchModel front(model);
  write_file_atomic(front.dir() / "README.md", "---\nlicense: mit\n---\n# Card\n");
  ASSERT_EQ(whittle({"prune", front.dir().string(), (tmp.path() / "f").string(), "--ratio", "0.5",
                     "--method", "random"})
                .status,
            0);
  const std::string fronted = read_file(tmp.path() / "f" / "README.md");
  EXPECT_TRUE(fronted.starts_with("---\nlicense: mit\n---\n\n> **Pruned with")) << fronted;
  EXPECT_THAT(fronted, HasSubstr("(random, ratio 0.5, no calibration;"));
  EXPECT_TRUE(fronted.ends_with("before pruning.\n\n# Card\n")) << fronted;
}

// --stats cuts another ratio from a previous run's statistics, and gives what calibrating again
// gives; --sequential observes the first MoE layer exactly as the default does (nothing before it
// is pruned) and every later one on the pruned model's activations.
TEST(Cli, PruneReusesStatisticsAndPrunesAsItGoes) {
  const fs::path model = kRoot / "models/tiny-glm5";
  ScratchDir tmp;
  const std::vector<std::string> calib = {
      "--calib", (kRoot / "README.md").string(), "--samples", "4", "--seqlen", "64"};
  auto prune = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"prune", model.string(), (tmp.path() / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    Outcome r = whittle(args);
    EXPECT_EQ(r.status, 0) << r.output;
    return nlohmann::json::parse(read_file(tmp.path() / out / "reap_report.json"));
  };
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), calib.begin(), calib.end());
    return extra;
  };
  const nlohmann::json quarter = prune("q", with({"--ratio", "0.25"}));
  const nlohmann::json half = prune("h", with({"--ratio", "0.5"}));
  const std::string report = (tmp.path() / "q" / "reap_report.json").string();
  const nlohmann::json cut = prune("c", {"--ratio", "0.5", "--stats", report});
  ASSERT_EQ(cut["layers"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(cut["layers"][i]["experts"], half["layers"][i]["experts"]) << i;
    EXPECT_EQ(cut["layers"][i]["kept"], half["layers"][i]["kept"]) << i;
  }
  EXPECT_EQ(cut["calibration"]["statistics_from"], report);

  const nlohmann::json seq = prune("s", with({"--ratio", "0.25", "--sequential"}));
  EXPECT_EQ(seq["observation"], "sequential");
  EXPECT_EQ(quarter["observation"], "unpruned");
  EXPECT_EQ(seq["layers"][0]["experts"], quarter["layers"][0]["experts"]);
  for (size_t i = 1; i < 5; ++i) {
    EXPECT_NE(seq["layers"][i]["experts"], quarter["layers"][i]["experts"]) << i;
    double routed = 0;
    for (const auto& e : seq["layers"][i]["experts"]) routed += e["count"].get<double>();
    EXPECT_EQ(routed, 4 * 64 * 4) << i;  // every token still routed to top-4 of 32
  }
  // Statistics gathered while pruning depend on that pruning: they are not cut again.
  Outcome again = whittle({"prune", model.string(), never_written(), "--ratio", "0.5", "--stats",
                           (tmp.path() / "s" / "reap_report.json").string()});
  EXPECT_NE(again.status, 0);
  EXPECT_THAT(again.output, HasSubstr("\"observation\" is \"sequential\""));
  EXPECT_FALSE(fs::exists(never_written()));
}

TEST(Cli, PruneRefusesBadStatisticsFiles) {
  const std::string model = (kRoot / "models/tiny-glm5").string();
  ScratchDir tmp;
  auto error_of = [&](const std::string& text) {
    const fs::path f = tmp.path() / "report.json";
    write_file_atomic(f, text);
    Outcome r =
        whittle({"prune", model, never_written(), "--ratio", "0.25", "--stats", f.string()});
    EXPECT_NE(r.status, 0);
    EXPECT_THAT(r.output, HasSubstr(f.string()));
    return r.output;
  };
  EXPECT_THAT(error_of("{\"layers\": ["), HasSubstr("not valid JSON"));
  EXPECT_THAT(error_of("[]"), HasSubstr("expected a JSON object"));
  EXPECT_THAT(error_of("{}"), HasSubstr("expected \"layers\" to be an array"));
  EXPECT_THAT(error_of("{\"layers\": [{\"layer\": 0, \"experts\": []}]}"),
              HasSubstr("layer 0 is not a MoE layer"));
  EXPECT_THAT(error_of("{\"layers\": [{\"layer\": 1, \"experts\": [{}]}]}"),
              HasSubstr("expected \"experts\" to be an array of 32"));
  std::string experts = "[";
  for (int e = 0; e < 32; ++e)
    experts += std::string(e ? "," : "") +
               "{\"count\": 1, \"sum_gate_norm\": 1, \"sum_norm\": 1, \"sum_gate\": 1, " +
               "\"max_norm\": " + (e == 7 ? "-1" : "1") + "}";
  experts += "]";
  EXPECT_THAT(error_of("{\"layers\": [{\"layer\": 1, \"experts\": " + experts + "}]}"),
              HasSubstr("layers[0].experts[7]: expected \"max_norm\" to be a finite number >= 0"));
  EXPECT_FALSE(fs::exists(never_written()));
}

// Root ignores folder permissions, so as root the command runs as nobody (setpriv), on copies of
// the binary, a model and a calibration text that nobody can read wherever the build lives.
TEST(Cli, PruneRefusesAReadOnlyDestinationBeforeCalibrating) {
  ScratchDir tmp;
  const fs::path ro = tmp.path() / "ro", calib = tmp.path() / "calib.txt",
                 model = tmp.path() / "model", binary = tmp.path() / "whittle";
  fs::copy_file(kRoot / "README.md", calib);
  fs::copy(kRoot / "models/tiny-glm5-random", model);
  fs::copy_file(WHITTLE_BINARY, binary);
  fs::create_directories(ro);
  fs::permissions(tmp.path(), fs::perms::all);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::others_read |
                          fs::perms::others_exec);
  std::vector<std::string> cmd;
  if (::geteuid() == 0) {
    if (!fs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "root without setpriv";
    cmd = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  }
  for (const fs::path& a :
       {binary, fs::path("prune"), model, ro / "out", fs::path("--ratio"), fs::path("0.25"),
        fs::path("--calib"), calib, fs::path("--seqlen"), fs::path("64")})
    cmd.push_back(a.string());
  CommandOutcome r = run_command(cmd, "2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_THAT(r.output, HasSubstr((ro / "out").string()));
  EXPECT_THAT(r.output, HasSubstr("Permission denied"));
  EXPECT_THAT(r.output, Not(HasSubstr("calibration:")));  // refused before calibrating
  EXPECT_TRUE(fs::is_empty(ro));
}

TEST(Cli, PruneRefusesImpossibleRequestsBeforeCalibrating) {
  const std::string model = (kRoot / "models/tiny-glm5-random").string();
  auto error_of = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"prune", model, never_written()};
    args.insert(args.end(), extra.begin(), extra.end());
    Outcome r = whittle(args);
    EXPECT_NE(r.status, 0);
    return r.output;
  };
  EXPECT_THAT(error_of({"--ratio", "0"}), HasSubstr("ratio"));
  EXPECT_THAT(error_of({"--ratio", "1"}), HasSubstr("pruning ratio 1 is out of range"));
  EXPECT_THAT(error_of({"--ratio", "0.05"}), HasSubstr("nothing would be pruned"));
  EXPECT_THAT(error_of({"--ratio", "0.9"}), HasSubstr("ratio"));
  EXPECT_THAT(error_of({"--ratio", "0.25"}), HasSubstr("calibration.txt does not exist"));
  EXPECT_THAT(error_of({"--ratio", "0.25", "--calib", "/nonexistent/calib.txt"}),
              HasSubstr("/nonexistent/calib.txt"));
  EXPECT_THAT(error_of({"--ratio", "0.25", "--method", "magic"}), HasSubstr("--method"));
  // A dense model has nothing to prune.
  ScratchModel dense(kRoot / "models/tiny-glm5-random");
  dense.edit_config([](nlohmann::json& j) {
    j["first_k_dense_replace"] = 2;
    j["mlp_layer_types"] = {"dense", "dense"};
  });
  Outcome r = whittle({"prune", dense.dir().string(), never_written(), "--ratio", "0.25"});
  EXPECT_NE(r.status, 0);
  EXPECT_THAT(r.output, HasSubstr("the model has no MoE layers to prune"));
  EXPECT_FALSE(fs::exists(never_written()));
}

// `whittle quantize` end to end on the small random model: every method writes a GPTQ checkpoint
// that whittle loads and runs, the shapes vLLM cannot serve are named in warnings, and the usual
// refusals come before any work.
TEST(Cli, QuantizeWritesACheckpointWhittleRuns) {
  const fs::path model = kRoot / "models/tiny-glm5-random";
  ScratchDir tmp;
  for (const char* method : {"rtn", "gptq", "autoround"}) {
    const fs::path out = tmp.path() / method;
    const fs::path ids = tmp.path() / fmt::format("{}-ids.npy", method);
    Outcome r =
        whittle({"quantize", model.string(), out.string(), "--method", method, "--group-size", "32",
                 "--no-vllm-rules", "--calib", (kRoot / "README.md").string(), "--samples", "4",
                 "--seqlen", "32", "--iters", "3", "--save-calibration", ids.string()});
    ASSERT_EQ(r.status, 0) << r.output;
    // The ids are written for every method, RTN (which uses none) included: int32 [4, 32].
    EXPECT_EQ(fs::file_size(ids), 128 + 4 * 32 * 4) << method;
    EXPECT_THAT(r.output,
                HasSubstr(fmt::format("Linear modules quantized ({}, int4 g32)", method)));
    const nlohmann::json cfg = nlohmann::json::parse(read_file(out / "config.json"));
    EXPECT_EQ(cfg["quantization_config"]["quant_method"], "gptq");
    EXPECT_EQ(cfg["quantization_config"]["whittle_method"], method);
    EXPECT_TRUE(fs::exists(out / "quantization_config.json"));
    EXPECT_THAT(read_file(out / "README.md"), HasSubstr("Quantized with `whittle quantize"));
    Outcome gen = whittle({"generate", out.string(), "-p", "Hello", "-n", "4", "-t", "0"});
    EXPECT_EQ(gen.status, 0) << gen.output;
  }
  // With vLLM's rules (the default) every 64-wide layer stays 16-bit, and the refusal says why.
  Outcome vllm = whittle({"quantize", model.string(), (tmp.path() / "v").string(), "--method",
                          "rtn", "--group-size", "32"});
  EXPECT_EQ(vllm.status, 1);
  EXPECT_THAT(vllm.output, HasSubstr("no Linear is left to quantize"));
  EXPECT_THAT(vllm.output, HasSubstr("vLLM's Marlin kernels need outputs % 64 == 0"));
  // Refusals: an existing output, unsupported bits and group sizes, a quantized input.
  const fs::path out = tmp.path() / "rtn";
  Outcome again = whittle({"quantize", model.string(), out.string(), "--method", "rtn"});
  EXPECT_EQ(again.status, 1);
  EXPECT_THAT(again.output, HasSubstr("already exists; pass --force"));
  Outcome bits = whittle(
      {"quantize", model.string(), (tmp.path() / "b").string(), "--method", "rtn", "--bits", "3"});
  EXPECT_EQ(bits.status, 1);
  EXPECT_THAT(bits.output, HasSubstr("--bits: 3 is not supported"));
  Outcome twice = whittle({"quantize", out.string(), (tmp.path() / "t").string(), "--method", "rtn",
                           "--group-size", "32", "--no-vllm-rules"});
  EXPECT_EQ(twice.status, 1);
  EXPECT_THAT(twice.output, HasSubstr("already quantized"));
  Outcome lr = whittle({"quantize", model.string(), (tmp.path() / "l").string(), "--lr", "fast"});
  EXPECT_EQ(lr.status, 1);
  EXPECT_THAT(lr.output, HasSubstr("--lr: 'fast' is not a positive number or auto"));
  for (const char* name : {"b", "t", "l", "v"}) EXPECT_FALSE(fs::exists(tmp.path() / name)) << name;
}

TEST(Cli, BenchReportsSpeedTrafficAndBandwidth) {
  Outcome r = whittle({"bench", kModel.string(), "--prompt-tokens", "8", "--gen-tokens", "4",
                       "--threads", "1", "--json"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[bench] read bandwidth"));  // progress on stderr
  const nlohmann::json j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["prompt_tokens"], 8);
  EXPECT_EQ(j["gen_tokens"], 4);
  EXPECT_EQ(j["threads"], 1);
  EXPECT_GT(j["bandwidth_gbs"].get<double>(), 0.1);
  // The ceiling is the faster of the probes before the load and after decode.
  EXPECT_EQ(j["bandwidth_gbs"].get<double>(), std::max(j["bandwidth_before_gbs"].get<double>(),
                                                       j["bandwidth_after_gbs"].get<double>()));
  EXPECT_GT(j["prefill_tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0.0);
  // Only the routed experts are read: less than every Linear, more than nothing.
  const double per_token = j["weight_bytes_per_token"].get<double>();
  EXPECT_GT(per_token, 0.0);
  EXPECT_LT(per_token, j["linear_weight_bytes"].get<double>());
  EXPECT_NEAR(j["decode_gbs"].get<double>() / j["bandwidth_gbs"].get<double>(),
              j["decode_bandwidth_ratio"].get<double>(), 1e-9);
}

TEST(Cli, WhittleIsaCapsTheKernelsAndRefusesUnknownValues) {
  auto bench_with = [](const std::string& isa) {
    return run_command({"env", "WHITTLE_ISA=" + isa, WHITTLE_BINARY, "bench", kModel.string(),
                        "--prompt-tokens", "4", "--gen-tokens", "2", "--json"},
                       "2>&1");
  };
  CommandOutcome scalar = bench_with("scalar");
  ASSERT_EQ(scalar.status, 0) << scalar.output;
  EXPECT_EQ(nlohmann::json::parse(scalar.output.substr(scalar.output.find('{')))["kernels"],
            "scalar");
  CommandOutcome bogus = bench_with("avx9000");
  EXPECT_EQ(bogus.status, 1);
  EXPECT_THAT(bogus.output, HasSubstr("WHITTLE_ISA=avx9000: expected scalar, avx2"));
}

TEST(Cli, BenchRefusesMoreTokensThanTheContext) {
  Outcome r = whittle({"bench", kModel.string(), "--prompt-tokens", "100000"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("exceed the model's context"));
  EXPECT_EQ(whittle({"bench", kModel.string(), "--gen-tokens", "0"}).status, 2);
}

}  // namespace
}  // namespace whittle
