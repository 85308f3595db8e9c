// BlockGrad: forward of one decoder layer with its activations kept, and the backward written out
// op by op (the llm.c way). Every product is a BLAS call (ops/matmul.h): projections split over the
// pool by output column, attention heads and routed experts spread over the pool with
// single-threaded products inside. Checked against torch autograd on transformers' own decoder
// layer (tests/golden/block_grad, tools/oracle/make_block_grad_golden.py).
//
// Conventions: a Linear is y = x · Wᵀ with W [out, in]; its backward is dW += dyᵀ · x (matmul_tn)
// and dx = dy · W (matmul_nn).
#include "quant/block_grad.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "model/router.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/rope.h"
#include "util/error.h"

namespace whittle {

namespace {
using Vec = std::vector<float>;

// Resizes without giving memory back: once the sizes of a calibration run are reached, later calls
// allocate nothing.
void fit(Vec& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
}

// The weight as float32 rows: in place when stored so, else converted into `buffer`.
const float* f32_rows(const Weight& w, Vec& buffer) {
  if (const float* p = w.f32_rows()) return p;
  fit(buffer, w.rows() * w.cols());
  w.rows_to_f32(0, w.rows(), buffer.data());
  return buffer.data();
}

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

// The transpose of RopeTable::rotate (same angles, same attention scaling): the rotation by -angle
// times the scaling, which is what the gradient of a rotated vector goes back through.
void rotate_back(const RopeTable& rope, float* x, int64_t pos, bool interleaved) {
  const int64_t half = rope.dim() / 2;
  const float scaling = rope.attention_scaling();
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * rope.inv_freq()[i];
    const float c = std::cos(angle) * scaling, s = std::sin(angle) * scaling;
    float& a = interleaved ? x[2 * i] : x[i];
    float& b = interleaved ? x[2 * i + 1] : x[i + half];
    const float da = a, db = b;
    a = da * c + db * s;
    b = db * c - da * s;
  }
}

// RMSNorm y = x · r · g with r = 1/sqrt(mean(x²) + eps) (r as rms_norm computes it): with u = g ⊙
// dy, dx = r·u − x · r³ · (u · x) / n. Adds into dx.
void rms_norm_backward(const float* x, const float* g, const float* dy, float* dx, int64_t n,
                       float eps) {
  double ss = 0.0, ux = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    ss += static_cast<double>(x[i]) * x[i];
    ux += static_cast<double>(g[i]) * dy[i] * x[i];
  }
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  const float c = static_cast<float>(ux / n) * r * r * r;
  for (int64_t i = 0; i < n; ++i) dx[i] += r * g[i] * dy[i] - c * x[i];
}

