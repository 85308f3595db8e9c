#include "quant/autoround.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "quant/block_grad.h"
#include "quant/fake_quant.h"
#include "tensor/dtype.h"
#include "util/error.h"
#include "util/progress.h"

namespace whittle {

std::vector<QuantizedLinear> autoround_layer(const ModelConfig& config, int64_t layer,
                                             const LayerWeights& w,
                                             const std::vector<LinearPlan>& plan,
                                             const SampleStore& inputs, const SampleStore& targets,
                                             const QuantSpec& spec, const AutoRoundOptions& opts,
                                             ThreadPool& pool, Progress* progress,
                                             LayerTuning* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t H = config.hidden_size;
  const int64_t n = inputs.samples(), T = inputs.rows();
  if (n == 0 || targets.samples() != n || targets.rows() != T)
    fail("internal: AutoRound needs as many targets as inputs ({} vs {})", targets.samples(), n);
  if (opts.iters < 1) fail("--iters: at least 1 (use --method rtn for none)");
  if (!w.attn.indexer)
    fail("layer {}: AutoRound on an IndexShare layer (no indexer of its own) is not supported",
         layer);
  const float lr =
      static_cast<float>(opts.lr > 0 ? opts.lr : 1.0 / static_cast<double>(opts.iters));
  const float minmax_lr = static_cast<float>(opts.minmax_lr > 0 ? opts.minmax_lr : lr);

  // The tuned Linears, in plan order, and the parameters of the best mini-batch loss.
  std::vector<FakeQuant> tuned;
  struct Params {
    std::vector<float> v, alpha, beta;
  };
  std::vector<Params> best_params;
  std::map<std::string, size_t> index;
  std::map<std::string, const Weight*> source;
  w.for_each_linear([&](const Weight& x) { source[x.module()] = &x; });
  for (const LinearPlan& p : plan) {
    if (!p.quantize) continue;
    index[p.module] = tuned.size();
    tuned.emplace_back(p.module, source.at(p.module)->to_f32(), p.rows, p.cols, spec);
  }
  auto save_params = [&]() {
    best_params.resize(tuned.size());
    for (size_t i = 0; i < tuned.size(); ++i)
      best_params[i] = {tuned[i].v(), tuned[i].alpha(), tuned[i].beta()};
  };
  save_params();

  // The layer with every tuned Linear replaced by its current fake-quantized weight.
  auto quantized_layer = [&]() {
    LayerWeights lw = w;
    lw.for_each_linear([&](Weight& x) {
      auto it = index.find(x.module());
      if (it == index.end()) return;
      FakeQuant& t = tuned[it->second];
      std::vector<float> wq(static_cast<size_t>(t.rows() * t.cols()));
      t.forward(wq.data(), &pool);
      x = Weight::owned_f32(x.module(), std::move(wq), t.rows(), t.cols());
    });
    return lw;
  };

  BlockGrad block(config, pool);
  LinearGrads grads;
  const double numel_sample = static_cast<double>(T * H);
  std::vector<float> x(static_cast<size_t>(T * H)), target(x.size()), y(x.size()), dy(x.size());
  // Mean squared error of the layer over `which` samples; with grads, also the backward of
  // 1000 x that loss (auto-round scales it before backward) into `grads`.
  auto run = [&](const LayerWeights& lw, std::span<const int64_t> which, bool backward) {
    double sum = 0.0;
    const double numel = numel_sample * static_cast<double>(which.size());
    for (int64_t i : which) {
      inputs.get(i, x.data());
      targets.get(i, target.data());
      block.forward(layer, lw, x.data(), T, y.data());
      const float scale = static_cast<float>(2.0 * 1000.0 / numel);
      for (size_t j = 0; j < y.size(); ++j) {
        const float d = y[j] - target[j];
        sum += static_cast<double>(d) * d;
        dy[j] = scale * d;
      }
      if (backward) block.backward(dy.data(), grads, nullptr);
    }
    return sum / numel;
  };
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);

  LayerTuning st;
  st.full_rtn_loss = run(quantized_layer(), all, false);

  // Mini-batches: a shuffled cycle over the samples, reshuffled when fewer than a batch remain.
  std::mt19937_64 rng(opts.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer));
  std::vector<int64_t> order = all;
  std::shuffle(order.begin(), order.end(), rng);
  size_t next = 0;
  const int64_t batch = std::min(opts.batch, n);

  double best = std::numeric_limits<double>::infinity();
  for (int64_t it = 0; it < opts.iters; ++it) {
    if (next + static_cast<size_t>(batch) > order.size()) {
      std::shuffle(order.begin(), order.end(), rng);
      next = 0;
    }
    const std::span<const int64_t> idx(order.data() + next, static_cast<size_t>(batch));
    next += static_cast<size_t>(batch);
    const LayerWeights lw = quantized_layer();
    if (it == 0)
      for (const FakeQuant& t : tuned) grads.track(*source.at(t.module()));
    grads.zero();
    const double loss = run(lw, idx, true);
    if (it == 0) st.rtn_loss = loss;
    if (loss < best) {  // NaN never becomes best
      best = loss;
      st.best_iter = it;
      save_params();
    }
    if (progress) {
      progress->set_note(fmt::format("loss {:.4g} (best {:.4g} at {})", loss, best, st.best_iter));
      progress->advance();
    }
    // The last step's result would never be evaluated: skip it.
    if (it + 1 == opts.iters) break;
    for (FakeQuant& t : tuned)
      t.sign_step(grads.find(t.module())->data(), autoround_step_lr(lr, it, opts.iters),
                  autoround_step_lr(minmax_lr, it, opts.iters), &pool);
  }
  st.best_loss = best;

  std::vector<QuantizedLinear> out;
  for (size_t i = 0; i < tuned.size(); ++i) {
    tuned[i].v() = best_params[i].v;
    tuned[i].alpha() = best_params[i].alpha;
    tuned[i].beta() = best_params[i].beta;
    out.push_back(tuned[i].quantized());
  }
  st.full_best_loss = run(quantized_layer(), all, false);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stats) *stats = st;
  return out;
}

}  // namespace whittle
