#include "quant/autoround.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
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

  // Sample lanes: a mini-batch's samples are split over two lanes (lane l takes the l-th,
  // (l+2)-th, ... sample), each with its own BlockGrad, gradients and thread pool, run side by
  // side; their gradients are added in lane order. A lane runs its samples through BlockGrad
  // `per_call` sequences at a time, so that products see per_call·T rows. On a small layer both
  // beat splitting every product over the threads (most are too small to split well). A layer's
  // second lane costs a second set of gradients (4 B per tuned weight) and tape: above kLaneWeights
  // tuned weights (where products are large enough to split well anyway) there is one lane. Neither
  // the lanes nor per_call depend on --threads, and BlockGrad gives the same bits on any pool, so
  // the result does not either.
  constexpr int64_t kLaneWeights = int64_t{64} << 20;  // 256 MiB of second gradients
  int64_t tuned_weights = 0;
  for (const FakeQuant& t : tuned) tuned_weights += t.rows() * t.cols();
  const size_t lane_count = opts.batch >= 2 && tuned_weights <= kLaneWeights ? 2 : 1;
  // The attention probabilities dominate a call's tape: heads·T² floats per sequence. Up to
  // kTapeBytes of them (GLM-5 at T = 2048: one sequence per call).
  constexpr double kTapeBytes = 512.0 * 1024 * 1024;
  const double probs_bytes =
      4.0 * static_cast<double>(config.num_attention_heads) * static_cast<double>(T * T);
  const int64_t per_lane =
      (std::max<int64_t>(1, opts.batch) + static_cast<int64_t>(lane_count) - 1) /
      static_cast<int64_t>(lane_count);
  const int64_t per_call =
      std::clamp<int64_t>(static_cast<int64_t>(kTapeBytes / probs_bytes), 1, per_lane);
  struct Lane {
    std::unique_ptr<ThreadPool> pool;
    std::unique_ptr<BlockGrad> block;
    LinearGrads grads;
    std::vector<float> x, target, y, dy;
    double sum = 0.0;
  };
  std::vector<Lane> lanes(lane_count);
  for (Lane& ln : lanes) {
    ln.pool = std::make_unique<ThreadPool>(std::max<size_t>(1, pool.size() / lane_count));
    ln.block = std::make_unique<BlockGrad>(config, *ln.pool);
    for (auto* v : {&ln.x, &ln.target, &ln.y, &ln.dy})
      v->resize(static_cast<size_t>(per_call * T * H));
  }
  LinearGrads& grads = lanes[0].grads;  // where the lanes' gradients are added up
  const double numel_sample = static_cast<double>(T * H);
  // Mean squared error of the layer over `which` samples; with backward, also the gradient of
  // 1000 x that loss (auto-round scales it before backward) into `grads`.
  auto run = [&](const LayerWeights& lw, std::span<const int64_t> which, bool backward) {
    const double numel = numel_sample * static_cast<double>(which.size());
    const float scale = static_cast<float>(2.0 * 1000.0 / numel);
    pool.parallel_for(lanes.size(), [&](size_t begin, size_t end) {
      for (size_t l = begin; l < end; ++l) {
        Lane& ln = lanes[l];
        ln.sum = 0.0;
        std::vector<int64_t> mine;  // this lane's samples
        for (size_t j = l; j < which.size(); j += lanes.size()) mine.push_back(which[j]);
        for (size_t first = 0; first < mine.size(); first += static_cast<size_t>(per_call)) {
          const int64_t seqs =
              std::min<int64_t>(per_call, static_cast<int64_t>(mine.size() - first));
          for (int64_t q = 0; q < seqs; ++q) {
            inputs.get(mine[first + q], &ln.x[q * T * H]);
            targets.get(mine[first + q], &ln.target[q * T * H]);
          }
          ln.block->forward(layer, lw, ln.x.data(), T, ln.y.data(), nullptr, seqs);
          for (int64_t k = 0; k < seqs * T * H; ++k) {
            const float d = ln.y[k] - ln.target[k];
            ln.sum += static_cast<double>(d) * d;
            ln.dy[k] = scale * d;
          }
          if (backward) ln.block->backward(ln.dy.data(), ln.grads, nullptr);
        }
      }
    });
    double sum = 0.0;
    for (const Lane& ln : lanes) sum += ln.sum;
    if (backward)
      for (size_t l = 1; l < lanes.size(); ++l) grads.add(lanes[l].grads);
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
      for (Lane& ln : lanes)
        for (const FakeQuant& t : tuned) ln.grads.track(*source.at(t.module()));
    for (Lane& ln : lanes) ln.grads.zero();
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