// Runs fn(slot, item) for every item in [0, n): one slot per pool thread, each taking the next item
// when it finishes one, so that per-slot scratch needs no lock and uneven items (experts with
// different row counts) balance. fn must not use the pool.
template <typename Fn>
void for_each_item(ThreadPool& pool, int64_t n, Fn&& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const size_t slots = std::min(pool.size(), static_cast<size_t>(n));
  pool.parallel_for(slots, [&](size_t begin, size_t end) {
    for (size_t slot = begin; slot < end; ++slot)
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(slot, i);
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LinearGrads
// ---------------------------------------------------------------------------------------------
void LinearGrads::track(const Weight& w) {
  std::vector<float>& g = grads_[w.module()];
  g.assign(static_cast<size_t>(w.rows() * w.cols()), 0.0f);
}

std::vector<float>* LinearGrads::find(const std::string& module) {
  auto it = grads_.find(module);
  return it == grads_.end() ? nullptr : &it->second;
}

const std::vector<float>* LinearGrads::find(const std::string& module) const {
  auto it = grads_.find(module);
  return it == grads_.end() ? nullptr : &it->second;
}

void LinearGrads::zero() {
  for (auto& [name, g] : grads_) std::fill(g.begin(), g.end(), 0.0f);
}

void LinearGrads::add(const LinearGrads& other) {
  for (auto& [name, g] : grads_) {
    const std::vector<float>* o = other.find(name);
    if (!o) continue;
    if (o->size() != g.size())
      fail("internal: gradient of {} has {} values here, {} there", name, g.size(), o->size());
    for (size_t i = 0; i < g.size(); ++i) g[i] += (*o)[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Tape: what the forward keeps for the backward, and the backward's scratch. Buffers only grow.
// ---------------------------------------------------------------------------------------------
namespace {

// A SwiGLU MLP over n rows: gate and up before the activation, act = silu(gate) · up.
struct MlpTape {
  Vec x;  // [n, H] the rows it ran on (routed experts only: the others read a2)
  Vec gate, up, act;
  Vec y;                      // [n, H] the output before the routing weight (routed experts only)
  std::vector<int64_t> rows;  // routed experts: token of each row, ascending
  std::vector<int64_t> slot;  // and its position among that token's chosen experts
  Vec dx;                     // [n, H] backward: the input gradient of these rows
};

// The DSA indexer's products (forward only) and its selection.
struct IndexerTape {
  Vec idx_q, idx_k, idx_w, idx_keys;
  std::vector<KeySelection> selection;
};

// One pool thread's scratch.
struct Scratch {
  Vec w_gate, w_up, w_down;  // converted weights
  Vec a, b, c, d;            // products
};

}  // namespace

struct BlockGrad::Tape {
  explicit Tape(const ModelConfig& c) : rope(c.rope, c.qk_rope_head_dim) {}
  RopeTable rope;
  int64_t T = 0;  // tokens per sequence
  int64_t S = 1;  // sequences in the last forward: rows are [S·T, ...]
  const LayerWeights* w = nullptr;

  Vec x, a1, h, a2;  // [T, H]: input, input_layernorm(x), x + attention, post_attention_layernorm
  Vec qa, qn;        // [T, q_lora_rank]: q_a_proj out, after q_a_layernorm
  Vec q;             // [T, heads * qk_head_dim] after RoPE
  Vec ckv;           // [T, kv_lora_rank + rope]: kv_a_proj_with_mqa out (before norm and RoPE)
  Vec lat;           // [T, kv_lora_rank] normalised latent
  Vec kpe;           // [T, rope] rotated shared rope key
  Vec kv;            // [T, heads * (nope + v)] kv_b_proj out
  Vec qh, kh, vh;    // head-major [heads, T, qk_head_dim | v_head_dim]
  // [heads, T, T] softmax over the selected keys, 0 elsewhere. Kept rather than recomputed: the
  // backward needs it twice (dV = Pᵀ dO and dS); heads · T² floats (1 GiB for GLM-5's 64 heads at
  // T = 2048).
  Vec probs;
  std::vector<uint8_t> mask;  // [T, T] 1 where query t attends to key s
  Vec attn;                   // [T, heads * v_head_dim] o_proj input
  Vec delta;                  // [T, H] scratch for a sub-layer's output

  IndexerTape indexer;

  // Feed-forward.
  MlpTape dense, shared;
  std::vector<MlpTape> experts;
  Routing routing;

  // Backward.
  Vec dh, da1, da2, dattn, dq, dkv, dckv, dlat, dqn, dqa, dcombine, dlogits;
  Vec dq_heads, dk_heads, dv_heads;  // [heads, T, ...]
  Vec wbuf;                          // a converted weight (products on the pool)
  std::vector<Scratch> scratch;      // per pool thread
};

BlockGrad::BlockGrad(const ModelConfig& config, ThreadPool& pool)
    : config_(config), pool_(pool), tape_(std::make_unique<Tape>(config)) {
  tape_->scratch.resize(pool_.size());
}

BlockGrad::~BlockGrad() = default;

const std::vector<KeySelection>& BlockGrad::selection() const {
  return tape_->indexer.selection;
}

namespace {

// The forward of a SwiGLU MLP over n rows of x into out (added when accumulate), keeping gate, up
// and act in `m`. Same calls as GlmMoeDsa::mlp, so the same float results.
void mlp_forward(const MlpWeights& w, const float* x, int64_t n, float* out, bool accumulate,
                 MlpTape& m, ThreadPool* pool) {
  const int64_t I = w.gate_proj.rows();
  fit(m.gate, n * I);
  fit(m.up, n * I);
  fit(m.act, n * I);
  linear(w.gate_proj, x, n, m.gate.data(), false, pool);
  linear(w.up_proj, x, n, m.up.data(), false, pool);
  std::copy_n(m.gate.data(), n * I, m.act.data());
  silu_mul(m.act.data(), m.up.data(), n * I);
  linear(w.down_proj, m.act.data(), n, out, accumulate, pool);
}

// The backward of mlp_forward for dL/dout `dy` [n, H]: dW of the tracked projections, and dL/dx
// added into dx [n, H]. With a pool the products are split over it; without, they run here.
void mlp_backward(const MlpWeights& w, const MlpTape& m, const float* x, const float* dy, int64_t n,
                  float* dx, LinearGrads& grads, ThreadPool* pool, Scratch& s) {
  const int64_t I = w.gate_proj.rows(), H = w.gate_proj.cols();
  if (n == 0) return;
  if (auto* g = grads.find(w.down_proj.module()))
    matmul_tn(dy, m.act.data(), g->data(), H, n, I, true, pool);
  fit(s.a, n * I);  // d act
  matmul_nn(dy, f32_rows(w.down_proj, s.w_down), s.a.data(), n, H, I, false, pool);
  fit(s.b, n * I);  // d gate
  fit(s.c, n * I);  // d up
  for (int64_t i = 0; i < n * I; ++i) {
    const float g = m.gate[i], sg = sigmoid(g);
    s.c[i] = s.a[i] * g * sg;                                   // silu(g)
    s.b[i] = s.a[i] * m.up[i] * sg * (1.0f + g * (1.0f - sg));  // silu'(g)
  }
  if (auto* g = grads.find(w.gate_proj.module()))
    matmul_tn(s.b.data(), x, g->data(), I, n, H, true, pool);
  if (auto* g = grads.find(w.up_proj.module()))
    matmul_tn(s.c.data(), x, g->data(), I, n, H, true, pool);
  if (dx) {
    matmul_nn(s.b.data(), f32_rows(w.gate_proj, s.w_gate), dx, n, I, H, true, pool);
    matmul_nn(s.c.data(), f32_rows(w.up_proj, s.w_up), dx, n, I, H, true, pool);
  }
}

// The DSA indexer's selection for positions 0..T-1, computed as GlmMoeDsa::index computes it
// (same products on the same blocks of tokens), so that the same keys win, ties to the lower index.
void select_keys(const ModelConfig& c, const IndexerWeights& w, const RopeTable& rope,
                 const float* a1, const float* qn, int64_t T, IndexerTape& tp, ThreadPool& pool,
                 std::vector<Scratch>& scratch, KeySelection* out) {
  const int64_t IH = c.index_n_heads, ID = c.index_head_dim;
  std::fill_n(out, T, KeySelection{});
  // No token sees more than index_topk keys (GLM-5: 2048, a whole calibration sequence): every
  // row attends to all it sees, and the indexer's products would choose nothing.
  if (T <= c.index_topk) return;
  fit(tp.idx_q, T * IH * ID);
  fit(tp.idx_k, T * ID);
  fit(tp.idx_w, T * IH);
  fit(tp.idx_keys, T * ID);
  linear(w.wq_b, qn, T, tp.idx_q.data(), false, &pool);
  linear(w.wk, a1, T, tp.idx_k.data(), false, &pool);
  linear(w.weights_proj, a1, T, tp.idx_w.data(), false, &pool);
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(IH));
  const float qk_scale = 1.0f / std::sqrt(static_cast<float>(ID));
  for (float& v : tp.idx_w) v *= w_scale;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t hd = 0; hd < IH; ++hd)
      rope.rotate(&tp.idx_q[(t * IH + hd) * ID], t, c.indexer_rope_interleave);
    float* key = &tp.idx_keys[t * ID];
    layer_norm(&tp.idx_k[t * ID], w.k_norm_weight.data(), w.k_norm_bias.data(), key, ID,
               static_cast<float>(c.index_k_norm_eps));
    rope.rotate(key, t, c.indexer_rope_interleave);
  }
  const int64_t first = std::clamp<int64_t>(c.index_topk, 0, T);
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 20) / (IH * T));
  const int64_t blocks = (T - first + block - 1) / block;
  for_each_item(pool, blocks, [&](size_t slot, int64_t bi) {
    Vec& qk = scratch[slot].a;
    Vec& scores = scratch[slot].b;
    const int64_t t0 = first + bi * block;
    const int64_t t1 = std::min(T, t0 + block), keys = t1;
    fit(qk, (t1 - t0) * IH * keys);
    matmul_nt(&tp.idx_q[t0 * IH * ID], tp.idx_keys.data(), qk.data(), (t1 - t0) * IH, ID, keys);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t visible = t + 1;
      scores.assign(static_cast<size_t>(visible), 0.0f);
      for (int64_t hd = 0; hd < IH; ++hd) {
        const float hw = tp.idx_w[t * IH + hd];
        const float* dots = &qk[((t - t0) * IH + hd) * keys];
        for (int64_t key = 0; key < visible; ++key)
          scores[key] += hw * std::max(0.0f, dots[key] * qk_scale);
      }
      out[t].all_visible = false;
      out[t].keys = top_k(scores.data(), visible, c.index_topk);
    }
  });
}

void check_grad_size(const std::vector<float>* g, const Weight& w) {
  if (g && static_cast<int64_t>(g->size()) != w.rows() * w.cols())
    fail("internal: gradient of {} holds {} values for a [{}, {}] weight", w.module(), g->size(),
         w.rows(), w.cols());
}

}  // namespace

