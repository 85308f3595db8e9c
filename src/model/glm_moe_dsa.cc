#include "model/glm_moe_dsa.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/router.h"
#include "ops/dense16_gemv.h"
#include "ops/elementwise.h"
#include "ops/int4_linear.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "tensor/packed_int4.h"
#include "util/error.h"

namespace whittle {

namespace {
using Vec = std::vector<float>;

void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// The temporaries of a forward pass live in thread_local buffers reused from call to call, so
// that a decode step allocates nothing once warm (a thread runs one forward at a time; the pool's
// workers run only pieces of one, with their own buffers). One grown past kKeepBytes by a long
// prompt is given back at a use of less than 1/kShrinkRatio of it (the next decode step), not at
// every smaller use: a buffer that one layer uses at several sizes would otherwise come back from
// the kernel as fresh zeroed pages at each of its layers (~6 % of a 512-token prefill's time). A
// function's buffers that a pool lambda uses are bound to references first: a thread_local named
// inside the lambda is the running thread's own.
constexpr size_t kKeepBytes = size_t{16} << 20;
constexpr size_t kShrinkRatio = 32;

template <class T>
T* reuse(std::vector<T>& v, size_t n) {
  if (v.capacity() * sizeof(T) > kKeepBytes && n * sizeof(T) <= kKeepBytes &&
      n * kShrinkRatio < v.capacity())
    std::vector<T>().swap(v);
  v.resize(n);
  return v.data();
}

// One float32 product per attention head over the pool: for head h, the `in_width` values of each
// of the T tokens' head rows (row t·heads + h of `in`, rows `in_stride` apart) are gathered,
// `product(h, x [T, in_width], y [T, out_width])` runs, and y goes back to the same rows of `out`.
// Each head works in its own slice of this thread's scratch, sized before the pool starts (a
// worker's own would be allocated the first time the pool hands it a head, mid-decode).
template <class Product>
void per_head(ThreadPool& pool, int64_t heads, int64_t T, const float* in, int64_t in_stride,
              int64_t in_width, float* out, int64_t out_stride, int64_t out_width,
              const Product& product) {
  thread_local Vec xs_buf, ys_buf;
  Vec &xs = xs_buf, &ys = ys_buf;
  reuse(xs, static_cast<size_t>(heads * T * in_width));
  reuse(ys, static_cast<size_t>(heads * T * out_width));
  pool.parallel_for(static_cast<size_t>(heads), [&](size_t h0, size_t h1) {
    for (int64_t h = static_cast<int64_t>(h0); h < static_cast<int64_t>(h1); ++h) {
      float* x = &xs[h * T * in_width];
      float* y = &ys[h * T * out_width];
      for (int64_t t = 0; t < T; ++t)
        std::copy_n(&in[(t * heads + h) * in_stride], in_width, &x[t * in_width]);
      product(h, x, y);
      for (int64_t t = 0; t < T; ++t)
        std::copy_n(&y[t * out_width], out_width, &out[(t * heads + h) * out_stride]);
    }
  });
}

}  // namespace

GlmMoeDsa::GlmMoeDsa(ModelConfig config, std::shared_ptr<const WeightSource> weights,
                     ThreadPool& pool, Kernels kernels)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      pool_(pool),
      kernels_(kernels),
      rope_(config_.rope, config_.qk_rope_head_dim) {
  // IndexShare: a "shared" layer attends to the keys chosen by the nearest full layer before it.
  int64_t source = -1;
  for (int64_t L = 0; L < config_.num_hidden_layers; ++L) {
    if (config_.indexer_full[L]) source = L;
    if (source < 0) fail("layer {} is an IndexShare \"shared\" layer with no indexer before it", L);
    selection_source_.push_back(source);
  }
  if (static_cast<int64_t>(weights_->weights().layers.size()) != config_.num_hidden_layers)
    fail("internal: {} layers of weights for a config of {}", weights_->weights().layers.size(),
         config_.num_hidden_layers);
}

GlmMoeDsa GlmMoeDsa::load(const std::filesystem::path& dir, ThreadPool& pool, Kernels kernels) {
  ModelConfig config = ModelConfig::load(dir);
  auto weights = kernels == Kernels::kFast ? std::make_shared<const WeightSource>(dir, config, pool)
                                           : std::make_shared<const WeightSource>(dir, config);
  return GlmMoeDsa(std::move(config), std::move(weights), pool, kernels);
}

Batch GlmMoeDsa::embed(std::vector<SequenceInput> sequences) const {
  Batch b;
  b.seqs_ = std::move(sequences);
  embed(b);
  return b;
}

void GlmMoeDsa::embed(Batch& b) const {
  const int64_t H = config_.hidden_size;
  const std::vector<SequenceInput>& sequences = b.seqs_;
  if (sequences.empty()) fail("no sequences to run");
  b.start_.clear();
  b.offset_.assign(1, 0);
  for (size_t i = 0; i < sequences.size(); ++i) {
    const SequenceInput& s = sequences[i];
    const int64_t T = static_cast<int64_t>(s.tokens.size());
    if (T == 0) fail("no tokens to run");
    bool shared = s.cache == nullptr;
    for (size_t j = 0; j < i; ++j) shared = shared || sequences[j].cache == s.cache;
    if (shared) fail("internal: each sequence of a batch needs its own cache");
    const KvCache& cache = *s.cache;
    if (static_cast<int64_t>(cache.layers.size()) != config_.num_hidden_layers)
      fail("internal: KV cache has {} layers, model has {}", cache.layers.size(),
           config_.num_hidden_layers);
    if (!cache.consistent())
      fail("the KV cache was left part-way through a forward pass (an earlier error?); clear it");
    // Positions past the trained context are refused, not extrapolated: RoPE (and YaRN's
    // correction range) is only defined up to max_position_embeddings, and the cache would grow
    // without bound.
    if (cache.length() + T > config_.max_position_embeddings)
      fail("{} token(s) after {} cached exceed the model's context of {} (max_position_embeddings)",
           T, cache.length(), config_.max_position_embeddings);
    for (size_t t = 0; t < s.tokens.size(); ++t)
      if (s.tokens[t] < 0 || s.tokens[t] >= config_.vocab_size)
        fail("token id {} at position {} is outside the vocabulary [0, {})", s.tokens[t], t,
             config_.vocab_size);
    b.start_.push_back(cache.length());
    b.offset_.push_back(b.offset_.back() + T);
  }
  b.selection_.resize(b.seqs_.size());
  b.selection_layer_ = -1;
  reuse(b.hidden, static_cast<size_t>(b.rows() * H));
  const Weight& table = weights_->weights().embed_tokens;
  int64_t row = 0;
  for (const SequenceInput& s : b.seqs_)
    for (int32_t id : s.tokens) table.rows_to_f32(id, id + 1, &b.hidden[(row++) * H]);
}

void GlmMoeDsa::linear(const Weight& w, const float* x, int64_t rows, float* y, bool accumulate,
                       ForwardObserver* observer) const {
  if (observer) observer->linear_input(w, x, rows);
  if (kernels_ == Kernels::kFast)
    linear_fast(w, x, rows, y, accumulate, &pool_);
  else
    whittle::linear(w, x, rows, y, accumulate, &pool_);
}

void GlmMoeDsa::forward_layer(int64_t layer, const LayerWeights& lw, Batch& b,
                              ForwardObserver* observer) const {
  if (layer < 0 || layer >= config_.num_hidden_layers)
    fail("internal: layer {} of a model with {} layers", layer, config_.num_hidden_layers);
  const int64_t R = b.rows(), H = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  if (observer) observer->layer_input(layer, b, b.hidden.data());
  thread_local Vec a, delta;
  reuse(a, b.hidden.size());
  reuse(delta, b.hidden.size());
  rms_norm_rows(b.hidden.data(), lw.input_layernorm.data(), a.data(), R, H, eps);
  attention(layer, lw.attn, b, a.data(), delta.data(), observer);
  axpy(1.0f, delta.data(), b.hidden.data(), R * H);
  rms_norm_rows(b.hidden.data(), lw.post_attention_layernorm.data(), a.data(), R, H, eps);
  if (lw.moe)
    moe(layer, *lw.moe, a.data(), R, delta.data(), observer);
  else
    mlp(*lw.dense, a.data(), R, delta.data(), /*accumulate=*/false, observer);
  axpy(1.0f, delta.data(), b.hidden.data(), R * H);
  if (observer) observer->layer_output(layer, b, b.hidden.data());
}

std::vector<float> GlmMoeDsa::head(const Batch& b, bool all_rows, ForwardObserver* observer) const {
  std::vector<float> logits;
  head(b, all_rows, logits, observer);
  return logits;
}

void GlmMoeDsa::head(const Batch& b, bool all_rows, std::vector<float>& logits,
                     ForwardObserver* observer) const {
  const int64_t H = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  thread_local std::vector<int64_t> rows;
  rows.clear();
  for (int64_t s = 0; s < b.sequences(); ++s)
    for (int64_t r = all_rows ? b.first_row(s) : b.first_row(s + 1) - 1; r < b.first_row(s + 1);
         ++r)
      rows.push_back(r);
  const int64_t n = static_cast<int64_t>(rows.size());
  thread_local Vec normed;
  reuse(normed, static_cast<size_t>(n * H));
  for (int64_t i = 0; i < n; ++i)
    rms_norm(&b.hidden[rows[i] * H], weights_->weights().norm.data(), &normed[i * H], H, eps);
  const Weight& lm_head = weights_->weights().lm_head;
  logits.resize(static_cast<size_t>(n * lm_head.rows()));
  linear(lm_head, normed.data(), n, logits.data(), false, observer);
}

std::vector<float> GlmMoeDsa::forward(Batch& b, bool all_rows, ForwardObserver* observer) const {
  for (int64_t L = 0; L < config_.num_hidden_layers; ++L) forward_layer(L, b, observer);
  return head(b, all_rows, observer);
}

std::vector<float> GlmMoeDsa::prefill(std::span<const int32_t> tokens, KvCache& cache,
                                      bool all_logits, ForwardObserver* observer) const {
  Batch b = embed({SequenceInput{tokens, &cache, /*absorbed=*/false}});
  return forward(b, all_logits, observer);
}

std::vector<float> GlmMoeDsa::decode(int32_t token, KvCache& cache,
                                     ForwardObserver* observer) const {
  std::vector<float> logits;
  decode(token, cache, logits, observer);
  return logits;
}

void GlmMoeDsa::decode(int32_t token, KvCache& cache, std::vector<float>& logits,
                       ForwardObserver* observer) const {
  thread_local Batch b;  // its vectors keep their memory from token to token
  b.seqs_.resize(1);
  b.seqs_[0] = SequenceInput{std::span<const int32_t>(&token, 1), &cache, /*absorbed=*/true};
  embed(b);
  for (int64_t L = 0; L < config_.num_hidden_layers; ++L) forward_layer(L, b, observer);
  head(b, /*all_rows=*/false, logits, observer);
}

bool absorbed_is_cheaper(const ModelConfig& c, int64_t cached, int64_t new_tokens,
                         int64_t attended) {
  if (cached == 0) return false;  // nothing cached: the expanded form expands only the new tokens
  const int64_t NH = c.num_attention_heads, Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim,
                Dv = c.v_head_dim, Rkv = c.kv_lora_rank;
  // Multiply-adds. Expanded: kv_b over every cached and new latent, then per-head attention.
  // Absorbed: W_UK and W_UV per new token, then attention over the latent (width Rkv + Dr).
  const double per_latent = static_cast<double>(NH) * (Dn + Dv) * Rkv;
  const double expanded = static_cast<double>(cached + new_tokens) * per_latent +
                          static_cast<double>(attended) * NH * (Dn + Dr + Dv);
  const double absorbed = static_cast<double>(new_tokens) * per_latent +
                          static_cast<double>(attended) * NH * (2 * Rkv + Dr);
  return absorbed < expanded;
}

void GlmMoeDsa::attention(int64_t layer, const AttentionWeights& w, Batch& b, const float* a,
                          float* out, ForwardObserver* observer) const {
  const ModelConfig& c = config_;
  const int64_t R = b.rows();
  const int64_t NH = c.num_attention_heads, Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim,
                Dv = c.v_head_dim, Dqk = c.qk_head_dim(), Rkv = c.kv_lora_rank;
  const float latent_eps = static_cast<float>(c.latent_norm_eps);

  // Queries: q_a -> RMSNorm -> q_b, per head [nope | rope]; rope rotated at the token's position.
  // This thread's buffers, bound to references: the lambdas below that the pool's workers run
  // must see these, not the workers' own thread_local instances.
  thread_local Vec q_lat_buf, q_buf, ckv_buf, latent_buf, kpe_buf, attn_buf;
  Vec &q_lat = q_lat_buf, &q = q_buf, &ckv = ckv_buf, &latent = latent_buf, &kpe = kpe_buf,
      &attn = attn_buf;
  reuse(q_lat, static_cast<size_t>(R * c.q_lora_rank));
  linear(w.q_a_proj, a, R, q_lat.data(), false, observer);
  rms_norm_rows(q_lat.data(), w.q_a_layernorm.data(), q_lat.data(), R, c.q_lora_rank, latent_eps);
  reuse(q, static_cast<size_t>(R * NH * Dqk));
  linear(w.q_b_proj, q_lat.data(), R, q.data(), false, observer);
  // The compressed kv path: [latent | k_pe]; only the latent is normalised; both are cached.
  reuse(ckv, static_cast<size_t>(R * (Rkv + Dr)));
  linear(w.kv_a_proj_with_mqa, a, R, ckv.data(), false, observer);
  reuse(latent, static_cast<size_t>(Rkv));
  reuse(kpe, static_cast<size_t>(Dr));
  for (int64_t s = 0; s < b.sequences(); ++s) {
    const int64_t P = b.start(s), T = b.length(s), r0 = b.first_row(s);
    LayerCache& lc = b.sequence(s).cache->layers[layer];
    if (lc.length != P && lc.length != P + T)
      fail("internal: layer {} of sequence {} holds {} tokens; the batch starts at {}", layer, s,
           lc.length, P);
    lc.reserve(P + T);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t hd = 0; hd < NH; ++hd)
        rope_.rotate(&q[((r0 + t) * NH + hd) * Dqk + Dn], P + t, c.rope_interleave);
      const float* row = &ckv[(r0 + t) * (Rkv + Dr)];
      rms_norm(row, w.kv_a_layernorm.data(), latent.data(), Rkv, latent_eps);
      lc.store(KvPart::kLatent, P + t, latent.data());
      std::copy_n(row + Rkv, Dr, kpe.data());
      rope_.rotate(kpe.data(), P + t, c.rope_interleave);
      lc.store(KvPart::kRope, P + t, kpe.data());
    }
  }
  if (observer) {
    // kv_b_proj's input is the new tokens' normalised latents, whichever form then uses them.
    Vec latents(static_cast<size_t>(R * Rkv));
    for (int64_t s = 0; s < b.sequences(); ++s)
      b.sequence(s).cache->layers[layer].gather(
          KvPart::kLatent, b.start(s), b.start(s) + b.length(s), &latents[b.first_row(s) * Rkv]);
    observer->linear_input(w.kv_b_proj, latents.data(), R);
  }

  // DSA: this layer's own selection, or the last full layer's on IndexShare "shared" layers.
  if (w.indexer) {
    index(layer, *w.indexer, b, a, q_lat.data(), observer);
    b.selection_layer_ = layer;
  } else if (b.selection_layer_ != selection_source_[layer]) {
    fail("internal: layer {} reuses the selection of layer {}, but the batch holds layer {}'s",
         layer, selection_source_[layer], b.selection_layer_);
  }
  if (observer)
    for (int64_t s = 0; s < b.sequences(); ++s) observer->dsa_selection(layer, s, b.selection_[s]);

  const float scale = static_cast<float>(c.softmax_scale());
  reuse(attn, static_cast<size_t>(R * NH * Dv));
  std::fill(attn.begin(), attn.end(), 0.0f);
  const int64_t kv_width = Dn + Dv;
  auto attended = [&](int64_t s, int64_t t) {
    const KeySelection& ks = b.selection_[s][static_cast<size_t>(t)];
    return ks.all_visible ? b.start(s) + t + 1 : static_cast<int64_t>(ks.keys.size());
  };
  // A sequence with a cached prefix runs absorbed when that is cheaper: its prefix's latents are
  // never expanded again chunk after chunk.
  thread_local std::vector<int64_t> absorbed;
  absorbed.clear();
  for (int64_t s = 0; s < b.sequences(); ++s) {
    int64_t keys = 0;
    for (int64_t t = 0; t < b.length(s); ++t) keys += attended(s, t);
    if (b.sequence(s).absorbed || absorbed_is_cheaper(c, b.start(s), b.length(s), keys)) {
      absorbed.push_back(s);
      continue;
    }
    // Expanded form: per-head keys [k_nope | k_pe] and values from kv_b_proj over every cached
    // latent.
    const LayerCache& lc = b.sequence(s).cache->layers[layer];
    const int64_t P = b.start(s), T = b.length(s), S = P + T, r0 = b.first_row(s);
    const std::vector<KeySelection>& sel = b.selection_[s];
    // Buffers kept from layer to layer (see reuse()): fresh ones of this size come from the kernel
    // as new zeroed pages, which cost ~8 % of a 512-token prefill.
    // References bound here: the pool's workers name them (a thread_local named inside the lambda
    // would be the worker's own).
    thread_local Vec latents_buf, k_pe_buf, kv_buf;
    Vec &latents = latents_buf, &k_pe = k_pe_buf, &kv = kv_buf;
    reuse(latents, static_cast<size_t>(S * Rkv));
    reuse(k_pe, static_cast<size_t>(S * Dr));
    lc.gather(KvPart::kLatent, 0, S, latents.data());
    lc.gather(KvPart::kRope, 0, S, k_pe.data());
    reuse(kv, static_cast<size_t>(S * NH * kv_width));
    // Float32 here on both paths: the int8 activations of the fast kernels on the latents doubled
    // the worst prefill logit error on the bundled model's int4 export (fast_path_test) to save
    // ~2 % of a prefill.
    whittle::linear(w.kv_b_proj, latents.data(), S, kv.data(), false, &pool_);
    // Per head, blocks of query rows as matrix products: scores = Q_h · K_hᵀ over every cached
    // key, the keys a row may not attend to (later ones; those the DSA did not select) masked to
    // -inf before the softmax, then P · V_h.
    constexpr int64_t kRowsPerBlock = 128;  // bounds the scores to 128 x S floats per thread
    const int64_t row_blocks = (T + kRowsPerBlock - 1) / kRowsPerBlock;
    pool_.parallel_for(static_cast<size_t>(NH * row_blocks), [&](size_t begin, size_t end) {
      thread_local Vec qh, kh, vh, scores, out_h;  // each worker's own, kept (see reuse())
      for (size_t i = begin; i < end; ++i) {
        const int64_t hd = static_cast<int64_t>(i) / row_blocks;
        const int64_t t0 = static_cast<int64_t>(i) % row_blocks * kRowsPerBlock;
        const int64_t t1 = std::min(T, t0 + kRowsPerBlock), rows = t1 - t0;
        const int64_t keys = P + t1;  // no row of the block sees past its last token
        reuse(qh, static_cast<size_t>(rows * Dqk));
        for (int64_t t = t0; t < t1; ++t)
          std::copy_n(&q[((r0 + t) * NH + hd) * Dqk], Dqk, &qh[(t - t0) * Dqk]);
        reuse(kh, static_cast<size_t>(keys * Dqk));
        reuse(vh, static_cast<size_t>(keys * Dv));
        for (int64_t k = 0; k < keys; ++k) {
          const float* src = &kv[(k * NH + hd) * kv_width];
          std::copy_n(src, Dn, &kh[k * Dqk]);
          std::copy_n(&k_pe[k * Dr], Dr, &kh[k * Dqk + Dn]);
          std::copy_n(src + Dn, Dv, &vh[k * Dv]);
        }
        reuse(scores, static_cast<size_t>(rows * keys));
        matmul_nt(qh.data(), kh.data(), scores.data(), rows, Dqk, keys);
        for (int64_t t = t0; t < t1; ++t) {
          float* row = &scores[(t - t0) * keys];
          const KeySelection& ks = sel[t];
          if (ks.all_visible) {
            for (int64_t k = 0; k < keys; ++k)
              row[k] = k <= P + t ? row[k] * scale : -std::numeric_limits<float>::infinity();
          } else {
            out_h.assign(static_cast<size_t>(keys), -std::numeric_limits<float>::infinity());
            for (int32_t k : ks.keys) out_h[k] = row[k] * scale;
            std::copy_n(out_h.data(), keys, row);
          }
          softmax(row, keys);
        }
        reuse(out_h, static_cast<size_t>(rows * Dv));
        matmul_nn(scores.data(), vh.data(), out_h.data(), rows, keys, Dv);
        for (int64_t t = t0; t < t1; ++t)
          std::copy_n(&out_h[(t - t0) * Dv], Dv, &attn[((r0 + t) * NH + hd) * Dv]);
      }
    });
  }
  if (!absorbed.empty()) {
    // Absorbed form: fold W_UK into the query and W_UV after the latent-weighted sum, so attention
    // runs as MQA over the cache (key = [latent | k_pe], value = latent). Same 1/sqrt(qk_head_dim).
    // q_abs[t, h] = q_nope[t, h] · W_UK[h] for all new tokens, one product per head; per token the
    // heads share their keys, so the scores of all heads over the selected keys (gathered from
    // the cache) are two matrix products, then a softmax per head and one more product for the
    // latent-weighted sums; o[t, h] = W_UV[h] · o_lat[t, h], one product per head.
    // int4 kv_b (fast path): q_abs and o as int4 x int8 products (AbsorbedKvB); else float32.
    const AbsorbedKvB* int4_kv_b = kernels_ == Kernels::kFast ? w.absorbed_int4.get() : nullptr;
    Vec converted;
    const float* kv_b = int4_kv_b ? nullptr : w.kv_b_proj.f32_rows();
    if (!int4_kv_b && kv_b == nullptr) {
      converted = w.kv_b_proj.to_f32();
      kv_b = converted.data();
    }
    for (int64_t s : absorbed) {
      const LayerCache& lc = b.sequence(s).cache->layers[layer];
      const std::vector<KeySelection>& sel = b.selection_[s];
      const int64_t T = b.length(s), r0 = b.first_row(s);
      thread_local Vec q_abs_buf, o_lat_buf, folded_buf;
      thread_local Int8Acts acts_buf;
      Vec &q_abs = q_abs_buf, &o_lat = o_lat_buf, &folded = folded_buf;
      Int8Acts& acts = acts_buf;
      reuse(q_abs, static_cast<size_t>(T * NH * Rkv));
      reuse(o_lat, q_abs.size());
      if (int4_kv_b) {
        // Activation row (t, h, g): q_nope[t, h] scaled by kv_b's scales of group g, for the
        // rows of W_UKᵀ in that group.
        const int64_t G = int4_kv_b->group_size, groups = (Rkv + G - 1) / G;
        reuse(folded, static_cast<size_t>(T * NH * groups * Dn));
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < NH; ++h)
            for (int64_t g = 0; g < groups; ++g) {
              const float* qn = &q[((r0 + t) * NH + h) * Dqk];
              const float* sc = &int4_kv_b->uk_scales[(h * groups + g) * Dn];
              float* dst = &folded[((t * NH + h) * groups + g) * Dn];
              for (int64_t o = 0; o < Dn; ++o) dst[o] = sc[o] * qn[o];
            }
        quantize_acts(folded.data(), T * NH * groups, Dn, int4_act_block(int4_kv_b->uk_t[0]), acts);
        constexpr int64_t TR = PackedInt4::kTileRows;
        pool_.parallel_for(static_cast<size_t>(NH), [&](size_t h0, size_t h1) {
          for (int64_t h = static_cast<int64_t>(h0); h < static_cast<int64_t>(h1); ++h)
            for (int64_t t = 0; t < T; ++t)
              for (int64_t g = 0; g < groups; ++g) {
                const int64_t m = (t * NH + h) * groups + g;
                int4_tiles(int4_kv_b->uk_t[static_cast<size_t>(h)], acts, m, m + 1, g * G / TR,
                           std::min(Rkv, (g + 1) * G) / TR, &q_abs[(t * NH + h) * Rkv],
                           /*ldy=*/0, false);
              }
        });
      } else {
        per_head(pool_, NH, T, &q[r0 * NH * Dqk], Dqk, Dn, q_abs.data(), Rkv, Rkv,
                 [&](int64_t h, const float* x, float* y) {
                   const float* w_uk = kv_b + h * kv_width * Rkv;  // rows [0, Dn) of the head
                   matmul_nn(x, w_uk, y, T, Dn, Rkv);
                 });
      }
      // One token's attention over its keys; `pool` splits its products (a single token), or
      // tokens run side by side on the pool's workers.
      auto attend = [&](int64_t t, ThreadPool* pool) {
        thread_local Vec keys, keys_pe, q_pe, scores;
        const KeySelection& ks = sel[static_cast<size_t>(t)];
        const int64_t n = attended(s, t);
        // Room for every key a token of the reserved context can attend to (the DSA caps it).
        const int64_t most =
            c.index_topk > 0 ? std::min(lc.capacity(), c.index_topk) : lc.capacity();
        keys.reserve(static_cast<size_t>(std::max(n, most) * Rkv));
        keys_pe.reserve(static_cast<size_t>(std::max(n, most) * Dr));
        scores.reserve(static_cast<size_t>(std::max(n, most) * NH));
        keys.resize(static_cast<size_t>(n * Rkv));
        keys_pe.resize(static_cast<size_t>(n * Dr));
        if (ks.all_visible) {
          lc.gather(KvPart::kLatent, 0, n, keys.data());
          lc.gather(KvPart::kRope, 0, n, keys_pe.data());
        } else {
          lc.gather(KvPart::kLatent, ks.keys, keys.data());
          lc.gather(KvPart::kRope, ks.keys, keys_pe.data());
        }
        q_pe.resize(static_cast<size_t>(NH * Dr));
        for (int64_t h = 0; h < NH; ++h)
          std::copy_n(&q[((r0 + t) * NH + h) * Dqk + Dn], Dr, &q_pe[h * Dr]);
        scores.resize(static_cast<size_t>(NH * n));
        matmul_nt(&q_abs[t * NH * Rkv], keys.data(), scores.data(), NH, Rkv, n, false, pool);
        matmul_nt(q_pe.data(), keys_pe.data(), scores.data(), NH, Dr, n, /*accumulate=*/true, pool);
        for (int64_t h = 0; h < NH; ++h) {
          float* p = &scores[h * n];
          for (int64_t i = 0; i < n; ++i) p[i] *= scale;
          softmax(p, n);
        }
        matmul_nn(scores.data(), keys.data(), &o_lat[t * NH * Rkv], NH, n, Rkv, false, pool);
      };
      if (T == 1) {
        attend(0, &pool_);
      } else {
        pool_.parallel_for(static_cast<size_t>(T), [&](size_t t0, size_t t1) {
          for (size_t t = t0; t < t1; ++t) attend(static_cast<int64_t>(t), nullptr);
        });
      }
      if (int4_kv_b) {
        quantize_acts(o_lat.data(), T * NH, Rkv, int4_act_block(int4_kv_b->uv[0]), acts);
        pool_.parallel_for(static_cast<size_t>(NH), [&](size_t h0, size_t h1) {
          for (int64_t h = static_cast<int64_t>(h0); h < static_cast<int64_t>(h1); ++h) {
            const PackedInt4& w_uv = int4_kv_b->uv[static_cast<size_t>(h)];
            for (int64_t t = 0; t < T; ++t)
              int4_tiles(w_uv, acts, t * NH + h, t * NH + h + 1, 0, w_uv.tiles,
                         &attn[((r0 + t) * NH + h) * Dv], /*ldy=*/0, false);
          }
        });
        continue;
      }
      per_head(pool_, NH, T, o_lat.data(), Rkv, Rkv, &attn[r0 * NH * Dv], Dv, Dv,
               [&](int64_t h, const float* x, float* y) {
                 matmul_nt(x, kv_b + (h * kv_width + Dn) * Rkv, y, T, Rkv, Dv);
               });
    }
  }
  for (int64_t s = 0; s < b.sequences(); ++s)
    b.sequence(s).cache->layers[layer].length = b.start(s) + b.length(s);
  linear(w.o_proj, attn.data(), R, out, false, observer);
}

