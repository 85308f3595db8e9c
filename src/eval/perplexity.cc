// Sliding-window negative log-likelihood; see perplexity.h.
#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace whittle {

void validate(const SlidingWindow& w) {
  if (w.ctx < 2) fail("--ctx must be at least 2, got {}", w.ctx);
  // stride == ctx would leave each window's first token without context and unscored.
  if (w.stride < 1 || w.stride >= w.ctx)
    fail("--stride must be in [1, ctx - 1] = [1, {}], got {}", w.ctx - 1, w.stride);
}

SequenceNll sliding_window_nll(GlmMoeDsa& model, std::span<const int32_t> tokens,
                               const SlidingWindow& window, int64_t vocab,
                               const std::function<void(int64_t)>& on_scored) {
  validate(window);
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t V = model.config().vocab_size;
  if (vocab <= 0 || vocab > V) fail("perplexity: vocab {} outside [1, {}]", vocab, V);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("perplexity: token {} at position {} outside [0, {})", tokens[i], i, vocab);
  SequenceNll out;
  out.nll.reserve(n > 0 ? n - 1 : 0);
  KvCache cache(model.config());
  int64_t scored_to = 1;  // tokens [1, scored_to) are done
  for (int64_t begin = 0; scored_to < n; begin += window.stride) {
    const int64_t end = std::min(begin + window.ctx, n);
    cache.clear();
    std::vector<float> logits =
        model.prefill(tokens.subspan(begin, end - begin), cache, /*all_logits=*/true);
    ++out.windows;
    const int64_t first = scored_to;
    for (int64_t p = first; p < end; ++p) {
      // Row p - 1 of the window predicts token p. log-sum-exp in double over the tokenizer's ids.
      const float* row = logits.data() + (p - 1 - begin) * V;
      const float mx = *std::max_element(row, row + vocab);
      double sum = 0.0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      const double nll = std::log(sum) + mx - row[tokens[p]];
      out.nll.push_back(nll);
      out.total += nll;
    }
    scored_to = end;
    if (on_scored) on_scored(end - first);
  }
  return out;
}

}  // namespace whittle
