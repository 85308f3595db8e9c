#include "model/glm_moe_dsa.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "io/safetensors.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace whittle {

namespace {
using Vec = std::vector<float>;

Vec linear(const Linear& l, const float* x, int64_t rows, ThreadPool& pool) {
  Vec y(static_cast<size_t>(rows * l.out));
  matmul_nt(x, l.w.data(), y.data(), rows, l.in, l.out, false, &pool);
  return y;
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Attention of one query head over the selected keys; `score(s)` gives the scaled logit of key s
// and `accumulate(p, s)` adds p times key s's value. Softmax is over the selected keys only.
template <typename Score, typename Accumulate>
void attend(const KeySelection& sel, int64_t pos, Score score, Accumulate accumulate) {
  const int64_t n = sel.all_visible ? pos + 1 : static_cast<int64_t>(sel.keys.size());
  auto key = [&](int64_t i) -> int64_t { return sel.all_visible ? i : sel.keys[i]; };
  Vec p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = score(key(i));
  softmax(p.data(), n);
  for (int64_t i = 0; i < n; ++i) accumulate(p[i], key(i));
}
}  // namespace

GlmMoeDsa::GlmMoeDsa(ModelConfig config, ModelWeights weights, ThreadPool& pool)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      pool_(pool),
      rope_(config_.rope, config_.qk_rope_head_dim) {}

GlmMoeDsa GlmMoeDsa::load(const std::filesystem::path& dir, ThreadPool& pool) {
  ModelConfig config = ModelConfig::load(dir);
  TensorStore store(dir);
  ModelWeights weights = load_weights(store, config);
  return GlmMoeDsa(std::move(config), std::move(weights), pool);
}

std::vector<float> GlmMoeDsa::prefill(std::span<const int32_t> tokens, KvCache& cache,
                                      bool all_logits) {
  return run(tokens, cache, all_logits, /*absorbed=*/false);
}

std::vector<float> GlmMoeDsa::decode(int32_t token, KvCache& cache) {
  return run(std::span<const int32_t>(&token, 1), cache, false, /*absorbed=*/true);
}

void GlmMoeDsa::embed(std::span<const int32_t> tokens, float* h) const {
  const int64_t H = config_.hidden_size;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= config_.vocab_size)
      fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[t], t,
           config_.vocab_size);
    std::copy_n(weights_.embed_tokens.data() + static_cast<size_t>(tokens[t]) * H, H, h + t * H);
  }
}

std::vector<float> GlmMoeDsa::run(std::span<const int32_t> tokens, KvCache& cache, bool all_logits,
                                  bool absorbed) {
  const int64_t T = static_cast<int64_t>(tokens.size()), H = config_.hidden_size;
  if (T == 0) fail("no tokens to run");
  // Positions past the trained context are refused, not extrapolated: RoPE (and YaRN's correction
  // range) is only defined up to max_position_embeddings, and the cache would grow without bound.
  if (cache.length() + T > config_.max_position_embeddings)
    fail("{} token(s) after {} cached exceed the model's context of {} (max_position_embeddings)",
         T, cache.length(), config_.max_position_embeddings);
  if (static_cast<int64_t>(cache.layers.size()) != config_.num_hidden_layers)
    fail("internal: KV cache has {} layers, model has {}", cache.layers.size(),
         config_.num_hidden_layers);
  const float eps = static_cast<float>(config_.rms_norm_eps);

  Vec h(static_cast<size_t>(T * H)), a(h.size()), delta(h.size());
  embed(tokens, h.data());
  selections_.assign(static_cast<size_t>(config_.num_hidden_layers), {});
  for (int64_t L = 0; L < config_.num_hidden_layers; ++L) {
    const LayerWeights& lw = weights_.layers[L];
    rms_norm_rows(h.data(), lw.input_layernorm.data(), a.data(), T, H, eps);
    attention(L, a.data(), T, cache, absorbed, delta.data());
    axpy(1.0f, delta.data(), h.data(), T * H);
    rms_norm_rows(h.data(), lw.post_attention_layernorm.data(), a.data(), T, H, eps);
    if (lw.moe)
      moe(*lw.moe, a.data(), T, delta.data());
    else
      mlp(*lw.dense, a.data(), T, delta.data(), /*accumulate=*/false);
    axpy(1.0f, delta.data(), h.data(), T * H);
  }
  cache.advance(T);

  const int64_t first = all_logits ? 0 : T - 1, rows = T - first;
  Vec normed(static_cast<size_t>(rows * H));
  rms_norm_rows(h.data() + first * H, weights_.norm.data(), normed.data(), rows, H, eps);
  return linear(weights_.lm_head, normed.data(), rows, pool_);
}

