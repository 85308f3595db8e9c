#include "model/weight_source.h"

#include "tensor/packed_int4.h"
#include "util/error.h"

namespace whittle {

namespace {

// kv_b_proj packed for the absorbed form (AbsorbedKvB), or null when its layout does not allow:
// symmetric int4, each head's W_UK and W_UV whole tiles of 16 rows, kv_b's groups whole tiles of
// W_UKᵀ.
std::shared_ptr<const AbsorbedKvB> absorb_int4(const Weight& kv_b, const ModelConfig& c) {
  const PackedInt4* packed = kv_b.packed();
  const int64_t NH = c.num_attention_heads, Dn = c.qk_nope_head_dim, Dv = c.v_head_dim,
                Rkv = c.kv_lora_rank, W = Dn + Dv, TR = PackedInt4::kTileRows;
  if (packed == nullptr || packed->has_zeros || Dn % TR != 0 || Dv % TR != 0 || Rkv % TR != 0 ||
      packed->group_size % TR != 0 || packed->rows != NH * W || packed->cols != Rkv)
    return nullptr;
  auto a = std::make_shared<AbsorbedKvB>();
  a->group_size = packed->group_size;
  const int64_t G = packed->groups;
  a->uk_scales.resize(static_cast<size_t>(NH * G * Dn));
  std::vector<uint8_t> codes(static_cast<size_t>(Dn * Rkv)), zeros(static_cast<size_t>(G * Dn));
  std::vector<uint16_t> scales(static_cast<size_t>(G * Dn));
  for (int64_t h = 0; h < NH; ++h) {
    a->uv.push_back(tile_slice(*packed, (h * W + Dn) / TR, (h + 1) * W / TR));
    for (int64_t g = 0; g < G; ++g)
      for (int64_t o = 0; o < Dn; ++o)
        a->uk_scales[(h * G + g) * Dn + o] = packed_scale(*packed, h * W + o, g);
    kv_b.gptq_unpack(h * W, h * W + Dn, codes.data(), zeros.data(), scales.data());
    a->uk_t.push_back(
        *pack_int4(Rkv, Dn, Dn, DType::F16, /*has_zeros=*/false,
                   [&](int64_t r0, int64_t r1, uint8_t* t_codes, uint8_t*, uint16_t* t_scales) {
                     for (int64_t k = r0; k < r1; ++k) {
                       for (int64_t o = 0; o < Dn; ++o)
                         t_codes[(k - r0) * Dn + o] = codes[o * Rkv + k];
                       t_scales[k - r0] = 0x3c00;  // 1.0 in F16: the scales ride on the query
                     }
                   }));
  }
  return a;
}

}  // namespace

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
    layer.for_each_linear(prepare);
    // Absorbed attention reads kv_b per head on every decoded token: at 4 bits where its layout
    // allows, else converted to float32 once (any stored format), not per token.
    Weight& kv_b = layer.attn.kv_b_proj;
    layer.attn.absorbed_int4 = absorb_int4(kv_b, config);
    if (!layer.attn.absorbed_int4 && kv_b.f32_rows() == nullptr)
      kv_b = Weight::owned_f32(kv_b.module(), kv_b.to_f32(), kv_b.rows(), kv_b.cols());
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
