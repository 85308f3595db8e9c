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

  // Candidates sorted by logit (stable: lower id first on ties), cut by top-k.
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  size_t keep = params_.top_k > 0 ? std::min<size_t>(params_.top_k, ids.size()) : ids.size();
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  ids.resize(keep);

  std::vector<double> p(keep);
  const double mx = logits[ids[0]];
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i)
    sum += p[i] = std::exp((logits[ids[i]] - mx) / params_.temperature);
  for (double& x : p) x /= sum;

  // Nucleus: the smallest prefix whose mass reaches top_p (always at least one token).
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    size_t n = 0;
    while (n < keep && mass < params_.top_p) mass += p[n++];
    p.resize(n);
    ids.resize(n);
    for (double& x : p) x /= mass;
  }
  double r = uniform(), acc = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (r < acc) return ids[i];
  }
  return ids[p.size() - 1];
}

}  // namespace whittle