void GlmMoeDsa::attention(int64_t layer, const float* a, int64_t T, KvCache& cache, bool absorbed,
                          float* out) {
  const ModelConfig& c = config_;
  const AttentionWeights& w = weights_.layers[layer].attn;
  LayerCache& lc = cache.layers[layer];
  const int64_t P = cache.length(), S = P + T;
  const int64_t NH = c.num_attention_heads, Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim,
                Dv = c.v_head_dim, Dqk = c.qk_head_dim(), Rkv = c.kv_lora_rank;
  const float latent_eps = static_cast<float>(c.latent_norm_eps);

  // Queries: q_a -> RMSNorm -> q_b, per head [nope | rope]; rope rotated at the token's position.
  Vec q_lat = linear(w.q_a_proj, a, T, pool_);
  rms_norm_rows(q_lat.data(), w.q_a_layernorm.data(), q_lat.data(), T, c.q_lora_rank, latent_eps);
  Vec q = linear(w.q_b_proj, q_lat.data(), T, pool_);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t hd = 0; hd < NH; ++hd)
      rope_.rotate(&q[(t * NH + hd) * Dqk + Dn], P + t, c.rope_interleave);

  // The compressed kv path: [latent | k_pe]; only the latent is normalised; both are cached.
  Vec ckv = linear(w.kv_a_proj_with_mqa, a, T, pool_);
  lc.latent.resize(static_cast<size_t>(S * Rkv));
  lc.k_pe.resize(static_cast<size_t>(S * Dr));
  for (int64_t t = 0; t < T; ++t) {
    const float* row = &ckv[t * (Rkv + Dr)];
    rms_norm(row, w.kv_a_layernorm.data(), &lc.latent[(P + t) * Rkv], Rkv, latent_eps);
    float* kpe = &lc.k_pe[(P + t) * Dr];
    std::copy_n(row + Rkv, Dr, kpe);
    rope_.rotate(kpe, P + t, c.rope_interleave);
  }

  // DSA: this layer's own selection, or the previous layer's on IndexShare "shared" layers.
  selections_[layer] =
      w.indexer ? index(*w.indexer, a, q_lat.data(), T, P, lc) : selections_[layer - 1];
  const std::vector<KeySelection>& sel = selections_[layer];

  const float scale = static_cast<float>(c.softmax_scale());
  Vec attn(static_cast<size_t>(T * NH * Dv), 0.0f);
  const int64_t kv_width = Dn + Dv;
  if (!absorbed) {
    // Expanded form: per-head keys [k_nope | k_pe] and values from kv_b_proj over every cached
    // latent.
    Vec kv = linear(w.kv_b_proj, lc.latent.data(), S, pool_);  // [S, NH * (Dn + Dv)]
    pool_.parallel_for(static_cast<size_t>(T * NH), [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) {
        const int64_t t = static_cast<int64_t>(i) / NH, hd = static_cast<int64_t>(i) % NH;
        const float* qh = &q[(t * NH + hd) * Dqk];
        float* o = &attn[(t * NH + hd) * Dv];
        attend(
            sel[t], P + t,
            [&](int64_t s) {
              const float* kh = &kv[(s * NH + hd) * kv_width];
              return (dot(qh, kh, Dn) + dot(qh + Dn, &lc.k_pe[s * Dr], Dr)) * scale;
            },
            [&](float p, int64_t s) { axpy(p, &kv[(s * NH + hd) * kv_width + Dn], o, Dv); });
      }
    });
  } else {
    // Absorbed form: fold W_UK into the query and W_UV after the latent-weighted sum, so attention
    // runs as MQA over the cache (key = [latent | k_pe], value = latent). Same 1/sqrt(qk_head_dim).
    pool_.parallel_for(static_cast<size_t>(T * NH), [&](size_t begin, size_t end) {
      Vec q_abs(static_cast<size_t>(Rkv)), o_lat(static_cast<size_t>(Rkv));
      for (size_t i = begin; i < end; ++i) {
        const int64_t t = static_cast<int64_t>(i) / NH, hd = static_cast<int64_t>(i) % NH;
        const float* qh = &q[(t * NH + hd) * Dqk];
        const float* w_uk = &w.kv_b_proj.w[hd * kv_width * Rkv];  // rows [0, Dn) of this head
        const float* w_uv = w_uk + Dn * Rkv;                      // rows [Dn, Dn + Dv)
        std::fill(q_abs.begin(), q_abs.end(), 0.0f);
        for (int64_t d = 0; d < Dn; ++d) axpy(qh[d], w_uk + d * Rkv, q_abs.data(), Rkv);
        std::fill(o_lat.begin(), o_lat.end(), 0.0f);
        attend(
            sel[t], P + t,
            [&](int64_t s) {
              return (dot(q_abs.data(), &lc.latent[s * Rkv], Rkv) +
                      dot(qh + Dn, &lc.k_pe[s * Dr], Dr)) *
                     scale;
            },
            [&](float p, int64_t s) { axpy(p, &lc.latent[s * Rkv], o_lat.data(), Rkv); });
        float* o = &attn[(t * NH + hd) * Dv];
        for (int64_t j = 0; j < Dv; ++j) o[j] = dot(w_uv + j * Rkv, o_lat.data(), Rkv);
      }
    });
  }
  matmul_nt(attn.data(), w.o_proj.w.data(), out, T, NH * Dv, c.hidden_size, false, &pool_);
}

