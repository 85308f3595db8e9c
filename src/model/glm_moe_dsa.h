// GlmMoeDsa: the forward pass of GLM-5 / DeepSeek-V3.2 (MLA attention with the DSA lightning
// indexer, sigmoid-routed MoE with a shared expert), reference path in float32 arithmetic over
// weights read where they lie (model/weight_source.h).
//
// The pass is public in pieces so that it can be streamed and watched:
//   Batch b = model.embed({{tokens_a, &cache_a}, {tokens_b, &cache_b}});
//   for (L = 0; L < layers; ++L) model.forward_layer(L, b, observer);   // any weights, any order
//   logits = model.head(b, /*all_rows=*/false);                         // of sequences
// A batch holds several independent sequences, each with its own cache and positions; their new
// tokens are stacked as rows, so every Linear runs once over all of them. A layer-major pass (every
// calibration sequence through layer L, then L + 1, with one layer's weights resident) is the same
// calls in another order and gives the same result bit for bit.
// The model holds no mutable state: forwards on different caches may run on several threads at
// once (the ThreadPool runs a call made while it is busy on the calling thread).
//
// Two attention forms that must agree: expanded (per-head keys and values from kv_b_proj over the
// latent cache; what transformers computes) and absorbed (MQA over the latent cache with W_UK and
// W_UV folded into query and output; what decode uses).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "io/model_config.h"
#include "model/kv_cache.h"
#include "model/observer.h"
#include "model/weight_source.h"
#include "ops/rope.h"
#include "util/thread_pool.h"

namespace whittle {

// Which keys a query row attends to: every causally visible key, or the indexer's top-k.
struct KeySelection {
  bool all_visible = true;
  std::vector<int32_t> keys;  // when !all_visible: absolute positions, any order
};

// One sequence of a batch: `tokens` run at positions cache->length() ... and are appended to it.
struct SequenceInput {
  std::span<const int32_t> tokens;
  KvCache* cache = nullptr;
  // The absorbed attention form (decode) whatever the cost; otherwise the cheaper of the two.
  bool absorbed = false;
};

// The state of a batch between layers: the hidden states of every new token and, for IndexShare
// "shared" layers, the last indexer selection. Made by GlmMoeDsa::embed.
class Batch {
 public:
  int64_t sequences() const { return static_cast<int64_t>(seqs_.size()); }
  int64_t rows() const { return offset_.back(); }
  const SequenceInput& sequence(int64_t s) const { return seqs_[s]; }
  int64_t first_row(int64_t s) const { return offset_[s]; }
  int64_t length(int64_t s) const { return offset_[s + 1] - offset_[s]; }
  int64_t start(int64_t s) const { return start_[s]; }  // position of the first new token

  std::vector<float> hidden;  // [rows, hidden_size]

 private:
  friend class GlmMoeDsa;
  std::vector<SequenceInput> seqs_;
  std::vector<int64_t> offset_{0}, start_;
  std::vector<std::vector<KeySelection>> selection_;  // per sequence, of layer selection_layer_
  int64_t selection_layer_ = -1;
};

// Whether a sequence with `cached` tokens in its cache runs `new_tokens` more (attending to
// `attended` keys in all) in the absorbed form for fewer multiply-adds than the expanded form,
// which would expand every cached latent again. Decode always runs absorbed; a fresh prefill never.
bool absorbed_is_cheaper(const ModelConfig& config, int64_t cached, int64_t new_tokens,
                         int64_t attended);

// Which kernels run the Linears: the reference path (ops/linear.h linear(): every format converted
// to float32, OpenBLAS) or the fast one (linear_fast: int4 weights packed at load and multiplied
// with int8 activations, dense 16-bit GEMV for decode). The reference is the oracle of the fast.
enum class Kernels { kReference, kFast };

class GlmMoeDsa {
 public:
  GlmMoeDsa(ModelConfig config, std::shared_ptr<const WeightSource> weights, ThreadPool& pool,
            Kernels kernels = Kernels::kReference);
  // Reads config.json and maps the safetensors weights of a model folder; with kFast, also packs
  // them for the fast kernels (WeightSource's packing constructor).
  static GlmMoeDsa load(const std::filesystem::path& dir, ThreadPool& pool,
                        Kernels kernels = Kernels::kReference);
  Kernels kernels() const { return kernels_; }

