// BlockGrad against two outside references: GlmMoeDsa::forward_layer for the forward, and torch
// autograd through transformers' own GlmMoeDsaDecoderLayer (float64) for every gradient
// (tests/golden/block_grad, made by tools/oracle/make_block_grad_golden.py: a dense layer 0 and a
// MoE layer 1 with 6 experts top-2 + 1 shared, T = 20 > index_topk = 6 so the DSA mask drops keys).
#include "quant/block_grad.h"

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "io/safetensors.h"
#include "model/kv_cache.h"
#include "util/error.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/block_grad";
const fs::path kTinyGlm5 = fs::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5";

std::vector<float> tensor_f32(const SafeTensorsFile& f, const std::string& name) {
  const TensorInfo* info = f.find(name);
  if (info == nullptr) ADD_FAILURE() << f.path() << " has no tensor " << name;
  if (info == nullptr || info->dtype != DType::F32) return {};
  const TensorView v = f.view(*info);
  std::vector<float> out(static_cast<size_t>(info->numel()));
  std::memcpy(out.data(), v.bytes.data(), v.bytes.size());
  return out;
}

struct Errors {
  double norm_rel = 0.0;  // ‖a − b‖ / ‖b‖
  double max_rel = 0.0;   // max|a − b| / max|b|
};

Errors compare(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff2 = 0.0, ref2 = 0.0, max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff2 += d * d;
    ref2 += static_cast<double>(b[i]) * b[i];
    max_diff = std::max(max_diff, std::abs(d));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(b[i])));
  }
  return {std::sqrt(diff2 / ref2), max_diff / max_ref};
}

// The input rows of a Batch of one fresh sequence, replaced by x: forward_layer on any input.
std::vector<float> forward_layer_on(const GlmMoeDsa& model, int64_t layer, const float* x,
                                    int64_t T) {
  KvCache cache(model.config());
  std::vector<int32_t> tokens(static_cast<size_t>(T), 0);
  Batch b = model.embed({SequenceInput{tokens, &cache, /*absorbed=*/false}});
  std::copy_n(x, T * model.config().hidden_size, b.hidden.data());
  model.forward_layer(layer, b);
  return b.hidden;
}

// Every Linear the gradient reaches (not the indexer's, not the router).
void track_all(const LayerWeights& w, LinearGrads& grads) {
  w.for_each_linear([&](const Weight& lw) {
    const std::string& m = lw.module();
    if (m.find(".indexer.") == std::string::npos && !m.ends_with(".mlp.gate")) grads.track(lw);
  });
}

// The forward is GlmMoeDsa::forward_layer (float rounding apart: the softmax here runs over a
// dense masked row, the reference over the selected keys) and transformers' layer.
// Achieved: ‖y − forward_layer‖/‖forward_layer‖ 1.1e-7 (layer 0) and 1.5e-7 (layer 1), max-abs
// 2.1e-7 of max|y|; vs transformers 1.5e-7 (max-abs 1.5e-7). Tolerances 1e-6 and 3e-6.
void check_forward(int64_t L) {
  ThreadPool pool(2);
  const GlmMoeDsa model = GlmMoeDsa::load(kGolden / "model", pool);
  const SafeTensorsFile golden(kGolden / ("layer" + std::to_string(L) + ".safetensors"));
  const std::vector<float> x = tensor_f32(golden, "x"), y_hf = tensor_f32(golden, "y");
  const int64_t H = model.config().hidden_size, T = static_cast<int64_t>(x.size()) / H;
  BlockGrad bg(model.config(), pool);
  std::vector<float> y(x.size());
  bg.forward(L, model.weights().weights().layers[L], x.data(), T, y.data());
  const std::vector<float> ref = forward_layer_on(model, L, x.data(), T);
  const Errors e = compare(y, ref), e_hf = compare(y, y_hf);
  std::printf(
      "layer %lld forward: vs forward_layer %.2e (max %.2e), vs transformers %.2e (max %.2e)\n",
      static_cast<long long>(L), e.norm_rel, e.max_rel, e_hf.norm_rel, e_hf.max_rel);
  EXPECT_LT(e.norm_rel, 1e-6);
  EXPECT_LT(e.max_rel, 1e-6);
  EXPECT_LT(e_hf.norm_rel, 3e-6);
  EXPECT_LT(e_hf.max_rel, 3e-6);
  // The mask really drops keys on this golden: rows past index_topk attend to index_topk keys.
  const std::vector<KeySelection>& sel = bg.selection();
  ASSERT_EQ(static_cast<int64_t>(sel.size()), T);
  EXPECT_TRUE(sel[0].all_visible);
  EXPECT_FALSE(sel[T - 1].all_visible);
  EXPECT_EQ(static_cast<int64_t>(sel[T - 1].keys.size()), model.config().index_topk);
}

