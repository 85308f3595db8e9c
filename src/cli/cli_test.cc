// The whittle binary end to end: every subcommand has --help, and bad input (a missing folder or
// file, malformed JSON, an unknown architecture, a missing tensor, a wrong shape, a truncated file,
// invalid UTF-8 in a prompt, an out-of-range id) ends with one clear message and a non-zero exit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kRoot = WHITTLE_SOURCE_DIR;
const fs::path kModel = kRoot / "tests/golden/models/dsa_long";

struct Outcome {
  int status;
  std::string output;  // stdout and stderr together
};

Outcome whittle(const std::vector<std::string>& args) {
  std::vector<std::string> cmd = {WHITTLE_BINARY};
  cmd.insert(cmd.end(), args.begin(), args.end());
  CommandOutcome r = run_command(cmd, "2>&1");
  return {r.status, r.output};
}

// A scratch copy of the golden model that a test may damage.
class ScratchModel {
 public:
  ScratchModel() : dir_(fs::temp_directory_path() / ("whittle_cli_" + std::to_string(::getpid()) + "_" +
                                                     std::to_string(counter_++))) {
    fs::remove_all(dir_);
    fs::copy(kModel, dir_, fs::copy_options::recursive);
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
  for (const char* sub : {"info", "generate", "logits"}) {
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
                      w.add("model.layers.2.enorm.weight", DType::BF16, {64}, std::span(zeros).first(128));
                    });
  Outcome r = whittle({"info", m.str()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2 (1 dense, 1 MoE) + 1 MTP"));
  EXPECT_THAT(r.output, HasSubstr("mtp: model.layers.2.eh_proj.weight"));
  EXPECT_THAT(r.output, HasSubstr("mtp: model.layers.2.enorm.weight"));
  // The forward pass ignores the MTP layer.
  EXPECT_EQ(whittle({"logits", m.str(), "--ids", "1,2", "--out", (m.dir() / "x.npy").string()}).status, 0);
}

TEST(Cli, LogitsWritesTheGoldenLogits) {
  fs::path out = fs::temp_directory_path() / ("whittle_cli_logits_" + std::to_string(::getpid()) + ".npy");
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
    Outcome r = whittle({"logits", kModel.string(), "--ids", ids, "--out", out.string(), "--mode", mode});
    ASSERT_EQ(r.status, 0) << r.output;
    std::vector<int64_t> shape;
    std::vector<float> logits = read_npy_f32(out, &shape);
    ASSERT_EQ(shape, golden_shape) << mode;
    for (size_t i = 0; i < logits.size(); ++i) ASSERT_NEAR(logits[i], golden[i], 1e-3f * scale) << mode << " " << i;
  }
  fs::remove(out);
}

TEST(Cli, GenerateIsReproducibleAndStaysInTheTokenizerVocabulary) {
  const std::string demo = (kRoot / "models/tiny-glm5-random").string();
  for (const char* chat : {"", "--chat"}) {
    std::vector<std::string> args = {"generate", demo, "-p", "Hello world", "-n", "48", "-t", "1.0", "--seed", "7", "-q"};
    if (*chat) args.push_back(chat);
    Outcome a = whittle(args), b = whittle(args);
    ASSERT_EQ(a.status, 0) << a.output;
    EXPECT_EQ(a.output, b.output);  // same seed, same text
    EXPECT_FALSE(find_invalid_utf8(a.output).has_value());
  }
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
  m.rewrite_weights([](const std::string& name, auto&) { return name != "model.layers.1.self_attn.o_proj.weight"; });
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
  EXPECT_THAT(r.output, HasSubstr("tensor 'model.layers.0.self_attn.q_a_proj.weight' has shape [64, 32], expected [32, 64]"));
  EXPECT_THAT(r.output, HasSubstr("model.safetensors"));
}

TEST(Cli, TruncatedWeights) {
  ScratchModel m;
  fs::resize_file(m.dir() / "model.safetensors", fs::file_size(m.dir() / "model.safetensors") - 1000);
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
  Outcome r = whittle({"logits", kModel.string(), "--ids", "1,512", "--out", "/tmp/never.npy"});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("token id 512 is outside the vocabulary [0, 512)"));
}

}  // namespace
}  // namespace whittle