std::vector<KeySelection> GlmMoeDsa::index(const IndexerWeights& w, const float* a,
                                           const float* q_lat, int64_t T, int64_t past,
                                           LayerCache& lc) {
  const ModelConfig& c = config_;
  const int64_t IH = c.index_n_heads, ID = c.index_head_dim, S = past + T;
  // Rope occupies the FIRST qk_rope_head_dim dims of indexer vectors (the last ones in MLA heads).
  Vec q = linear(w.wq_b, q_lat, T, pool_);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t hd = 0; hd < IH; ++hd)
      rope_.rotate(&q[(t * IH + hd) * ID], past + t, c.indexer_rope_interleave);
  Vec k = linear(w.wk, a, T, pool_);
  lc.index_keys.resize(static_cast<size_t>(S * ID));
  for (int64_t t = 0; t < T; ++t) {
    float* key = &lc.index_keys[(past + t) * ID];
    layer_norm(&k[t * ID], w.k_norm_weight.data(), w.k_norm_bias.data(), key, ID,
               static_cast<float>(c.index_k_norm_eps));
    rope_.rotate(key, past + t, c.indexer_rope_interleave);
  }
  Vec head_w = linear(w.weights_proj, a, T, pool_);
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(IH));
  const float qk_scale = 1.0f / std::sqrt(static_cast<float>(ID));
  for (float& x : head_w) x *= w_scale;

  std::vector<KeySelection> sel(static_cast<size_t>(T));
  pool_.parallel_for(static_cast<size_t>(T), [&](size_t begin, size_t end) {
    Vec scores;
    for (size_t t = begin; t < end; ++t) {
      const int64_t visible = past + static_cast<int64_t>(t) + 1;
      if (visible <= c.index_topk) continue;  // every visible key is kept: dense causal attention
      // I[t,s] = sum_h w_h * ReLU(q_h . k_s / sqrt(index_head_dim))
      scores.assign(static_cast<size_t>(visible), 0.0f);
      for (int64_t s = 0; s < visible; ++s) {
        const float* ks = &lc.index_keys[s * ID];
        float acc = 0.0f;
        for (int64_t hd = 0; hd < IH; ++hd)
          acc +=
              head_w[t * IH + hd] * std::max(0.0f, dot(&q[(t * IH + hd) * ID], ks, ID) * qk_scale);
        scores[s] = acc;
      }
      sel[t].all_visible = false;
      sel[t].keys = top_k(scores.data(), visible, c.index_topk);
    }
  });
  return sel;
}

