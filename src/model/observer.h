// ForwardObserver: what a pass over the model can watch — the calibration statistics of REAP
// (router weights and expert output norms), AutoRound and GPTQ (every Linear's inputs), the
// per-stage golden tests and diagnostics. The forward pass calls it only when one is given (a null
// pointer check per call site: zero cost when absent) and never changes what it computes.
// Every pointer is valid only during the call. Rows are rows of the batch (model/glm_moe_dsa.h
// Batch: the sequences' new tokens stacked in order).
#pragma once

#include <cstdint>
#include <span>

namespace whittle {

class Batch;
class Weight;
struct Routing;
struct KeySelection;

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;

  // The hidden states [batch.rows(), hidden] entering and leaving decoder layer `layer`.
  virtual void layer_input(int64_t layer, const Batch& batch, const float* hidden) {}
  virtual void layer_output(int64_t layer, const Batch& batch, const float* hidden) {}
  // The input [rows, w.cols()] of a Linear, by its Hugging Face module name (w.module()): for a
  // routed expert's projections, the rows routed to it; for down_proj, silu(gate)·up.
  virtual void linear_input(const Weight& w, const float* x, int64_t rows) {}
  // The router of an MoE layer over every row of the batch.
  virtual void router(int64_t layer, const Routing& routing) {}
  // A routed expert's input rows [rows.size(), hidden] and its output before the routing weight
  // multiplies it; `rows` are the batch rows routed to it, ascending.
  virtual void expert(int64_t layer, int64_t expert, std::span<const int64_t> rows,
                      const float* input, const float* output) {}
  // The keys each new token of sequence `sequence` attends to (this layer's own indexer, or on an
  // IndexShare "shared" layer the previous layer's selection).
  virtual void dsa_selection(int64_t layer, int64_t sequence,
                             std::span<const KeySelection> selection) {}
  // The DSA indexer's scores I[t, s] = sum_h w_h ReLU(q_h . k_s / sqrt(d)) of new token `token` of
  // sequence `sequence` over every key it can see, for the tokens that select (those that see more
  // than index_topk keys). Called only when wants_indexer_scores() says so: keeping them for the
  // call costs a copy of every such row.
  virtual bool wants_indexer_scores() const { return false; }
  virtual void indexer_scores(int64_t layer, int64_t sequence, int64_t token,
                              std::span<const float> scores) {}
};

}  // namespace whittle
