// BlockGrad: one GlmMoeDsa decoder layer's forward over a calibration sequence with the
// activations its backward needs kept, and the backward written out as explicit calls (the way
// llm.c writes its backward): dL/dW of every Linear the gradient reaches, and dL/dx. AutoRound
// (quant/autoround.h) tunes rounding through it.
//
// What the gradient flows through (issue 10 point 4, spec autoround_vs_code.md §3.4): the MLA
// attention (q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj,
// RoPE, the softmax over the selected keys, o_proj), the RMSNorms and residuals, the routed
// experts' combine weights (sigmoid, renormalisation, routed_scaling_factor; not the top-k choice)
// into the router's input, the routed and the shared experts. The DSA indexer's key selection is a
// fixed mask: wq_b, wk and weights_proj get no gradient. The router weight is frozen (never
// tracked).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/model_config.h"
#include "model/glm_moe_dsa.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace whittle {

// Gradients of a layer's Linears, by module name (Weight::module()), each [rows, cols] like its
// weight. Only tracked modules receive gradients; backward adds into them.
class LinearGrads {
 public:
  void track(const Weight& w);
  std::vector<float>* find(const std::string& module);
  const std::vector<float>* find(const std::string& module) const;
  void zero();  // every tracked gradient to 0
  // Adds `other`'s gradient of every module both track into this one's.
  void add(const LinearGrads& other);

 private:
  std::unordered_map<std::string, std::vector<float>> grads_;
};

class BlockGrad {
 public:
  BlockGrad(const ModelConfig& config, ThreadPool& pool);
  ~BlockGrad();

  // y [T, H] = decoder layer `layer` with weights `w` over one sequence x [T, H] at positions
  // 0..T-1 (the expanded attention form), equal to GlmMoeDsa::forward_layer's result up to
  // float32 summation order. The keys each token attends to come from the layer's own indexer, or
  // on an IndexShare "shared" layer (no indexer) from `selection` (one KeySelection per token,
  // as selection() returned for the source layer). Keeps what backward needs; `w` must stay alive
  // and unchanged until backward.
  // With `sequences` S > 1, x and y are S independent sequences of T tokens one after the other
  // ([S·T, H], selection S·T long): the same results as S separate calls up to summation order
  // (the products run on all S·T rows at once, the reason to batch), and backward adds the S
  // sequences' gradients.
  void forward(int64_t layer, const LayerWeights& w, const float* x, int64_t T, float* y,
               const std::vector<KeySelection>* selection = nullptr, int64_t sequences = 1);
  // The key selection of the last forward, per token.
  const std::vector<KeySelection>& selection() const;
  // Backward of the last forward for dL/dy [S·T, H]: adds dL/dW into every Linear `grads` tracks
  // and writes dL/dx [S·T, H] when dx is not null.
  void backward(const float* dy, LinearGrads& grads, float* dx);

 private:
  struct Tape;
  const ModelConfig& config_;
  ThreadPool& pool_;
  std::unique_ptr<Tape> tape_;
};

}  // namespace whittle