void GlmMoeDsa::index(int64_t layer, const IndexerWeights& w, Batch& b, const float* a,
                      const float* q_lat, ForwardObserver* observer) const {
  const ModelConfig& c = config_;
  const int64_t R = b.rows(), IH = c.index_n_heads, ID = c.index_head_dim;
  // Rope occupies the FIRST qk_rope_head_dim dims of indexer vectors (the last ones in MLA heads).
  thread_local Vec q_buf, k_buf, head_w_buf, key_buf, scores_buf, chunk_buf_;  // see reuse()
  Vec &q = q_buf, &k = k_buf, &head_w = head_w_buf, &key = key_buf, &scores = scores_buf,
      &chunk_buf = chunk_buf_;
  reuse(q, static_cast<size_t>(R * IH * ID));
  reuse(k, static_cast<size_t>(R * ID));
  reuse(head_w, static_cast<size_t>(R * IH));
  linear(w.wq_b, q_lat, R, q.data(), false, observer);
  linear(w.wk, a, R, k.data(), false, observer);
  linear(w.weights_proj, a, R, head_w.data(), false, observer);
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(IH));
  const float qk_scale = 1.0f / std::sqrt(static_cast<float>(ID));
  for (float& x : head_w) x *= w_scale;

  // Into the batch's selections, whose memory is reused from layer to layer and token to token.
  std::vector<std::vector<KeySelection>>& selections = b.selection_;
  selections.resize(static_cast<size_t>(b.sequences()));
  reuse(key, static_cast<size_t>(ID));
  for (int64_t s = 0; s < b.sequences(); ++s) {
    const int64_t past = b.start(s), T = b.length(s), r0 = b.first_row(s);
    LayerCache& lc = b.sequence(s).cache->layers[layer];
    if (lc.width(KvPart::kIndex) != ID)
      fail("internal: layer {} has an indexer but its cache keeps no indexer keys", layer);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t hd = 0; hd < IH; ++hd)
        rope_.rotate(&q[((r0 + t) * IH + hd) * ID], past + t, c.indexer_rope_interleave);
      layer_norm(&k[(r0 + t) * ID], w.k_norm_weight.data(), w.k_norm_bias.data(), key.data(), ID,
                 static_cast<float>(c.index_k_norm_eps));
      rope_.rotate(key.data(), past + t, c.indexer_rope_interleave);
      lc.store(KvPart::kIndex, past + t, key.data());
    }
    std::vector<KeySelection>& sel = selections[s];
    sel.resize(static_cast<size_t>(T));
    for (KeySelection& ks : sel) {
      ks.all_visible = true;
      ks.keys.clear();
    }
    // Scores of a block of tokens against every key they can see, one chunk of cached keys at a
    // time as a matrix product [tokens * IH, ID] x [chunk, ID]^T (the chunks side by side on the
    // pool), then I[t,s] = sum_h w_h * ReLU(q_h . k_s / sqrt(ID)) and the top-k of each token
    // (tokens side by side). Blocks are sized to keep the scores near 4 MB however long the
    // context. Tokens that see at most index_topk keys keep them all (dense causal attention).
    const int64_t first = std::clamp<int64_t>(c.index_topk - past, 0, T);
    constexpr int64_t kKeyChunk = 256;
    const int64_t block =
        std::max<int64_t>(1, (int64_t{1} << 20) / std::max(past + T, IH * kKeyChunk));
    const bool keep_scores = observer && observer->wants_indexer_scores();
    for (int64_t t0 = first; t0 < T; t0 += block) {
      const int64_t t1 = std::min(T, t0 + block), rows = t1 - t0, keys = past + t1;
      if (rows == 1) {
        // Decode: room for the whole reserved context at once, not one more key per token.
        scores.reserve(static_cast<size_t>(lc.capacity()));
        top_k_reserve(lc.capacity());
      }
      reuse(scores, static_cast<size_t>(rows * keys));
      std::fill(scores.begin(), scores.end(), 0.0f);
      const int64_t chunks = (keys + kKeyChunk - 1) / kKeyChunk;
      // Per pool thread a slice of the caller's buffers: a chunk's keys and their dot products.
      const size_t kbuf_len = static_cast<size_t>(kKeyChunk * ID),
                   qk_len = static_cast<size_t>(rows * IH * kKeyChunk);
      reuse(chunk_buf, pool_.size() * (kbuf_len + qk_len));
      pool_.parallel_for(static_cast<size_t>(chunks), [&](size_t c0, size_t c1) {
        float* kbuf = &chunk_buf[ThreadPool::slot() * (kbuf_len + qk_len)];
        float* qk = kbuf + kbuf_len;
        for (size_t ci = c0; ci < c1; ++ci) {
          const int64_t k0 = static_cast<int64_t>(ci) * kKeyChunk,
                        k1 = std::min(keys, k0 + kKeyChunk), n = k1 - k0;
          lc.gather(KvPart::kIndex, k0, k1, kbuf);
          matmul_nt(&q[(r0 + t0) * IH * ID], kbuf, qk, rows * IH, ID, n);
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t visible = std::min(k1, past + t + 1), row = r0 + t;
            float* out = &scores[(t - t0) * keys];
            for (int64_t hd = 0; hd < IH; ++hd) {
              const float hw = head_w[row * IH + hd];
              const float* dots = &qk[((t - t0) * IH + hd) * n];
              for (int64_t kk = k0; kk < visible; ++kk)
                out[kk] += hw * std::max(0.0f, dots[kk - k0] * qk_scale);
            }
          }
        }
      });
      pool_.parallel_for(static_cast<size_t>(rows), [&](size_t i0, size_t i1) {
        for (size_t i = i0; i < i1; ++i) {
          const int64_t t = t0 + static_cast<int64_t>(i);
          sel[t].all_visible = false;
          top_k(&scores[static_cast<int64_t>(i) * keys], past + t + 1, c.index_topk, sel[t].keys);
        }
      });
      for (int64_t t = t0; keep_scores && t < t1; ++t)
        observer->indexer_scores(
            layer, s, t,
            std::span<const float>(&scores[(t - t0) * keys], static_cast<size_t>(past + t + 1)));
    }
  }
}

