#include "model/weight_source.h"

#include "tensor/packed_int4.h"
#include "util/error.h"

namespace whittle {

WeightSource::WeightSource(const std::filesystem::path& dir, const ModelConfig& config)
    : store_(std::make_unique<TensorStore>(dir)), weights_(bind_weights(*store_, config)) {}

WeightSource::WeightSource(const std::filesystem::path& dir, const ModelConfig& config,
                           ThreadPool& pack_pool)
    : WeightSource(dir, config) {
  auto prepare = [&](Weight& w) {
    if (packable(w).empty()) w = w.with_packed(pack_int4(w, &pack_pool));
  };
  for (size_t L = 0; L < weights_.layers.size(); ++L) {
    LayerWeights& layer = weights_.layers[L];
    Weight& kv_b = layer.attn.kv_b_proj;
    if (kv_b.f32_rows() == nullptr)  // any stored format: converted once, not per token
      kv_b = Weight::owned_f32(kv_b.module(), kv_b.to_f32(), kv_b.rows(), kv_b.cols());
    layer.for_each_linear(prepare);
    release(static_cast<int64_t>(L));
  }
  prepare(weights_.lm_head);
}

WeightSource::WeightSource(ModelWeights weights) : weights_(std::move(weights)) {}

const LayerWeights& WeightSource::acquire(int64_t layer) const {
  advise(layer, MemoryAdvice::kWillNeed);
  return weights_.layers[static_cast<size_t>(layer)];
}

void WeightSource::prefetch(int64_t layer) const {
  if (layer < static_cast<int64_t>(weights_.layers.size())) advise(layer, MemoryAdvice::kWillNeed);
}

void WeightSource::release(int64_t layer) const {
  advise(layer, MemoryAdvice::kDontNeed);
}

size_t WeightSource::layer_bytes(int64_t layer) const {
  size_t n = 0;
  weights_.layers.at(static_cast<size_t>(layer)).for_each_linear([&](const Weight& w) {
    n += w.stored_bytes();
  });
  return n;
}

void WeightSource::advise(int64_t layer, MemoryAdvice advice) const {
  if (layer < 0 || layer >= static_cast<int64_t>(weights_.layers.size()))
    fail("internal: layer {} of a model with {} layers", layer, weights_.layers.size());
  if (!store_) return;
  weights_.layers[static_cast<size_t>(layer)].for_each_linear([&](const Weight& w) {
    w.for_each_range([&](std::span<const std::byte> range) { store_->advise(range, advice); });
  });
}

const TensorStore& WeightSource::store() const {
  if (!store_) fail("internal: these weights do not come from a checkpoint");
  return *store_;
}

}  // namespace whittle