// dL/dW of every Linear and dL/dx for L = Σ y ⊙ r against torch autograd.
// Achieved (float32 here vs float64 there), worst over the 34 gradients and dx of both layers:
// norm-wise 4.3e-7, max-abs 5.7e-7 of max|golden| (both q_b_proj of layer 0); transformers' own
// float32 run is up to 5e-7 away. Tolerance 1e-5 (~18x): a wrong eps in any RMSNorm backward moves
// them by 5e-4 .. 2e-3 (tests/golden/block_grad shrinks the norms' inputs so that eps matters).
void check_gradients(int64_t L) {
  ThreadPool pool(2);
  const GlmMoeDsa model = GlmMoeDsa::load(kGolden / "model", pool);
  const LayerWeights& w = model.weights().weights().layers[L];
  const SafeTensorsFile golden(kGolden / ("layer" + std::to_string(L) + ".safetensors"));
  const std::vector<float> x = tensor_f32(golden, "x"), r = tensor_f32(golden, "r");
  const int64_t H = model.config().hidden_size, T = static_cast<int64_t>(x.size()) / H;
  BlockGrad bg(model.config(), pool);
  LinearGrads grads;
  track_all(w, grads);
  std::vector<float> y(x.size()), dx(x.size());
  bg.forward(L, w, x.data(), T, y.data());
  bg.backward(r.data(), grads, dx.data());

  Errors worst;
  std::string worst_norm, worst_max;
  auto check = [&](const std::string& what, const std::vector<float>& mine,
                   const std::vector<float>& ref) {
    const Errors e = compare(mine, ref);
    EXPECT_LT(e.norm_rel, 1e-5) << what;
    EXPECT_LT(e.max_rel, 1e-5) << what;
    if (e.norm_rel > worst.norm_rel) worst.norm_rel = e.norm_rel, worst_norm = what;
    if (e.max_rel > worst.max_rel) worst.max_rel = e.max_rel, worst_max = what;
  };
  check("dx", dx, tensor_f32(golden, "dx"));
  size_t modules = 0;
  for (const TensorInfo& t : golden.tensors()) {
    if (!t.name.starts_with("grad.")) continue;
    const std::string module = t.name.substr(5);
    const std::vector<float>* g = grads.find(module);
    ASSERT_NE(g, nullptr) << module << " is not a Linear of layer " << L;
    check(module, *g, tensor_f32(golden, t.name));
    ++modules;
  }
  // Every tracked Linear has a golden (and the other way round).
  size_t tracked = 0;
  w.for_each_linear([&](const Weight& lw) { tracked += grads.find(lw.module()) != nullptr; });
  EXPECT_EQ(modules, tracked);
  EXPECT_EQ(modules, L == 0 ? 8u : 26u);
  std::printf("layer %lld: %zu gradients + dx; worst norm-wise %.2e (%s), max-abs %.2e (%s)\n",
              static_cast<long long>(L), modules, worst.norm_rel, worst_norm.c_str(), worst.max_rel,
              worst_max.c_str());

  // The tape is reused: a second forward and backward on the same sizes gives the same bits, and
  // backward adds into the gradients.
  const std::string probe =
      L == 0 ? "model.layers.0.mlp.down_proj" : "model.layers.1.mlp.experts.3.gate_proj";
  const std::vector<float> first = *grads.find(probe), first_dx = dx;
  std::vector<float> y2(x.size());
  bg.forward(L, w, x.data(), T, y2.data());
  bg.backward(r.data(), grads, dx.data());
  EXPECT_EQ(y2, y);
  EXPECT_EQ(dx, first_dx);
  const std::vector<float>& twice = *grads.find(probe);
  for (size_t i = 0; i < first.size(); ++i) ASSERT_FLOAT_EQ(twice[i], 2 * first[i]) << i;
}

