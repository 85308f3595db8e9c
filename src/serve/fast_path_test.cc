// The fast path (int4 weights packed at load, int8 activations, 16-bit GEMV) against the reference
// path on the bundled model's int4 export (RTN, the recipe's module set): greedy generation gives
// the same tokens, and the logits stay close (their distance is printed; the kernels' own bound is
// tested in ops/int4_linear_test.cc).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "model/glm_moe_dsa.h"
#include "quant/quantize_model.h"
#include "serve/generation.h"
#include "tokenizer/bpe_tokenizer.h"
#include "util/testing.h"

namespace whittle {
namespace {

const std::filesystem::path kBundled =
    std::filesystem::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5";

class FastPath : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                         fmt::format("whittle-fastpath-{}", ::getpid()));
    std::filesystem::remove_all(*scratch_);
    ThreadPool pool(2);
    QuantizeOptions options;
    options.method = QuantMethod::kRtn;
    options.show_progress = false;
    quantize_checkpoint(kBundled, *scratch_ / "int4", options, pool);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*scratch_);
    delete scratch_;
  }
  static std::filesystem::path int4() { return *scratch_ / "int4"; }
  static inline std::filesystem::path* scratch_ = nullptr;
};

std::vector<std::vector<int32_t>> prompts() {
  BpeTokenizer tok = BpeTokenizer::load(kBundled / "tokenizer.json");
  std::vector<std::vector<int32_t>> out;
  for (const char* text : {"The river ran past the old mill, and", "def parse_header(line):\n",
                           "Tom has 12 apples and buys 7 more. How many apples does he have?",
                           "<|user|>\nWrite a short poem about the sea.<|assistant|>"})
    out.push_back(tok.encode(text));
  return out;
}

TEST_F(FastPath, GreedyTokensEqualTheReferencePathOnTheInt4Export) {
  ThreadPool pool(2);
  GlmMoeDsa fast = GlmMoeDsa::load(int4(), pool, Kernels::kFast);
  GlmMoeDsa ref = GlmMoeDsa::load(int4(), pool, Kernels::kReference);
  // The packed copies exist: the int4 weights really run on the integer kernels.
  int64_t packed = 0;
  fast.weights().weights().layers.back().for_each_linear(
      [&](const Weight& w) { packed += w.packed() != nullptr; });
  EXPECT_GT(packed, 50);
  GenerationOptions options{.max_tokens = 48, .sampling = {.temperature = 0.0f}};
  int64_t compared = 0;
  for (const std::vector<int32_t>& prompt : prompts()) {
    KvCache cf(fast.config()), cr(ref.config());
    const GenerationResult a = generate(fast, cf, prompt, options);
    const GenerationResult b = generate(ref, cr, prompt, options);
    EXPECT_EQ(a.tokens, b.tokens);
    compared += static_cast<int64_t>(b.tokens.size());
  }
  EXPECT_GT(compared, 100);
}

TEST_F(FastPath, LogitsStayCloseToTheReference) {
  ThreadPool pool(2);
  GlmMoeDsa fast = GlmMoeDsa::load(int4(), pool, Kernels::kFast);
  GlmMoeDsa ref = GlmMoeDsa::load(int4(), pool, Kernels::kReference);
  double worst = 0.0, diff_sq = 0.0, ref_sq = 0.0;
  size_t n = 0;
  auto compare = [&](const std::vector<float>& a, const std::vector<float>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = a[i] - b[i];
      worst = std::max(worst, std::fabs(d));
      diff_sq += d * d;
      ref_sq += static_cast<double>(b[i]) * b[i];
    }
    n += a.size();
  };
  for (const std::vector<int32_t>& prompt : prompts()) {
    KvCache cf(fast.config()), cr(ref.config());
    compare(fast.prefill(prompt, cf), ref.prefill(prompt, cr));
    // Decode (absorbed attention, the 16-bit GEMV for lm_head) after the prompt as well.
    compare(fast.decode(prompt[0], cf), ref.decode(prompt[0], cr));
  }
  const double rms_diff = std::sqrt(diff_sq / n), rms = std::sqrt(ref_sq / n);
  std::printf("fast vs reference logits: rms diff %.4g, max |diff| %.4g, rms logit %.4g\n",
              rms_diff, worst, rms);
  EXPECT_GT(worst, 0.0);  // the int8 path ran
  EXPECT_LT(rms_diff, 0.03 * rms);
  // The largest differences are where two experts' router scores nearly tie and the int8 path
  // picks the other one.
  EXPECT_LT(worst, 0.5 * rms);
}

}  // namespace
}  // namespace whittle