void BlockGrad::forward(int64_t layer, const LayerWeights& w, const float* x, int64_t T, float* y,
                        const std::vector<KeySelection>* selection, int64_t sequences) {
  const ModelConfig& c = config_;
  if (layer < 0 || layer >= c.num_hidden_layers)
    fail("internal: layer {} of a model with {} layers", layer, c.num_hidden_layers);
  if (T <= 0) fail("no tokens to run");
  if (sequences <= 0) fail("internal: {} sequences", sequences);
  if (T > c.max_position_embeddings)
    fail("{} tokens exceed the model's context of {} (max_position_embeddings)", T,
         c.max_position_embeddings);
  Tape& tp = *tape_;
  tp.w = &w;
  tp.T = T;
  tp.S = sequences;
  // Row-wise steps (norms, projections, router, experts) run on all N rows at once; attention and
  // the indexer per sequence, position t of row s·T + t being t.
  const int64_t S = sequences, N = S * T;
  const int64_t H = c.hidden_size, NH = c.num_attention_heads, Dn = c.qk_nope_head_dim,
                Dr = c.qk_rope_head_dim, Dv = c.v_head_dim, Dqk = c.qk_head_dim(),
                Rkv = c.kv_lora_rank, Qr = c.q_lora_rank, KV = Dn + Dv;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float latent_eps = static_cast<float>(c.latent_norm_eps);
  const RopeTable& rope = tp.rope;
  const AttentionWeights& aw = w.attn;

  fit(tp.x, N * H);
  std::copy_n(x, N * H, tp.x.data());
  fit(tp.a1, N * H);
  rms_norm_rows(x, w.input_layernorm.data(), tp.a1.data(), N, H, eps);

  // MLA projections, as GlmMoeDsa::attention computes them.
  fit(tp.qa, N * Qr);
  fit(tp.qn, N * Qr);
  linear(aw.q_a_proj, tp.a1.data(), N, tp.qa.data(), false, &pool_);
  rms_norm_rows(tp.qa.data(), aw.q_a_layernorm.data(), tp.qn.data(), N, Qr, latent_eps);
  fit(tp.q, N * NH * Dqk);
  linear(aw.q_b_proj, tp.qn.data(), N, tp.q.data(), false, &pool_);
  fit(tp.ckv, N * (Rkv + Dr));
  linear(aw.kv_a_proj_with_mqa, tp.a1.data(), N, tp.ckv.data(), false, &pool_);
  fit(tp.lat, N * Rkv);
  fit(tp.kpe, N * Dr);
  for (int64_t row = 0; row < N; ++row) {
    const int64_t t = row % T;
    for (int64_t hd = 0; hd < NH; ++hd)
      rope.rotate(&tp.q[(row * NH + hd) * Dqk + Dn], t, c.rope_interleave);
    const float* ckv = &tp.ckv[row * (Rkv + Dr)];
    rms_norm(ckv, aw.kv_a_layernorm.data(), &tp.lat[row * Rkv], Rkv, latent_eps);
    std::copy_n(ckv + Rkv, Dr, &tp.kpe[row * Dr]);
    rope.rotate(&tp.kpe[row * Dr], t, c.rope_interleave);
  }

  // DSA key selection: a fixed mask for the backward.
  std::vector<KeySelection>& sel = tp.indexer.selection;
  if (aw.indexer) {
    sel.resize(static_cast<size_t>(N));
    for (int64_t q = 0; q < S; ++q)
      select_keys(c, *aw.indexer, rope, &tp.a1[q * T * H], &tp.qn[q * T * Qr], T, tp.indexer, pool_,
                  tp.scratch, &sel[static_cast<size_t>(q * T)]);
  } else {
    if (selection == nullptr || static_cast<int64_t>(selection->size()) != N)
      fail(
          "internal: layer {} has no indexer (IndexShare \"shared\") and needs the selection of {} "
          "tokens, got {}",
          layer, N, selection ? selection->size() : 0);
    sel = *selection;
  }
  tp.mask.assign(static_cast<size_t>(N * T), 0);  // [S, T, T]
  for (int64_t row = 0; row < N; ++row) {
    const int64_t t = row % T;
    uint8_t* m = &tp.mask[row * T];
    if (sel[row].all_visible) {
      std::fill_n(m, t + 1, uint8_t{1});
      continue;
    }
    for (int32_t k : sel[row].keys) {
      if (k < 0 || k > t) fail("internal: token {} selects key {}, outside [0, {}]", t, k, t);
      m[k] = 1;
    }
  }

  // Expanded form: per-head keys [k_nope | k_pe] and values from kv_b_proj over the sequence.
  fit(tp.kv, N * NH * KV);
  linear(aw.kv_b_proj, tp.lat.data(), N, tp.kv.data(), false, &pool_);
  fit(tp.qh, N * NH * Dqk);
  fit(tp.kh, N * NH * Dqk);
  fit(tp.vh, N * NH * Dv);
  fit(tp.probs, N * NH * T);
  fit(tp.attn, N * NH * Dv);
  const float scale = static_cast<float>(c.softmax_scale());
  // One item per (sequence, head); head-major blocks [S, heads, T, ...].
  for_each_item(pool_, S * NH, [&](size_t slot, int64_t item) {
    const int64_t hd = item % NH, r0 = (item / NH) * T;  // r0: the sequence's first row
    float* Q = &tp.qh[item * T * Dqk];
    float* K = &tp.kh[item * T * Dqk];
    float* V = &tp.vh[item * T * Dv];
    for (int64_t t = 0; t < T; ++t) {
      std::copy_n(&tp.q[((r0 + t) * NH + hd) * Dqk], Dqk, &Q[t * Dqk]);
      const float* kvr = &tp.kv[((r0 + t) * NH + hd) * KV];
      std::copy_n(kvr, Dn, &K[t * Dqk]);
      std::copy_n(&tp.kpe[(r0 + t) * Dr], Dr, &K[t * Dqk + Dn]);
      std::copy_n(kvr + Dn, Dv, &V[t * Dv]);
    }
    // Scores of every query against every key, then a softmax over each row's selected keys (a
    // causal row never selects a later key, so the upper triangle is always 0).
    float* P = &tp.probs[item * T * T];
    matmul_nt(Q, K, P, T, Dqk, T);
    for (int64_t t = 0; t < T; ++t) {
      float* p = &P[t * T];
      const uint8_t* m = &tp.mask[(r0 + t) * T];
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s <= t; ++s)
        if (m[s]) mx = std::max(mx, p[s] * scale);
      double sum = 0.0;
      for (int64_t s = 0; s <= t; ++s) {
        p[s] = m[s] ? std::exp(p[s] * scale - mx) : 0.0f;
        sum += p[s];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t s = 0; s <= t; ++s) p[s] *= inv;
      std::fill(p + t + 1, p + T, 0.0f);
    }
    Scratch& sc = tp.scratch[slot];
    fit(sc.a, T * Dv);
    matmul_nn(P, V, sc.a.data(), T, T, Dv);
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(&sc.a[t * Dv], Dv, &tp.attn[((r0 + t) * NH + hd) * Dv]);
  });
  fit(tp.delta, N * H);
  linear(aw.o_proj, tp.attn.data(), N, tp.delta.data(), false, &pool_);

  fit(tp.h, N * H);
  for (int64_t i = 0; i < N * H; ++i) tp.h[i] = x[i] + tp.delta[i];
  fit(tp.a2, N * H);
  rms_norm_rows(tp.h.data(), w.post_attention_layernorm.data(), tp.a2.data(), N, H, eps);

  if (w.moe) {
    const MoeWeights& mw = *w.moe;
    const int64_t E = static_cast<int64_t>(mw.experts.size());
    std::vector<float> logits(static_cast<size_t>(N * E));
    linear(mw.router, tp.a2.data(), N, logits.data(), false, &pool_);
    tp.routing = route(std::move(logits), N, mw.correction_bias, c);
    const Routing& r = tp.routing;
    tp.experts.resize(static_cast<size_t>(E));
    for (MlpTape& m : tp.experts) {
      m.rows.clear();
      m.slot.clear();
    }
    for (int64_t t = 0; t < N; ++t)
      for (int64_t j = 0; j < r.k; ++j) {
        MlpTape& m = tp.experts[r.chosen[t * r.k + j]];
        m.rows.push_back(t);
        m.slot.push_back(j);
      }
    std::vector<int64_t> hit;
    for (int64_t e = 0; e < E; ++e)
      if (!tp.experts[e].rows.empty()) hit.push_back(e);
    // Only the routed experts run, on their rows; each on one pool thread.
    for_each_item(pool_, static_cast<int64_t>(hit.size()), [&](size_t, int64_t i) {
      const int64_t e = hit[i];
      MlpTape& m = tp.experts[e];
      const int64_t n = static_cast<int64_t>(m.rows.size());
      fit(m.x, n * H);
      fit(m.y, n * H);
      for (int64_t j = 0; j < n; ++j) std::copy_n(&tp.a2[m.rows[j] * H], H, &m.x[j * H]);
      mlp_forward(mw.experts[e], m.x.data(), n, m.y.data(), false, m, nullptr);
    });
    // Combined in GlmMoeDsa::moe's order (expert by expert, rows ascending): the same sums.
    std::fill(tp.delta.begin(), tp.delta.end(), 0.0f);
    for (int64_t e : hit) {
      const MlpTape& m = tp.experts[e];
      for (size_t j = 0; j < m.rows.size(); ++j) {
        const float g = r.weights[m.rows[j] * r.k + m.slot[j]];
        const float* ye = &m.y[j * H];
        float* out = &tp.delta[m.rows[j] * H];
        for (int64_t d = 0; d < H; ++d) out[d] += g * ye[d];
      }
    }
    if (mw.shared)
      mlp_forward(*mw.shared, tp.a2.data(), N, tp.delta.data(), true, tp.shared, &pool_);
  } else {
    if (!w.dense) fail("internal: layer {} has neither a dense MLP nor experts", layer);
    mlp_forward(*w.dense, tp.a2.data(), N, tp.delta.data(), false, tp.dense, &pool_);
  }
  for (int64_t i = 0; i < N * H; ++i) y[i] = tp.h[i] + tp.delta[i];
}

