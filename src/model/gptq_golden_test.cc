// GPTQ checkpoints as the libraries ship them (tests/golden/gptq/, made by
// tools/oracle/make_gptq_goldens.py with auto-round and gptqmodel from PyPI): whittle reads every
// quantized module to exactly the values the library's own dequantization gives, and its logits
// match transformers run in float32 on those dequantized weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "io/npy.h"
#include "io/safetensors.h"
#include "model/glm_moe_dsa.h"
#include "serve/sampler.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/gptq";

std::vector<std::string> cases() {
  std::vector<std::string> names;
  if (fs::is_directory(kGolden))
    for (const auto& e : fs::directory_iterator(kGolden))
      if (fs::exists(e.path() / "dequant" / "dequant.safetensors"))
        names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// Every Linear of the model by its Hugging Face module name.
std::map<std::string, const Weight*> linears(const ModelWeights& w) {
  std::map<std::string, const Weight*> out;
  for (const LayerWeights& layer : w.layers)
    layer.for_each_linear([&](const Weight& x) { out[x.module()] = &x; });
  out[w.lm_head.module()] = &w.lm_head;
  return out;
}

class GptqGolden : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kGolden / GetParam(); }
};

// (a) The weights: the library's dequantization (float32, `<module>.weight` in
// dequant/dequant.safetensors, a subfolder so that the model folder holds only the checkpoint)
// equals whittle's unpacking bit for bit, for every quantized module.
TEST_P(GptqGolden, UnpackingEqualsTheLibrarysDequantization) {
  const ModelConfig config = ModelConfig::load(dir());
  ASSERT_TRUE(config.quantization.has_value());
  WeightSource source(dir(), config);
  const std::map<std::string, const Weight*> modules = linears(source.weights());
  SafeTensorsFile dequant(dir() / "dequant" / "dequant.safetensors");
  size_t checked = 0;
  for (const TensorInfo& t : dequant.tensors()) {
    ASSERT_TRUE(t.name.ends_with(".weight")) << t.name;
    const std::string module = t.name.substr(0, t.name.size() - 7);
    auto it = modules.find(module);
    ASSERT_NE(it, modules.end()) << module;
    const Weight& w = *it->second;
    EXPECT_EQ(w.format(), WeightFormat::kGptq) << module;
    ASSERT_EQ(t.shape, (std::vector<int64_t>{w.rows(), w.cols()})) << module;
    ASSERT_EQ(t.dtype, DType::F32) << module;
    std::vector<float> want(static_cast<size_t>(t.numel()));
    convert_to_f32(t.dtype, dequant.view(t).bytes.data(), want.size(), want.data());
    const std::vector<float> got = w.to_f32();
    size_t differ = 0;
    for (size_t i = 0; i < want.size(); ++i) differ += got[i] != want[i];
    EXPECT_EQ(differ, 0u) << module << ": " << differ << " of " << want.size() << " values differ";
    ++checked;
  }
  // Every GPTQ module of the model was compared.
  size_t quantized = 0;
  for (const auto& [name, w] : modules) quantized += w->format() == WeightFormat::kGptq;
  EXPECT_EQ(checked, quantized);
  EXPECT_GT(checked, 0u);
}

// (b) The logits: transformers in float32 (eager) with the library-dequantized weights in place of
// every quantized module, at the tolerance of the other model goldens.
TEST_P(GptqGolden, LogitsMatchTransformersOnTheDequantizedWeights) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(dir(), pool);
  std::vector<int32_t> ids;
  for (int64_t id : read_npy_i64(dir() / "input_ids.npy")) ids.push_back(static_cast<int32_t>(id));
  std::vector<int64_t> shape;
  const std::vector<float> want = read_npy_f32(dir() / "logits.npy", &shape);
  const int64_t T = static_cast<int64_t>(ids.size()), V = model.config().vocab_size;
  ASSERT_EQ(shape, (std::vector<int64_t>{T, V}));
  for (bool decode : {false, true}) {
    KvCache cache(model.config());
    std::vector<float> got;
    if (decode) {
      for (int32_t id : ids) {
        std::vector<float> row = model.decode(id, cache);
        got.insert(got.end(), row.begin(), row.end());
      }
    } else {
      got = model.prefill(ids, cache);
    }
    float worst = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::fabs(got[i] - want[i]));
      scale = std::max(scale, std::fabs(want[i]));
    }
    // Achieved: at most 4.9e-7 x max |logit| over the five cases.
    EXPECT_LE(worst, 1e-5f * scale) << (decode ? "decode" : "prefill");
    for (int64_t t = 0; t < T; ++t)
      EXPECT_EQ(argmax({&want[t * V], static_cast<size_t>(V)}),
                argmax({&got[t * V], static_cast<size_t>(V)}))
          << (decode ? "decode" : "prefill") << " position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GptqGolden, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GptqGolden);

TEST(GptqGoldens, ArePresent) {
  EXPECT_GE(cases().size(), 4u) << kGolden;
}

}  // namespace
}  // namespace whittle