TEST(BlockGrad, ForwardEqualsForwardLayerAndTransformersDenseLayer) {
  check_forward(0);
}
TEST(BlockGrad, ForwardEqualsForwardLayerAndTransformersMoeLayer) {
  check_forward(1);
}
TEST(BlockGrad, GradientsMatchTorchAutogradDenseLayer) {
  check_gradients(0);
}
TEST(BlockGrad, GradientsMatchTorchAutogradMoeLayer) {
  check_gradients(1);
}

// Only what is tracked gets a gradient; dx may be skipped; an untracked layer costs no dW.
TEST(BlockGrad, UntrackedModulesAndNullDx) {
  ThreadPool pool(2);
  const GlmMoeDsa model = GlmMoeDsa::load(kGolden / "model", pool);
  const LayerWeights& w = model.weights().weights().layers[1];
  const SafeTensorsFile golden(kGolden / "layer1.safetensors");
  const std::vector<float> x = tensor_f32(golden, "x"), r = tensor_f32(golden, "r");
  const int64_t T = static_cast<int64_t>(x.size()) / model.config().hidden_size;
  BlockGrad bg(model.config(), pool);
  LinearGrads grads;
  grads.track(w.attn.q_a_proj);
  std::vector<float> y(x.size());
  bg.forward(1, w, x.data(), T, y.data());
  bg.backward(r.data(), grads, nullptr);
  ASSERT_NE(grads.find("model.layers.1.self_attn.q_a_proj"), nullptr);
  EXPECT_EQ(grads.find("model.layers.1.self_attn.o_proj"), nullptr);
  const Errors e = compare(*grads.find("model.layers.1.self_attn.q_a_proj"),
                           tensor_f32(golden, "grad.model.layers.1.self_attn.q_a_proj"));
  EXPECT_LT(e.norm_rel, 1e-5);
  grads.zero();
  for (float v : *grads.find("model.layers.1.self_attn.q_a_proj")) ASSERT_EQ(v, 0.0f);
}

// Every Linear of a layer, mutable.
template <typename Fn>
void each_linear(LayerWeights& w, Fn&& fn) {
  auto mlp = [&](MlpWeights& m) {
    fn(m.gate_proj);
    fn(m.up_proj);
    fn(m.down_proj);
  };
  AttentionWeights& a = w.attn;
  for (Weight* x : {&a.q_a_proj, &a.q_b_proj, &a.kv_a_proj_with_mqa, &a.kv_b_proj, &a.o_proj})
    fn(*x);
  if (a.indexer)
    for (Weight* x : {&a.indexer->wq_b, &a.indexer->wk, &a.indexer->weights_proj}) fn(*x);
  if (w.dense) mlp(*w.dense);
  if (w.moe) {
    fn(w.moe->router);
    for (MlpWeights& e : w.moe->experts) mlp(e);
    if (w.moe->shared) mlp(*w.moe->shared);
  }
}

// The layer with every Linear converted to owned float32, as a quantizer's substitute weights come.
LayerWeights as_f32(const LayerWeights& w) {
  LayerWeights out = w;
  each_linear(out,
              [](Weight& x) { x = Weight::owned_f32(x.module(), x.to_f32(), x.rows(), x.cols()); });
  return out;
}

