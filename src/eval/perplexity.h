// Sliding-window perplexity (the strided evaluation of Hugging Face's "Perplexity of fixed-length
// models"): windows of `ctx` tokens start every `stride` tokens; each window scores only the tokens
// the previous window did not reach, so every token but the first is scored exactly once, with the
// whole window before it as context (at least ctx - stride tokens once past the first window).
//
// The first token of a sequence has no context and is never scored. `whittle eval --task ppl`
// either accepts that (the file's first token is context only) or prepends a document-start token
// (--doc-start) so that every token of the file is scored.
//
// Each window is an independent forward pass from position 0 with a fresh cache, as in the HF
// recipe. Probabilities are a softmax over the first `vocab` logits only: embedding rows past the
// tokenizer's ids are padding and take no probability mass.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/glm_moe_dsa.h"

namespace whittle {

struct SlidingWindow {
  int64_t ctx = 512;     // tokens per forward pass, >= 2
  int64_t stride = 256;  // in [1, ctx - 1]: consecutive windows overlap by ctx - stride tokens
};

struct SequenceNll {
  std::vector<double> nll;  // nll[i]: -ln p(tokens[i + 1] | window context), nats
  double total = 0.0;       // sum of nll
  int64_t windows = 0;      // forward passes run
};

// Throws Error when ctx < 2 or stride is outside [1, ctx - 1].
void validate(const SlidingWindow& window);

// Scores tokens[1..n) of `tokens`. `vocab`: how many leading logits form the distribution (the
// tokenizer's id count); every token must be below it. `on_scored(n)` is called after each window
// with the number of tokens it scored (for progress).
SequenceNll sliding_window_nll(GlmMoeDsa& model, std::span<const int32_t> tokens,
                               const SlidingWindow& window, int64_t vocab,
                               const std::function<void(int64_t)>& on_scored = {});

}  // namespace whittle