void GlmMoeDsa::mlp(const MlpWeights& w, const float* x, int64_t T, float* out, bool accumulate) {
  Vec gate = linear(w.gate_proj, x, T, pool_);
  Vec up = linear(w.up_proj, x, T, pool_);
  silu_mul(gate.data(), up.data(), static_cast<int64_t>(gate.size()));
  matmul_nt(gate.data(), w.down_proj.w.data(), out, T, w.down_proj.in, w.down_proj.out, accumulate,
            &pool_);
}

void GlmMoeDsa::moe(const MoeWeights& w, const float* x, int64_t T, float* out) {
  const ModelConfig& c = config_;
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok, H = c.hidden_size;
  const int64_t per_group = E / c.n_group;

  // Router in fp32: sigmoid scores; the correction bias only decides which experts are chosen.
  Vec logits = linear(w.router, x, T, pool_);
  std::vector<std::vector<std::pair<int64_t, float>>> routed(
      static_cast<size_t>(E));  // (token, weight)
  Vec choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(c.n_group));
  for (int64_t t = 0; t < T; ++t) {
    const float* lg = &logits[t * E];
    Vec score(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      score[e] = 1.0f / (1.0f + std::exp(-lg[e]));
      choice[e] = score[e] + w.correction_bias[e];
    }
    if (c.n_group > 1) {
      // DeepSeek group limit: a group's score is the sum of its two best biased scores; experts
      // outside the topk_group best groups cannot be chosen.
      for (int64_t g = 0; g < c.n_group; ++g) {
        std::vector<int32_t> best = top_k(&choice[g * per_group], per_group, 2);
        group_score[g] = choice[g * per_group + best[0]] + choice[g * per_group + best[1]];
      }
      std::vector<int32_t> keep = top_k(group_score.data(), c.n_group, c.topk_group);
      std::vector<bool> kept(static_cast<size_t>(c.n_group), false);
      for (int32_t g : keep) kept[g] = true;
      for (int64_t e = 0; e < E; ++e)
        if (!kept[e / per_group]) choice[e] = -std::numeric_limits<float>::infinity();
    }
    std::vector<int32_t> chosen = top_k(choice.data(), E, K);
    double sum = 0.0;
    for (int32_t e : chosen) sum += score[e];
    for (int32_t e : chosen) {
      float weight = score[e];
      if (c.norm_topk_prob) weight = static_cast<float>(weight / (sum + 1e-20));
      routed[e].emplace_back(t, weight * static_cast<float>(c.routed_scaling_factor));
    }
  }

  std::fill_n(out, T * H, 0.0f);
  Vec xs, ys;
  for (int64_t e = 0; e < E; ++e) {
    const auto& tokens = routed[e];
    if (tokens.empty()) continue;
    const int64_t n = static_cast<int64_t>(tokens.size());
    xs.resize(static_cast<size_t>(n * H));
    ys.resize(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + tokens[i].first * H, H, &xs[i * H]);
    mlp(w.experts[e], xs.data(), n, ys.data(), /*accumulate=*/false);
    for (int64_t i = 0; i < n; ++i)
      axpy(tokens[i].second, &ys[i * H], out + tokens[i].first * H, H);
  }
  if (w.shared) mlp(*w.shared, x, T, out, /*accumulate=*/true);
}

}  // namespace whittle
