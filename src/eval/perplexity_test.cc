// Sliding-window perplexity against transformers (tests/golden/eval/ppl_golden.json, made by
// tools/oracle/make_eval_golden.py): same token ids as HF `tokenizers`, and per-token and total NLL
// equal to the strided recipe of the transformers docs, with and without a document-start token,
// token by token except where the oracle marks a DSA top-k tie (see make_eval_golden.py; torch.topk
// and whittle break exact ties differently), and the total NLL within 1e-4 relative in every case.
// Also: the window schedule scores every token but the first exactly once, and bad windows fail.
#include "eval/perplexity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "model/demo_model_test_fixture.h"
#include "tokenizer/bpe_tokenizer.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kRoot = WHITTLE_SOURCE_DIR;
const fs::path kModel = kRoot / "models/tiny-glm5-random";
const fs::path kGolden = kRoot / "tests/golden/eval";

class Perplexity : public DemoModelTest {};

TEST_F(Perplexity, MatchesTransformersStridedRecipe) {
  nlohmann::json golden = nlohmann::json::parse(read_file(kGolden / "ppl_golden.json"));
  BpeTokenizer tokenizer = BpeTokenizer::load(kModel / "tokenizer.json");
  const std::string text = read_file(kGolden / golden["text_file"].get<std::string>());
  std::vector<int32_t> ids = tokenizer.encode(text);
  ASSERT_EQ(ids, golden["ids"].get<std::vector<int32_t>>());
  ASSERT_EQ(tokenizer.vocab_size(), golden["tokenizer_vocab"].get<int64_t>());
  ASSERT_GE(golden["cases"].size(), 3u);
  for (const auto& c : golden["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::vector<int32_t> seq = ids;
    if (!c["doc_start"].is_null())
      seq.insert(seq.begin(), *tokenizer.token_to_id(c["doc_start"].get<std::string>()));
    SequenceNll r = sliding_window_nll(*model_, seq, {.ctx = c["ctx"], .stride = c["stride"]},
                                       tokenizer.vocab_size());
    auto want = c["nll"].get<std::vector<double>>();
    auto tie = c["tie_affected"].get<std::vector<bool>>();
    ASSERT_EQ(r.nll.size(), want.size());
    EXPECT_EQ(r.windows, c["windows"].get<int64_t>());
    // Tokens whose window has no DSA top-k tie up to their row match one by one.
    int64_t exact = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (tie[i]) continue;
      ++exact;
      ASSERT_NEAR(r.nll[i], want[i], 1e-4 * std::max(1.0, std::fabs(want[i]))) << "token " << i + 1;
    }
    EXPECT_GE(exact, 100);
    const double total = c["total_nll"];
    EXPECT_NEAR(r.total, total, 1e-4 * std::fabs(total));
  }
}

TEST_F(Perplexity, WindowScheduleScoresEachTokenOnceWithItsWindowAsContext) {
  // Token p's NLL from the sliding window equals a single forward over the window that scored it.
  std::vector<int32_t> seq;
  for (int i = 0; i < 23; ++i) seq.push_back((i * 37 + 5) % 1900);
  const SlidingWindow w{.ctx = 8, .stride = 3};
  SequenceNll r = sliding_window_nll(*model_, seq, w, 2000);
  ASSERT_EQ(r.nll.size(), seq.size() - 1);
  // Windows begin at 0, 3, 6, ..., 15 (ends 8, 11, ..., 23): 6 passes.
  EXPECT_EQ(r.windows, 6);
  // Token 9 is scored by the window [3, 11) (the first that reaches it), with context 3..8.
  KvCache cache(model_->config());
  std::vector<float> logits =
      model_->prefill(std::span<const int32_t>(seq).subspan(3, 6), cache, false);
  double mx = *std::max_element(logits.begin(), logits.begin() + 2000), sum = 0;
  for (int v = 0; v < 2000; ++v) sum += std::exp(static_cast<double>(logits[v]) - mx);
  EXPECT_NEAR(r.nll[8], std::log(sum) + mx - logits[seq[9]], 1e-4);
  double total = 0;
  for (double x : r.nll) total += x;
  EXPECT_DOUBLE_EQ(total, r.total);
}

TEST_F(Perplexity, ShortSequencesAndBadWindows) {
  std::vector<int32_t> one = {5};
  SequenceNll r = sliding_window_nll(*model_, one, {.ctx = 8, .stride = 4}, 2000);
  EXPECT_TRUE(r.nll.empty());
  EXPECT_EQ(r.windows, 0);
  std::vector<int32_t> two = {5, 6};
  EXPECT_EQ(sliding_window_nll(*model_, two, {.ctx = 8, .stride = 4}, 2000).nll.size(), 1u);
  EXPECT_THROW(validate({.ctx = 1, .stride = 1}), Error);
  EXPECT_THROW(validate({.ctx = 8, .stride = 8}), Error);
  EXPECT_THROW(validate({.ctx = 8, .stride = 0}), Error);
  std::vector<int32_t> padding_id = {5, 2001};
  EXPECT_THROW(sliding_window_nll(*model_, padding_id, {.ctx = 8, .stride = 4}, 2000), Error);
}

}  // namespace
}  // namespace whittle