// A check that needs no transformers: central differences of L = Σ y ⊙ r (summed in double)
// against the analytic dL/dW at the largest-gradient entry of a few weights. Only weights
// downstream of every discrete choice (the indexer's top-k, the router's), so that no
// perturbation flips one. Achieved: ≤ 1.3e-5 relative; tolerance 3e-4.
TEST(BlockGrad, FiniteDifferencesAgreeOnSampledWeights) {
  ThreadPool pool(2);
  const GlmMoeDsa model = GlmMoeDsa::load(kGolden / "model", pool);
  const std::pair<int64_t, std::string> cases[] = {
      {0, "model.layers.0.self_attn.q_b_proj"},
      {0, "model.layers.0.self_attn.kv_a_proj_with_mqa"},
      {0, "model.layers.0.self_attn.kv_b_proj"},
      {0, "model.layers.0.mlp.gate_proj"},
      {1, "model.layers.1.mlp.experts.2.up_proj"},
      {1, "model.layers.1.mlp.shared_experts.down_proj"},
  };
  BlockGrad bg(model.config(), pool);
  for (const auto& [L, module] : cases) {
    const SafeTensorsFile golden(kGolden / ("layer" + std::to_string(L) + ".safetensors"));
    const std::vector<float> x = tensor_f32(golden, "x"), r = tensor_f32(golden, "r");
    const int64_t T = static_cast<int64_t>(x.size()) / model.config().hidden_size;
    LayerWeights w = as_f32(model.weights().weights().layers[L]);
    Weight* target = nullptr;
    each_linear(w, [&](Weight& lw) {
      if (lw.module() == module) target = &lw;
    });
    ASSERT_NE(target, nullptr) << module;
    LinearGrads grads;
    grads.track(*target);
    std::vector<float> y(x.size());
    bg.forward(L, w, x.data(), T, y.data());
    bg.backward(r.data(), grads, nullptr);
    const std::vector<float>& g = *grads.find(module);
    const size_t i = static_cast<size_t>(
        std::max_element(g.begin(), g.end(),
                         [](float a, float b) { return std::abs(a) < std::abs(b); }) -
        g.begin());
    const Weight original = *target;
    auto loss_at = [&](float value) {
      std::vector<float> v = original.to_f32();
      v[i] = value;
      *target = Weight::owned_f32(module, std::move(v), original.rows(), original.cols());
      bg.forward(L, w, x.data(), T, y.data());
      double loss = 0.0;
      for (size_t k = 0; k < y.size(); ++k) loss += static_cast<double>(y[k]) * r[k];
      return loss;
    };
    // A step of 5 % of the weight's RMS: large enough to stand above float32 noise in L, small
    // enough for the RMSNorms' curvature (the shrunken q_a / kv_a weights have RMS ~0.01).
    const std::vector<float> values = original.to_f32();
    double ss = 0.0;
    for (float v : values) ss += static_cast<double>(v) * v;
    const float v0 = values[i], h = 0.05f * static_cast<float>(std::sqrt(ss / values.size()));
    const float up = v0 + h, down = v0 - h;
    const double fd = (loss_at(up) - loss_at(down)) / (static_cast<double>(up) - down);
    EXPECT_NEAR(fd, g[i], 3e-4 * std::abs(g[i])) << module << "[" << i << "]";
    std::printf("%s[%zu]: analytic %.6g, central difference %.6g (rel %.1e)\n", module.c_str(), i,
                g[i], fd, std::abs(fd - g[i]) / std::abs(g[i]));
  }
}

// An IndexShare "shared" layer (no indexer) attends to the selection it is given: the MoE layer
// without its indexer, given the selection its own indexer made, runs bit for bit the same; without
// a selection it is refused.
TEST(BlockGrad, SharedLayerUsesTheGivenSelection) {
  ThreadPool pool(2);
  const GlmMoeDsa model = GlmMoeDsa::load(kGolden / "model", pool);
  const LayerWeights& full = model.weights().weights().layers[1];
  LayerWeights shared = full;
  shared.attn.indexer.reset();
  const SafeTensorsFile golden(kGolden / "layer1.safetensors");
  const std::vector<float> x = tensor_f32(golden, "x"), r = tensor_f32(golden, "r");
  const int64_t T = static_cast<int64_t>(x.size()) / model.config().hidden_size;
  BlockGrad a(model.config(), pool), b(model.config(), pool);
  LinearGrads ga, gb;
  track_all(full, ga);
  track_all(shared, gb);
  std::vector<float> ya(x.size()), yb(x.size()), dxa(x.size()), dxb(x.size());
  a.forward(1, full, x.data(), T, ya.data());
  a.backward(r.data(), ga, dxa.data());
  EXPECT_THROW(b.forward(1, shared, x.data(), T, yb.data()), Error);
  const std::vector<KeySelection> sel = a.selection();
  b.forward(1, shared, x.data(), T, yb.data(), &sel);
  b.backward(r.data(), gb, dxb.data());
  EXPECT_EQ(ya, yb);
  EXPECT_EQ(dxa, dxb);
  EXPECT_EQ(*ga.find("model.layers.1.self_attn.kv_b_proj"),
            *gb.find("model.layers.1.self_attn.kv_b_proj"));
}

