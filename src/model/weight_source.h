// WeightSource: where a model's weights come from, one decoder layer at a time. It owns the mapped
// checkpoint (io/safetensors TensorStore) and the views bound into it (model/weights.h); nothing
// is read until a kernel touches it. Passes over a model larger than RAM run layer-major:
//   const LayerWeights& w = source.acquire(L);  source.prefetch(L + 1);
//   ... every sequence through layer L ...
//   source.release(L);
// acquire/prefetch ask the kernel to read the layer's pages ahead (MADV_WILLNEED); release drops
// them from the process (MADV_DONTNEED: the mapping is private and read-only, so they stay in the
// page cache and read back unchanged), which keeps one layer's weights resident instead of all.
// The source is immutable after construction: any number of threads may read it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace whittle {

class ThreadPool;

class WeightSource {
 public:
  // Maps the safetensors of a model folder and binds every tensor the config needs (shapes and
  // formats are checked here, before anything runs).
  WeightSource(const std::filesystem::path& dir, const ModelConfig& config);
  // The same, with every Linear made ready for the fast kernels (ops/linear.h, linear_fast) on the
  // pool: GPTQ int4 weights repacked (tensor/packed_int4.h; ~the checkpoint's size in anonymous
  // memory), and kv_b_proj, which absorbed MLA attention reads per head, half of it transposed, on
  // every decoded token: a symmetric int4 kv_b also gets W_UK transposed as int4 (AbsorbedKvB),
  // any other is converted to float32 once. Layer by layer, each layer's mapped
  // pages released once packed. For serving: the whole model stays in memory.
  WeightSource(const std::filesystem::path& dir, const ModelConfig& config, ThreadPool& pack_pool);
  // Weights that live elsewhere (owned buffers in tests): acquire and release give no advice.
  explicit WeightSource(ModelWeights weights);

  const ModelWeights& weights() const { return weights_; }
  // The mapped checkpoint (every tensor, by name); an Error for owned weights.
  const TensorStore& store() const;
  const LayerWeights& acquire(int64_t layer) const;
  void prefetch(int64_t layer) const;
  void release(int64_t layer) const;
  // Bytes a layer's weights occupy in the files (what acquire brings in).
  size_t layer_bytes(int64_t layer) const;

 private:
  void advise(int64_t layer, MemoryAdvice advice) const;

  std::unique_ptr<TensorStore> store_;  // null for owned weights; views point into its mappings
  ModelWeights weights_;
};

}  // namespace whittle
