#include "serve/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "util/error.h"

namespace whittle {

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  // Written so that NaN, which every ordered comparison calls false, is refused too.
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f))
    fail("top-p must be in (0, 1], got {}", params.top_p);
  if (!std::isfinite(params.temperature))
    fail("temperature must be a finite number (0 or less: greedy), got {}", params.temperature);
  if (params.top_k < 0) fail("top-k must not be negative, got {}", params.top_k);
}

double Sampler::uniform() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) fail("cannot sample from an empty logits row");
  if (params_.temperature <= 0.0f) return argmax(logits);

  // Candidates in order of logit (lower id first on ties). Only as long a prefix as the draw needs
  // is ever sorted: top-k selects its k in linear time; without top-k the prefix grows by
  // selection (nth_element on what is left, then a sort of the new part) until it holds the
  // nucleus and the drawn token, which for a peaked distribution is a few hundred of ~150k ids.
  const size_t vocab = logits.size();
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  ids_.resize(vocab);
  std::iota(ids_.begin(), ids_.end(), 0);
  size_t candidates = vocab, sorted = 0;
  auto sort_prefix = [&](size_t n) {
    n = std::min(n, candidates);
    if (n <= sorted) return;
    if (n < candidates)
      std::nth_element(ids_.begin() + sorted, ids_.begin() + n, ids_.end(), before);
    std::sort(ids_.begin() + sorted, ids_.begin() + n, before);
    sorted = n;
  };
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab) {
    sort_prefix(static_cast<size_t>(params_.top_k));
    candidates = sorted;
  } else {
    sort_prefix(1);
  }
  // Softmax over the candidates at the temperature, in double; the normaliser sums in id order.
  const double mx = logits[ids_[0]];
  const double inv_t = 1.0 / params_.temperature;
  auto weight = [&](int32_t id) { return std::exp((logits[id] - mx) * inv_t); };
  double total = 0.0;
  if (candidates == vocab) {
    for (size_t id = 0; id < vocab; ++id) total += weight(static_cast<int32_t>(id));
  } else {
    for (size_t i = 0; i < candidates; ++i) total += weight(ids_[i]);
  }
  // The cumulative mass of the sorted prefix, extended on demand, until `done(mass)`; returns the
  // prefix length at which it held (every candidate if it never does).
  double mass = 0.0;
  size_t n = 0;
  auto walk = [&](auto done) {
    for (size_t chunk = 256;; chunk *= 4) {
      sort_prefix(n + chunk);
      const size_t end = std::min(sorted, candidates);
      while (n < end) {
        mass += weight(ids_[n++]) / total;
        if (done(mass)) return n;
      }
      if (end == candidates) return n;
    }
  };
  // Nucleus: the smallest prefix whose mass reaches top_p (always at least one token); the draw
  // is then made within it, renormalised.
  double limit = 1.0;
  if (params_.top_p < 1.0f) {
    const size_t nucleus = walk([&](double m) { return m >= params_.top_p; });
    limit = mass;
    candidates = nucleus;
    mass = 0.0;
    n = 0;
  }
  const double r = uniform() * limit;
  const size_t drawn = walk([&](double m) { return r < m; });
  return ids_[std::max<size_t>(drawn, 1) - 1];
}

}  // namespace whittle