void BlockGrad::backward(const float* dy, LinearGrads& grads, float* dx) {
  Tape& tp = *tape_;
  if (tp.w == nullptr) fail("internal: BlockGrad::backward before forward");
  const ModelConfig& c = config_;
  const LayerWeights& w = *tp.w;
  const AttentionWeights& aw = w.attn;
  const int64_t T = tp.T, N = tp.S * tp.T, H = c.hidden_size, NH = c.num_attention_heads,
                Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim, Dv = c.v_head_dim,
                Dqk = c.qk_head_dim(), Rkv = c.kv_lora_rank, Qr = c.q_lora_rank, KV = Dn + Dv;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float latent_eps = static_cast<float>(c.latent_norm_eps);
  const RopeTable& rope = tp.rope;
  w.for_each_linear([&](const Weight& lw) { check_grad_size(grads.find(lw.module()), lw); });

  // Linear backward on the pool: dW += dyᵀ x when tracked; dx (+)= dy · W when dx is given.
  auto linear_backward = [&](const Weight& lw, const float* in, const float* d_out, int64_t n,
                             float* d_in, bool accumulate) {
    if (auto* g = grads.find(lw.module()))
      matmul_tn(d_out, in, g->data(), lw.rows(), n, lw.cols(), true, &pool_);
    if (d_in)
      matmul_nn(d_out, f32_rows(lw, tp.wbuf), d_in, n, lw.rows(), lw.cols(), accumulate, &pool_);
  };

  // ---- feed-forward: y = h + mlp(a2) ----
  fit(tp.da2, N * H);
  std::fill(tp.da2.begin(), tp.da2.end(), 0.0f);
  if (w.moe) {
    const MoeWeights& mw = *w.moe;
    const Routing& r = tp.routing;
    const int64_t E = r.experts, K = r.k;
    std::vector<int64_t> hit;
    for (int64_t e = 0; e < E; ++e)
      if (!tp.experts[e].rows.empty()) hit.push_back(e);
    fit(tp.dcombine, N * K);  // dL/d(routing weight) of each (token, chosen expert)
    for_each_item(pool_, static_cast<int64_t>(hit.size()), [&](size_t slot, int64_t i) {
      const int64_t e = hit[i];
      MlpTape& m = tp.experts[e];
      Scratch& s = tp.scratch[slot];
      const int64_t n = static_cast<int64_t>(m.rows.size());
      fit(s.d, n * H);  // dL/d(expert output) = routing weight × dy
      for (int64_t j = 0; j < n; ++j) {
        const int64_t t = m.rows[j];
        const float g = r.weights[t * K + m.slot[j]];
        const float* dyt = dy + t * H;
        const float* ye = &m.y[j * H];
        double dot = 0.0;
        for (int64_t d = 0; d < H; ++d) {
          s.d[j * H + d] = g * dyt[d];
          dot += static_cast<double>(dyt[d]) * ye[d];
        }
        tp.dcombine[t * K + m.slot[j]] = static_cast<float>(dot);
      }
      fit(m.dx, n * H);
      std::fill(m.dx.begin(), m.dx.end(), 0.0f);
      mlp_backward(mw.experts[e], m, m.x.data(), s.d.data(), n, m.dx.data(), grads, nullptr, s);
    });
    for (int64_t e : hit) {
      const MlpTape& m = tp.experts[e];
      for (size_t j = 0; j < m.rows.size(); ++j) {
        float* d = &tp.da2[m.rows[j] * H];
        const float* src = &m.dx[j * H];
        for (int64_t k = 0; k < H; ++k) d[k] += src[k];
      }
    }
    // Routing weights w_j = f · s_j / (Σ_i s_i + 1e-20) (or f · s_j), s = sigmoid(logit): back to
    // the router logits, then through the frozen router weight into a2. The top-k choice itself
    // is piecewise constant and has no gradient.
    fit(tp.dlogits, N * E);
    std::fill(tp.dlogits.begin(), tp.dlogits.end(), 0.0f);
    const float f = static_cast<float>(c.routed_scaling_factor);
    for (int64_t t = 0; t < N; ++t) {
      const int32_t* chosen = &r.chosen[t * K];
      const float* dw = &tp.dcombine[t * K];
      double sum = 0.0, dws = 0.0;
      for (int64_t j = 0; j < K; ++j) {
        const float s = sigmoid(r.logits[t * E + chosen[j]]);
        sum += s;
        dws += static_cast<double>(dw[j]) * s;
      }
      const double denom = sum + 1e-20;
      for (int64_t j = 0; j < K; ++j) {
        const float s = sigmoid(r.logits[t * E + chosen[j]]);
        const double ds = c.norm_topk_prob ? f * (dw[j] - dws / denom) / denom : f * dw[j];
        tp.dlogits[t * E + chosen[j]] = static_cast<float>(ds) * s * (1.0f - s);
      }
    }
    matmul_nn(tp.dlogits.data(), f32_rows(mw.router, tp.wbuf), tp.da2.data(), N, E, H, true,
              &pool_);
    if (mw.shared)
      mlp_backward(*mw.shared, tp.shared, tp.a2.data(), dy, N, tp.da2.data(), grads, &pool_,
                   tp.scratch[0]);
  } else {
    mlp_backward(*w.dense, tp.dense, tp.a2.data(), dy, N, tp.da2.data(), grads, &pool_,
                 tp.scratch[0]);
  }
  // dh = dy + the post-attention RMSNorm's backward.
  fit(tp.dh, N * H);
  std::copy_n(dy, N * H, tp.dh.data());
  for (int64_t t = 0; t < N; ++t)
    rms_norm_backward(&tp.h[t * H], w.post_attention_layernorm.data(), &tp.da2[t * H],
                      &tp.dh[t * H], H, eps);

  // ---- attention: h = x + o_proj(attn) ----
  fit(tp.dattn, N * NH * Dv);
  linear_backward(aw.o_proj, tp.attn.data(), tp.dh.data(), N, tp.dattn.data(), false);
  fit(tp.dq_heads, N * NH * Dqk);
  fit(tp.dk_heads, N * NH * Dqk);
  fit(tp.dv_heads, N * NH * Dv);
  const float scale = static_cast<float>(c.softmax_scale());
  for_each_item(pool_, tp.S * NH, [&](size_t slot, int64_t item) {
    const int64_t hd = item % NH, r0 = (item / NH) * T;  // as in forward
    Scratch& s = tp.scratch[slot];
    const float* Q = &tp.qh[item * T * Dqk];
    const float* K = &tp.kh[item * T * Dqk];
    const float* V = &tp.vh[item * T * Dv];
    const float* P = &tp.probs[item * T * T];
    fit(s.a, T * Dv);  // dO of this head
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(&tp.dattn[((r0 + t) * NH + hd) * Dv], Dv, &s.a[t * Dv]);
    matmul_tn(P, s.a.data(), &tp.dv_heads[item * T * Dv], T, T, Dv);  // dV = Pᵀ dO
    fit(s.b, T * T);                                                  // dP = dO Vᵀ, then dS
    matmul_nt(s.a.data(), V, s.b.data(), T, Dv, T);
    // Softmax backward: dS = P ⊙ (dP − Σ_s P dP), times the score scale.
    for (int64_t t = 0; t < T; ++t) {
      const float* p = &P[t * T];
      float* d = &s.b[t * T];
      double dot = 0.0;
      for (int64_t k = 0; k <= t; ++k) dot += static_cast<double>(p[k]) * d[k];
      const float row = static_cast<float>(dot);
      for (int64_t k = 0; k <= t; ++k) d[k] = p[k] * (d[k] - row) * scale;
      std::fill(d + t + 1, d + T, 0.0f);
    }
    matmul_nn(s.b.data(), K, &tp.dq_heads[item * T * Dqk], T, T, Dqk);  // dQ = dS K
    matmul_tn(s.b.data(), Q, &tp.dk_heads[item * T * Dqk], T, T, Dqk);  // dK = dSᵀ Q
  });
  // Back to the projections' layouts: q rows [heads × (nope | rope)], kv rows [heads × (nope | v)],
  // and the shared rope key summed over heads; RoPE undone by its transpose.
  fit(tp.dq, N * NH * Dqk);
  fit(tp.dkv, N * NH * KV);
  fit(tp.dckv, N * (Rkv + Dr));
  std::fill(tp.dckv.begin(), tp.dckv.end(), 0.0f);
  for (int64_t row = 0; row < N; ++row) {
    const int64_t t = row % T, head0 = (row / T) * NH;  // head0: the sequence's first item
    float* dkpe = &tp.dckv[row * (Rkv + Dr) + Rkv];
    for (int64_t hd = 0; hd < NH; ++hd) {
      const int64_t at = (head0 + hd) * T + t;  // this row in the head-major blocks
      float* dq = &tp.dq[(row * NH + hd) * Dqk];
      std::copy_n(&tp.dq_heads[at * Dqk], Dqk, dq);
      rotate_back(rope, dq + Dn, t, c.rope_interleave);
      const float* dk = &tp.dk_heads[at * Dqk];
      float* dkv = &tp.dkv[(row * NH + hd) * KV];
      std::copy_n(dk, Dn, dkv);
      std::copy_n(&tp.dv_heads[at * Dv], Dv, dkv + Dn);
      for (int64_t d = 0; d < Dr; ++d) dkpe[d] += dk[Dn + d];
    }
    rotate_back(rope, dkpe, t, c.rope_interleave);
  }
  // kv_b_proj, then kv_a_layernorm on the latent part of kv_a_proj_with_mqa's output.
  fit(tp.dlat, N * Rkv);
  linear_backward(aw.kv_b_proj, tp.lat.data(), tp.dkv.data(), N, tp.dlat.data(), false);
  for (int64_t t = 0; t < N; ++t)
    rms_norm_backward(&tp.ckv[t * (Rkv + Dr)], aw.kv_a_layernorm.data(), &tp.dlat[t * Rkv],
                      &tp.dckv[t * (Rkv + Dr)], Rkv, latent_eps);
  // q_b_proj, q_a_layernorm, q_a_proj. The indexer reads qn and a1 too, but its selection is a
  // fixed mask: no gradient goes back through it.
  fit(tp.dqn, N * Qr);
  linear_backward(aw.q_b_proj, tp.qn.data(), tp.dq.data(), N, tp.dqn.data(), false);
  fit(tp.dqa, N * Qr);
  std::fill(tp.dqa.begin(), tp.dqa.end(), 0.0f);
  for (int64_t t = 0; t < N; ++t)
    rms_norm_backward(&tp.qa[t * Qr], aw.q_a_layernorm.data(), &tp.dqn[t * Qr], &tp.dqa[t * Qr], Qr,
                      latent_eps);
  float* da1 = nullptr;  // only dx needs the gradient of the attention's input
  if (dx) {
    fit(tp.da1, N * H);
    da1 = tp.da1.data();
  }
  linear_backward(aw.kv_a_proj_with_mqa, tp.a1.data(), tp.dckv.data(), N, da1, false);
  linear_backward(aw.q_a_proj, tp.a1.data(), tp.dqa.data(), N, da1, true);
  if (dx) {
    std::copy_n(tp.dh.data(), N * H, dx);
    for (int64_t t = 0; t < N; ++t)
      rms_norm_backward(&tp.x[t * H], w.input_layernorm.data(), &tp.da1[t * H], dx + t * H, H, eps);
  }
}

}  // namespace whittle