void GlmMoeDsa::mlp(const MlpWeights& w, const float* x, int64_t rows, float* out, bool accumulate,
                    ForwardObserver* observer) const {
  const int64_t I = w.gate_proj.rows();
  thread_local Vec gate, up;  // see reuse()
  reuse(gate, static_cast<size_t>(rows * I));
  reuse(up, gate.size());
  linear(w.gate_proj, x, rows, gate.data(), false, observer);
  linear(w.up_proj, x, rows, up.data(), false, observer);
  silu_mul(gate.data(), up.data(), static_cast<int64_t>(gate.size()));
  linear(w.down_proj, gate.data(), rows, out, accumulate, observer);
}

void GlmMoeDsa::moe(int64_t layer, const MoeWeights& w, const float* x, int64_t R, float* out,
                    ForwardObserver* observer) const {
  const int64_t E = static_cast<int64_t>(w.experts.size()), H = config_.hidden_size;
  // Router in fp32 (model/router.h). Buffers: see reuse().
  thread_local Routing routing;
  thread_local std::vector<std::vector<int64_t>> rows;
  thread_local std::vector<std::vector<float>> gate;
  reuse(routing.logits, static_cast<size_t>(R * E));
  linear(w.router, x, R, routing.logits.data(), false, observer);
  route(routing, R, w.correction_bias, config_);
  if (observer) observer->router(layer, routing);

  // Rows routed to each expert, ascending, with the weight applied to its output.
  if (rows.size() < static_cast<size_t>(E)) {
    rows.resize(static_cast<size_t>(E));
    gate.resize(static_cast<size_t>(E));
  }
  for (int64_t e = 0; e < E; ++e) {
    rows[e].clear();
    gate[e].clear();
  }
  for (int64_t t = 0; t < R; ++t)
    for (int64_t j = 0; j < routing.k; ++j) {
      const int32_t e = routing.chosen[t * routing.k + j];
      rows[e].push_back(t);
      gate[e].push_back(routing.weights[t * routing.k + j]);
    }
  std::fill_n(out, R * H, 0.0f);
  if (kernels_ == Kernels::kFast && moe_fast(layer, w, x, R, rows, gate, out, observer)) return;
  thread_local Vec xs, ys;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = static_cast<int64_t>(rows[e].size());
    if (n == 0) continue;  // only the routed experts run, on their rows
    xs.resize(static_cast<size_t>(n * H));
    ys.resize(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + rows[e][i] * H, H, &xs[i * H]);
    mlp(w.experts[e], xs.data(), n, ys.data(), /*accumulate=*/false, observer);
    if (observer) observer->expert(layer, e, rows[e], xs.data(), ys.data());
    for (int64_t i = 0; i < n; ++i) axpy(gate[e][i], &ys[i * H], out + rows[e][i] * H, H);
  }
  if (w.shared) mlp(*w.shared, x, R, out, /*accumulate=*/true, observer);
}

