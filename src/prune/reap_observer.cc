#include "prune/reap_observer.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/progress.h"

namespace whittle {

ReapObserver::ReapObserver(const ModelConfig& config)
    : hidden_(config.hidden_size),
      stats_(static_cast<size_t>(config.num_hidden_layers)),
      tokens_(static_cast<size_t>(config.num_hidden_layers), 0) {
  for (int64_t L = 0; L < config.num_hidden_layers; ++L)
    if (config.layer_is_moe[L]) stats_[L].resize(static_cast<size_t>(config.n_routed_experts));
}

void ReapObserver::router(int64_t layer, const Routing& routing) {
  // Only the choices and weights are needed (not the [tokens, experts] logits).
  last_.k = routing.k;
  last_.chosen = routing.chosen;
  last_.weights = routing.weights;
  last_layer_ = layer;
  tokens_[layer] += routing.tokens;
}

void ReapObserver::expert(int64_t layer, int64_t expert, std::span<const int64_t> rows,
                          const float* /*input*/, const float* output) {
  if (layer != last_layer_) fail("internal: expert of layer {} reported before its router", layer);
  ExpertStats& s = stats_[layer][expert];
  for (size_t i = 0; i < rows.size(); ++i) {
    // The weight the router gave this expert for this row.
    const int64_t row = rows[i];
    double gate = 0.0;
    bool found = false;
    for (int64_t j = 0; j < last_.k; ++j)
      if (last_.chosen[row * last_.k + j] == expert) {
        gate = last_.weights[row * last_.k + j];
        found = true;
      }
    if (!found) fail("internal: row {} reported for expert {} it was not routed to", row, expert);
    double sq = 0.0;
    const float* y = output + static_cast<int64_t>(i) * hidden_;
    for (int64_t h = 0; h < hidden_; ++h) sq += static_cast<double>(y[h]) * y[h];
    const double norm = std::sqrt(sq);
    s.count += 1;
    s.sum_gate_norm += gate * norm;
    s.sum_norm += norm;
    s.sum_gate += gate;
    s.max_norm = std::max(s.max_norm, norm);
  }
}

MoeWeights keep_experts(const MoeWeights& w, std::span<const int32_t> kept) {
  const int64_t E = static_cast<int64_t>(w.experts.size()), H = w.router.cols();
  MoeWeights out;
  out.shared = w.shared;
  std::vector<float> router(kept.size() * static_cast<size_t>(H));
  for (size_t i = 0; i < kept.size(); ++i) {
    const int64_t e = kept[i];
    if (e < 0 || e >= E || (i > 0 && e <= kept[i - 1]))
      fail("internal: kept experts must be ascending indices below {}", E);
    w.router.rows_to_f32(e, e + 1, &router[i * static_cast<size_t>(H)]);
    out.correction_bias.push_back(w.correction_bias[static_cast<size_t>(e)]);
    out.experts.push_back(w.experts[static_cast<size_t>(e)]);
  }
  out.router =
      Weight::owned_f32(w.router.module(), std::move(router), static_cast<int64_t>(kept.size()), H);
  return out;
}

std::vector<std::vector<ExpertStats>> collect_reap_stats(
    const GlmMoeDsa& model, std::span<const std::vector<int32_t>> samples, int64_t batch,
    Progress* progress, const KeepExperts& prune_as_you_go) {
  const ModelConfig& c = model.config();
  if (samples.empty()) fail("no calibration samples");
  if (batch < 1) fail("internal: batch {}", batch);
  ReapObserver observer(c);
  std::vector<KvCache> caches(samples.size(), KvCache(c));
  std::vector<Batch> batches;
  for (size_t first = 0; first < samples.size(); first += static_cast<size_t>(batch)) {
    std::vector<SequenceInput> seqs;
    for (size_t i = first; i < std::min(samples.size(), first + static_cast<size_t>(batch)); ++i)
      seqs.push_back({samples[i], &caches[i], false});
    batches.push_back(model.embed(std::move(seqs)));
  }
  auto drop_cache = [](Batch& b, int64_t L) {
    for (int64_t s = 0; s < b.sequences(); ++s) b.sequence(s).cache->layers[L].clear();
  };
  const WeightSource& source = model.weights();
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const LayerWeights& w = source.acquire(L);
    source.prefetch(L + 1);
    const bool moe = c.layer_is_moe[L];
    if (moe && prune_as_you_go) {
      // Observe the unpruned layer on a copy of each batch, then run the pruned layer on the
      // batches themselves. Recomputing the attention costs less than the alternative of keeping
      // every sample's MoE input (as large as all the hidden states again: 6.4 GB for 128 x 2048
      // tokens of GLM-5) until the survivors are known; one batch is copied at a time.
      for (Batch& b : batches) {
        Batch observed = b;
        model.forward_layer(L, w, observed, &observer);
        drop_cache(b, L);
      }
      LayerWeights pruned = w;
      pruned.moe = keep_experts(*w.moe, prune_as_you_go(L, observer.stats()[L]));
      for (Batch& b : batches) {
        model.forward_layer(L, pruned, b);
        drop_cache(b, L);
        if (progress) progress->advance(b.rows());
      }
    } else {
      for (Batch& b : batches) {
        model.forward_layer(L, w, b, moe ? &observer : nullptr);
        // Nothing reads layer L's cache again: free it now.
        drop_cache(b, L);
        if (progress) progress->advance(b.rows());
      }
    }
    source.release(L);
  }
  return observer.stats();
}

}  // namespace whittle
