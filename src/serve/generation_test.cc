// The shared generation loop: greedy output equals arg-max over logits that prefill reproduces,
// stop ids end generation without being kept, a callback can stop it, only ids below sample_vocab
// are produced, a seed reproduces a sampled sequence, and the cache holds what was run.
#include "serve/generation.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "model/demo_model_test_fixture.h"
#include "util/error.h"
#include "util/testing.h"

namespace whittle {
namespace {

class Generation : public DemoModelTest {
 protected:
  const std::vector<int32_t> prompt_ = {12, 345, 678, 9};
};

TEST_F(Generation, GreedyIsArgmaxOfTheFullSequence) {
  KvCache cache(model_->config());
  GenerationOptions o{.max_tokens = 12, .sampling = {.temperature = 0.0f}};
  GenerationResult r = generate(*model_, cache, prompt_, o);
  ASSERT_EQ(r.tokens.size(), 12u);
  EXPECT_EQ(r.sampled, 12);
  EXPECT_EQ(r.stop, StopReason::kMaxTokens);
  EXPECT_EQ(cache.length(),
            static_cast<int64_t>(prompt_.size() + 11));  // the last token is not run
  // Re-running prompt + output in one prefill gives the same arg-max at every generated position.
  std::vector<int32_t> all = prompt_;
  all.insert(all.end(), r.tokens.begin(), r.tokens.end());
  KvCache fresh(model_->config());
  std::vector<float> logits = model_->prefill(all, fresh, /*all_logits=*/true);
  const int64_t V = model_->config().vocab_size;
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    size_t row = prompt_.size() - 1 + i;
    EXPECT_EQ(argmax(std::span<const float>(logits).subspan(row * V, V)), r.tokens[i]) << i;
  }
}

TEST_F(Generation, StopIdEndsWithoutBeingKept) {
  KvCache cache(model_->config());
  GenerationOptions o{.max_tokens = 12, .sampling = {.temperature = 0.0f}};
  GenerationResult free_run = generate(*model_, cache, prompt_, o);
  ASSERT_GE(free_run.tokens.size(), 4u);
  cache.clear();
  o.stop_ids = {free_run.tokens[3]};
  GenerationResult r = generate(*model_, cache, prompt_, o);
  // Stops at the first occurrence of that id, which may be earlier than position 3.
  auto first = std::find(free_run.tokens.begin(), free_run.tokens.end(), free_run.tokens[3]) -
               free_run.tokens.begin();
  EXPECT_EQ(r.stop, StopReason::kStopId);
  EXPECT_EQ(r.stop_id, free_run.tokens[3]);
  EXPECT_EQ(static_cast<int64_t>(r.tokens.size()), first);
  EXPECT_EQ(r.sampled, first + 1);
  EXPECT_STREQ(stop_reason_name(r.stop), "eos");
}

TEST_F(Generation, CallbackCanStop) {
  KvCache cache(model_->config());
  int seen = 0;
  GenerationResult r =
      generate(*model_, cache, prompt_, {.max_tokens = 50, .sampling = {.temperature = 0.0f}},
               [&](int32_t) { return ++seen < 5; });
  EXPECT_EQ(seen, 5);
  EXPECT_EQ(r.tokens.size(), 5u);
  EXPECT_EQ(r.stop, StopReason::kCallback);
}

TEST_F(Generation, SamplesOnlyBelowSampleVocabAndIsReproducible) {
  GenerationOptions o{
      .max_tokens = 64, .sampling = {.temperature = 5.0f, .seed = 3}, .sample_vocab = 100};
  KvCache a(model_->config()), b(model_->config());
  GenerationResult ra = generate(*model_, a, prompt_, o), rb = generate(*model_, b, prompt_, o);
  EXPECT_EQ(ra.tokens, rb.tokens);
  for (int32_t t : ra.tokens) EXPECT_LT(t, 100);
  o.sampling.seed = 4;
  KvCache c(model_->config());
  EXPECT_NE(generate(*model_, c, prompt_, o).tokens, ra.tokens);
}

TEST_F(Generation, ZeroMaxTokensAndEmptyPrompt) {
  KvCache cache(model_->config());
  EXPECT_TRUE(generate(*model_, cache, prompt_, {.max_tokens = 0}).tokens.empty());
  cache.clear();
  EXPECT_THROW(generate(*model_, cache, std::span<const int32_t>(), {}), Error);
}

// Prompt + output may fill the context (max_position_embeddings) and no more: a longer prompt is
// refused before any work, and generation that would run past the end stops with kContext.
TEST_F(Generation, StaysWithinTheContext) {
  ThreadPool pool(1);
  GlmMoeDsa small = load_model_with_context(model_dir(), 10, pool);
  KvCache cache(small.config());
  GenerationOptions o{.max_tokens = 50, .sampling = {.temperature = 0.0f}};
  GenerationResult r = generate(small, cache, prompt_, o);
  EXPECT_EQ(r.tokens.size(), 6u);  // 4 prompt tokens + 6 = 10
  EXPECT_EQ(r.stop, StopReason::kContext);
  EXPECT_STREQ(stop_reason_name(r.stop), "context full");
  EXPECT_EQ(context_room(small.config(), 0, 4), 6);
  cache.clear();
  o.max_tokens = 6;  // fits exactly: the user's limit, not the context, ended it
  EXPECT_EQ(generate(small, cache, prompt_, o).stop, StopReason::kMaxTokens);
  cache.clear();
  std::vector<int32_t> long_prompt(11, 12);
  expect_error([&] { generate(small, cache, long_prompt, o); }, {"11 tokens", "context is 10"});
  EXPECT_EQ(cache.length(), 0);
}

TEST(GenerationDefaults, FollowGenerationConfigAsTransformersDoes) {
  ModelConfig c;
  GenerationDefaults none = generation_defaults(c);  // no generation_config.json: greedy, 128
  EXPECT_EQ(none.sampling.temperature, 0.0f);
  EXPECT_EQ(none.max_tokens, 128);
  c.temperature = 0.8;
  c.top_k = 50;
  c.top_p = 0.95;
  c.max_new_tokens = 256;
  GenerationDefaults off = generation_defaults(c);  // do_sample absent: the values are not used
  EXPECT_EQ(off.sampling.temperature, 0.0f);
  EXPECT_EQ(off.max_tokens, 256);
  c.do_sample = true;
  GenerationDefaults on = generation_defaults(c);
  EXPECT_FLOAT_EQ(on.sampling.temperature, 0.8f);
  EXPECT_EQ(on.sampling.top_k, 50);
  EXPECT_FLOAT_EQ(on.sampling.top_p, 0.95f);
  c.temperature.reset();
  c.top_k.reset();
  c.top_p.reset();
  GenerationDefaults bare = generation_defaults(c);  // do_sample alone: temperature 1, no filters
  EXPECT_FLOAT_EQ(bare.sampling.temperature, 1.0f);
  EXPECT_EQ(bare.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(bare.sampling.top_p, 1.0f);
}

}  // namespace
}  // namespace whittle