// The same bits on any number of threads: heads and experts run whole on one thread each, and the
// pooled products split by output column only. Checked on the bundled model's layer 1 (T = 96 >
// index_topk, products above the parallel threshold).
TEST(BlockGrad, ResultsDoNotDependOnThreadCount) {
  ThreadPool one(1);
  const GlmMoeDsa model = GlmMoeDsa::load(kTinyGlm5, one);
  const ModelConfig& c = model.config();
  const int64_t T = 96, H = c.hidden_size;
  const LayerWeights& w = model.weights().weights().layers[1];
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(T * H)), dy(x.size());
  for (float& v : x) v = normal(rng);
  for (float& v : dy) v = normal(rng);
  std::vector<std::vector<float>> ys, dxs, gs;
  for (size_t threads : {1, 3}) {
    ThreadPool pool(threads);
    BlockGrad bg(c, pool);
    LinearGrads grads;
    track_all(w, grads);
    std::vector<float> y(x.size()), dx(x.size());
    bg.forward(1, w, x.data(), T, y.data());
    bg.backward(dy.data(), grads, dx.data());
    ys.push_back(y);
    dxs.push_back(dx);
    gs.push_back(*grads.find("model.layers.1.self_attn.q_a_proj"));
    gs.push_back(*grads.find("model.layers.1.mlp.experts.5.down_proj"));
    gs.push_back(*grads.find("model.layers.1.mlp.shared_experts.gate_proj"));
  }
  EXPECT_EQ(ys[0], ys[1]);
  EXPECT_EQ(dxs[0], dxs[1]);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(gs[i], gs[i + 3]) << i;
}

// Several sequences in one call (what AutoRound's mini-batches use) give what one call per
// sequence gives: outputs and dL/dx row for row, and the sum of the gradients. Only summation order
// differs (products over all rows at once), so the check is relative, at float32 noise. The two
// sequences differ, and T = 96 > index_topk, so a mixed-up position, mask or head block shows.
TEST(BlockGrad, SequencesInOneCallEqualOneCallEach) {
  ThreadPool pool(2);
  const GlmMoeDsa model = GlmMoeDsa::load(kTinyGlm5, pool);
  const ModelConfig& c = model.config();
  const int64_t T = 96, H = c.hidden_size, S = 2;
  for (int64_t layer : {0, 1}) {
    const LayerWeights& w = model.weights().weights().layers[layer];
    std::mt19937 rng(11 + static_cast<unsigned>(layer));
    std::normal_distribution<float> normal;
    std::vector<float> x(static_cast<size_t>(S * T * H)), dy(x.size());
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    BlockGrad both(c, pool), each(c, pool);
    LinearGrads g_both, g_each;
    track_all(w, g_both);
    track_all(w, g_each);
    std::vector<float> y(x.size()), dx(x.size()), y1(x.size()), dx1(x.size());
    both.forward(layer, w, x.data(), T, y.data(), nullptr, S);
    both.backward(dy.data(), g_both, dx.data());
    EXPECT_EQ(both.selection().size(), static_cast<size_t>(S * T));
    for (int64_t q = 0; q < S; ++q) {
      each.forward(layer, w, &x[q * T * H], T, &y1[q * T * H]);
      each.backward(&dy[q * T * H], g_each, &dx1[q * T * H]);
    }
    EXPECT_LT(compare(y, y1).max_rel, 5e-6) << "layer " << layer;
    EXPECT_LT(compare(dx, dx1).max_rel, 5e-6) << "layer " << layer;
    const char* names[] = {"self_attn.q_a_proj", "self_attn.kv_b_proj", "self_attn.o_proj",
                           layer == 0 ? "mlp.down_proj" : "mlp.experts.5.down_proj",
                           layer == 0 ? "mlp.gate_proj" : "mlp.shared_experts.up_proj"};
    for (const char* n : names) {
      const std::string m = fmt::format("model.layers.{}.{}", layer, n);
      const Errors e = compare(*g_both.find(m), *g_each.find(m));
      EXPECT_LT(e.max_rel, 5e-6) << m << " (norm-wise " << e.norm_rel << ")";
    }
  }
}