namespace {

// Copies rows `rows` of quantized activations `all` into `dst` (the rows an expert was routed).
void gather_acts(const Int8Acts& all, const std::vector<int64_t>& rows, Int8Acts& dst) {
  const int64_t n = static_cast<int64_t>(rows.size()), K = all.cols, G = all.groups;
  dst.rows = n;
  dst.cols = K;
  dst.group_size = all.group_size;
  dst.groups = G;
  reuse(dst.q, static_cast<size_t>(n * K));
  reuse(dst.scale, static_cast<size_t>(n * G));
  reuse(dst.sum, dst.scale.size());
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(&all.q[rows[i] * K], K, &dst.q[i * K]);
    std::copy_n(&all.scale[rows[i] * G], G, &dst.scale[i * G]);
    std::copy_n(&all.sum[rows[i] * G], G, &dst.sum[i * G]);
  }
}

}  // namespace

bool GlmMoeDsa::moe_fast(int64_t layer, const MoeWeights& w, const float* x, int64_t R,
                         const std::vector<std::vector<int64_t>>& rows,
                         const std::vector<std::vector<float>>& gate, float* out,
                         ForwardObserver* observer) const {
  // The routed experts that run, then the shared expert (every row, weight 1), as one list.
  struct Job {
    const MlpWeights* mlp;
    std::vector<int64_t> all_rows;  // the shared expert's rows
    const std::vector<int64_t>* rows;
    const std::vector<float>* weights;
    int64_t expert;              // -1: shared
    Int8Acts in, hidden;         // int4 experts
    Dense16Acts in16, hidden16;  // 16-bit experts
    Vec gate_out, up_out, down_out;
    Vec x_rows;  // the expert's input rows: gathered for 16-bit experts and for an observer
  };
  // Output rows [t0, t1) of one projection: tiles of a packed weight, or rows of a 16-bit one.
  struct Piece {
    const Weight* weight;
    float* y;
    const Int8Acts* acts;
    const Dense16Acts* acts16;
    int64_t t0, t1;
  };
  const int64_t E = static_cast<int64_t>(w.experts.size()), H = config_.hidden_size;
  // Job slots, their buffers and the piece list are reused from call to call (see reuse()).
  thread_local std::vector<Job> job_slots;
  thread_local std::vector<Piece> piece_buf;
  thread_local Int8Acts all_buf;
  if (job_slots.size() < static_cast<size_t>(E + 1)) job_slots.resize(static_cast<size_t>(E + 1));
  size_t n_jobs = 0;
  auto next_job = [&](const MlpWeights* mlp, const std::vector<int64_t>* r,
                      const std::vector<float>* weights, int64_t expert) -> Job& {
    Job& j = job_slots[n_jobs++];
    j.mlp = mlp;
    j.rows = r;
    j.weights = weights;
    j.expert = expert;
    return j;
  };
  for (int64_t e = 0; e < E; ++e)
    if (!rows[e].empty()) next_job(&w.experts[e], &rows[e], &gate[e], e);
  if (w.shared) {
    Job& s = next_job(&*w.shared, nullptr, nullptr, -1);
    s.all_rows.clear();
    for (int64_t r = 0; r < R; ++r) s.all_rows.push_back(r);
    s.rows = &s.all_rows;
  }
  const std::span<Job> jobs(job_slots.data(), n_jobs);
  if (jobs.empty()) return false;
  // Every weight packed, with one activation block size for the input and one for the hidden; or
  // every one dense 16-bit (gate and up of one dtype) in a decode batch (more rows run faster as
  // the converted-block matrix products of linear()).
  const PackedInt4* first = jobs[0].mlp->gate_proj.packed();
  const PackedInt4* first_down = jobs[0].mlp->down_proj.packed();
  const bool int4 = first != nullptr && first_down != nullptr;
  if (!int4 && R > kDense16BatchRows) return false;
  for (const Job& j : jobs) {
    const Weight& g = j.mlp->gate_proj;
    if (!int4 && j.mlp->up_proj.dtype() != g.dtype()) return false;
    for (const Weight* m : {&g, &j.mlp->up_proj, &j.mlp->down_proj}) {
      const bool down = m == &j.mlp->down_proj;
      if (int4 ? m->packed() == nullptr ||
                     int4_act_block(*m->packed()) != int4_act_block(down ? *first_down : *first) ||
                     m->packed()->cols != (down ? first_down->cols : H)
               : !dense16_supported(*m))
        return false;
    }
  }

  Int8Acts& all = all_buf;
  if (int4) quantize_acts(x, R, H, int4_act_block(*first), all);
  for (Job& j : jobs) {
    const int64_t n = static_cast<int64_t>(j.rows->size()), I = j.mlp->gate_proj.rows();
    reuse(j.gate_out, static_cast<size_t>(n * I));
    reuse(j.up_out, j.gate_out.size());
    reuse(j.down_out, static_cast<size_t>(n * H));
    if (int4) gather_acts(all, *j.rows, j.in);
    if (!int4 || observer) {
      reuse(j.x_rows, static_cast<size_t>(n * H));
      for (int64_t i = 0; i < n; ++i) std::copy_n(x + (*j.rows)[i] * H, H, &j.x_rows[i * H]);
    }
    if (!int4) dense16_prepare(j.mlp->gate_proj, j.x_rows.data(), n, j.in16);
    if (observer) {
      observer->linear_input(j.mlp->gate_proj, j.x_rows.data(), n);
      observer->linear_input(j.mlp->up_proj, j.x_rows.data(), n);
    }
  }
  // One parallel job over every (expert, projection, piece of output rows), then one over the
  // down projections: two hand-offs to the pool per MoE layer, none per expert.
  constexpr int64_t kTilesPerPiece = 8;    // int4: 128 rows of W
  constexpr int64_t kRowsPerPiece16 = 64;  // 16-bit: 768 KB of W at GLM-5's hidden size
  std::vector<Piece>& pieces = piece_buf;  // bound here: the pool's workers read it
  pieces.clear();
  auto run_pieces = [&] {
    pool_.parallel_for(pieces.size(), [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        const Piece& p = pieces[i];
        if (p.acts != nullptr)
          int4_tiles(*p.weight->packed(), *p.acts, 0, p.acts->rows, p.t0, p.t1, p.y,
                     p.weight->rows(), false);
        else
          dense16_rows(*p.weight, *p.acts16, p.t0, p.t1, p.y, false);
      }
    });
  };
  auto add = [&](const Weight& m, Vec& y, const Int8Acts& acts, const Dense16Acts& acts16) {
    const int64_t end = int4 ? m.packed()->tiles : m.rows();
    const int64_t step = int4 ? kTilesPerPiece : kRowsPerPiece16;
    for (int64_t t = 0; t < end; t += step)
      pieces.push_back({&m, y.data(), int4 ? &acts : nullptr, int4 ? nullptr : &acts16, t,
                        std::min(end, t + step)});
  };
  for (Job& j : jobs) {
    add(j.mlp->gate_proj, j.gate_out, j.in, j.in16);
    add(j.mlp->up_proj, j.up_out, j.in, j.in16);
  }
  run_pieces();
  pieces.clear();
  for (Job& j : jobs) {
    const int64_t n = static_cast<int64_t>(j.rows->size()), I = j.mlp->gate_proj.rows();
    silu_mul(j.gate_out.data(), j.up_out.data(), n * I);
    const Weight& down = j.mlp->down_proj;
    if (observer) observer->linear_input(down, j.gate_out.data(), n);
    if (int4)
      quantize_acts(j.gate_out.data(), n, I, int4_act_block(*down.packed()), j.hidden);
    else
      dense16_prepare(down, j.gate_out.data(), n, j.hidden16);
    add(down, j.down_out, j.hidden, j.hidden16);
  }
  run_pieces();
  for (Job& j : jobs) {
    const int64_t n = static_cast<int64_t>(j.rows->size());
    if (j.expert >= 0) {
      if (observer) observer->expert(layer, j.expert, *j.rows, j.x_rows.data(), j.down_out.data());
      for (int64_t i = 0; i < n; ++i)
        axpy((*j.weights)[i], &j.down_out[i * H], out + (*j.rows)[i] * H, H);
    } else {
      axpy(1.0f, j.down_out.data(), out, n * H);
    }
  }
  return true;
}

}  // namespace whittle