  const ModelConfig& config() const { return config_; }
  const WeightSource& weights() const { return *weights_; }

  // Checks each sequence against its cache and the context, and looks up the embeddings.
  Batch embed(std::vector<SequenceInput> sequences) const;
  // Decoder layer `layer` with weights `w` (the source's, or a substitute such as a quantized
  // copy) over every row of the batch; appends the layer's cache entries. Layers run in order; a
  // layer may be run again on a copy of its input batch (it overwrites its own cache entries).
  void forward_layer(int64_t layer, const LayerWeights& w, Batch& batch,
                     ForwardObserver* observer = nullptr) const;
  void forward_layer(int64_t layer, Batch& batch, ForwardObserver* observer = nullptr) const {
    forward_layer(layer, weights_->weights().layers[static_cast<size_t>(layer)], batch, observer);
  }
  // The final norm and lm_head: logits [rows, vocab] of every row, or of each sequence's last row.
  std::vector<float> head(const Batch& batch, bool all_rows,
                          ForwardObserver* observer = nullptr) const;
  void head(const Batch& batch, bool all_rows, std::vector<float>& logits,
            ForwardObserver* observer = nullptr) const;
  // Every layer, then head().
  std::vector<float> forward(Batch& batch, bool all_rows,
                             ForwardObserver* observer = nullptr) const;

  // One sequence: `tokens` with the expanded attention form. Returns logits [tokens.size(), vocab]
  // when all_logits, else only the last row [vocab].
  std::vector<float> prefill(std::span<const int32_t> tokens, KvCache& cache,
                             bool all_logits = true, ForwardObserver* observer = nullptr) const;
  // One token with the absorbed attention form. Returns logits [vocab].
  std::vector<float> decode(int32_t token, KvCache& cache,
                            ForwardObserver* observer = nullptr) const;
  // The same into `logits`: once warm (the same model, a cache with room reserved), a decode step
  // allocates no memory (test DecodeAllocations).
  void decode(int32_t token, KvCache& cache, std::vector<float>& logits,
              ForwardObserver* observer = nullptr) const;

 private:
  void linear(const Weight& w, const float* x, int64_t rows, float* y, bool accumulate,
              ForwardObserver* observer) const;
  void attention(int64_t layer, const AttentionWeights& w, Batch& b, const float* a, float* out,
                 ForwardObserver* observer) const;
  // Scores the indexer keys and selects for every new row of every sequence (into the batch's
  // selections); appends this layer's keys to the caches.
  void index(int64_t layer, const IndexerWeights& w, Batch& b, const float* a, const float* q_lat,
             ForwardObserver* observer) const;
  // embed() into a batch whose sequences are set, reusing its memory.
  void embed(Batch& b) const;
  void mlp(const MlpWeights& w, const float* x, int64_t rows, float* out, bool accumulate,
           ForwardObserver* observer) const;
  void moe(int64_t layer, const MoeWeights& w, const float* x, int64_t rows, float* out,
           ForwardObserver* observer) const;
  // The fast path's MoE when every expert is packed int4 (the input quantized once), or dense
  // 16-bit in a decode batch: gate and up of every routed expert and the shared one as one parallel
  // job, their down projections as a second. Adds into `out`; false (nothing done) when the weights
  // or the rows do not allow it.
  bool moe_fast(int64_t layer, const MoeWeights& w, const float* x, int64_t rows,
                const std::vector<std::vector<int64_t>>& expert_rows,
                const std::vector<std::vector<float>>& gate, float* out,
                ForwardObserver* observer) const;

  ModelConfig config_;
  std::shared_ptr<const WeightSource> weights_;
  ThreadPool& pool_;
  Kernels kernels_;
  RopeTable rope_;
  std::vector<int64_t> selection_source_;  // per layer: the full-indexer layer whose keys it uses
};

}  // namespace whittle