// The bundled model's first MoE layer (32 experts top-4, 4 heads, index_topk 64) on a full
// T = 256 calibration sequence: forward equals forward_layer on the real layer input, experts that
// no token chose get no gradient, and the time per sequence is printed.
TEST(BlockGrad, TinyGlm5Layer1) {
  ThreadPool pool(0);
  const GlmMoeDsa model = GlmMoeDsa::load(kTinyGlm5, pool);
  const ModelConfig& c = model.config();
  const int64_t T = std::min<int64_t>(256, c.max_position_embeddings), H = c.hidden_size;
  std::mt19937 rng(5);
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 4000);
  KvCache cache(c);
  Batch b = model.embed({SequenceInput{tokens, &cache, false}});
  model.forward_layer(0, b);
  const std::vector<float> x = b.hidden;  // layer 1's real input
  model.forward_layer(1, b);

  const LayerWeights& w = model.weights().weights().layers[1];
  BlockGrad bg(c, pool);
  LinearGrads grads;
  track_all(w, grads);
  std::vector<float> y(x.size()), dx(x.size()), dy(x.size());
  std::normal_distribution<float> normal;
  for (float& v : dy) v = normal(rng);
  bg.forward(1, w, x.data(), T, y.data());
  const Errors e = compare(y, b.hidden);
  std::printf("tiny-glm5 layer 1 forward vs forward_layer: %.2e (max %.2e)\n", e.norm_rel,
              e.max_rel);
  EXPECT_LT(e.norm_rel, 1e-6);  // achieved 1.0e-7
  EXPECT_LT(e.max_rel, 2e-6);   // achieved 1.2e-7
  bg.backward(dy.data(), grads, dx.data());
  for (float v : dx) ASSERT_TRUE(std::isfinite(v));

  // Timing: warm tape (second call onwards), best of a few; with the weights as stored (bf16,
  // converted per call) and as owned float32 (a quantizer's substitutes: used in place).
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const LayerWeights w32 = as_f32(w);
  for (const LayerWeights* lw : {&w, &w32}) {
    double fwd_ms = 1e30, all_ms = 1e30, ref_ms = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      KvCache fresh(c);
      Batch again = model.embed({SequenceInput{tokens, &fresh, false}});
      again.hidden = x;
      const auto r0 = clock::now();
      model.forward_layer(1, *lw, again);
      ref_ms = std::min(ref_ms, ms(r0, clock::now()));
      const auto t0 = clock::now();
      bg.forward(1, *lw, x.data(), T, y.data());
      const auto t1 = clock::now();
      bg.backward(dy.data(), grads, dx.data());
      const auto t2 = clock::now();
      fwd_ms = std::min(fwd_ms, ms(t0, t1));
      all_ms = std::min(all_ms, ms(t0, t2));
    }
    std::printf(
        "tiny-glm5 layer 1 (%s weights), T=%lld, %zu threads, best of 5: forward %.1f ms, "
        "forward+backward %.1f ms; GlmMoeDsa::forward_layer %.1f ms\n",
        lw == &w ? "bf16" : "f32", static_cast<long long>(T), pool.size(), fwd_ms, all_ms, ref_ms);
  }

  // Experts no token chose: zero gradient. Short sequence so that some are left out.
  grads.zero();
  const int64_t Ts = 4;
  std::vector<float> ys(Ts * H), dxs(Ts * H);
  bg.forward(1, w, x.data(), Ts, ys.data());
  bg.backward(dy.data(), grads, dxs.data());
  int zero = 0, nonzero = 0;
  for (size_t e = 0; e < w.moe->experts.size(); ++e) {
    const std::vector<float>& g = *grads.find(w.moe->experts[e].down_proj.module());
    const bool any = std::any_of(g.begin(), g.end(), [](float v) { return v != 0.0f; });
    (any ? nonzero : zero)++;
  }
  EXPECT_LE(nonzero, Ts * c.num_experts_per_tok);
  EXPECT_GT(nonzero, 0);
  EXPECT_GE(zero, static_cast<int>(w.moe->experts.size()) - Ts * c.num_experts_per_tok);
}

}  // namespace
}  // namespace whittle
