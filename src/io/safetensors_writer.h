// SafeTensorsWriter: streams tensors into a Hugging Face checkpoint folder, sharded the way
// huggingface_hub/transformers shard (`model-00001-of-0000N.safetensors` +
// `model.safetensors.index.json`, or a single `model.safetensors`). Each shard's bytes are
// byte-identical to what Python `safetensors.torch.save_file(tensors, path, metadata)` 0.8.0 writes
// for the same tensors. The order added decides which shard a tensor lands in; inside a shard the
// tensors are laid out as safetensors lays them out (by dtype, widest first, then by name), because
// the format forbids gaps and that order is what keeps every tensor aligned to its element size.
//
// Memory: the writer holds no tensor data. Each add() appends the bytes to an unlinked scratch file
// in the output folder; when a shard closes, its header is written and the bytes are copied from
// the scratch file through a 4 MiB buffer. So the bound is one tensor's bytes (the caller's span)
// plus 4 MiB plus the names/shapes; the price is scratch disk of up to one shard and a second write
// of it.
//
// Atomicity: shards are staged under names that are neither `*.safetensors` nor final, and only
// finish() renames them (then writes the index). An exception or a writer destroyed without
// finish() removes everything it wrote; no final-named file appears until the checkpoint is
// complete.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/dtype.h"

namespace whittle {

class SafeTensorsWriter {
 public:
  // Creates `out_dir` if needed. Refuses a folder that already holds `model.safetensors`,
  // `model-*-of-*.safetensors` or `model.safetensors.index.json`, so two checkpoints never mix.
  // `metadata` goes into every shard's `__metadata__`; "format": "pt" is added when absent, as
  // transformers expects it. A shard closes before a tensor that would take it past
  // `max_shard_bytes` of tensor data; a tensor larger than that gets a shard of its own (as
  // huggingface_hub does).
  SafeTensorsWriter(std::filesystem::path out_dir, uint64_t max_shard_bytes,
                    std::map<std::string, std::string> metadata = {});
  ~SafeTensorsWriter();
  SafeTensorsWriter(const SafeTensorsWriter&) = delete;
  SafeTensorsWriter& operator=(const SafeTensorsWriter&) = delete;

  // Appends one tensor (little-endian bytes, C order). Throws Error naming the tensor when the
  // byte count is not product(shape) x dtype size, a dimension is negative or the shape overflows,
  // or the name is empty, not UTF-8, "__metadata__" or already added. Such a refusal leaves the
  // writer usable; an I/O failure does not.
  void add(std::string_view name, DType dtype, std::span<const int64_t> shape,
           std::span<const std::byte> bytes);
  void add(std::string_view name, DType dtype, std::initializer_list<int64_t> shape,
           std::span<const std::byte> bytes) {
    add(name, dtype, std::span<const int64_t>(shape.begin(), shape.size()), bytes);
  }

  // Closes the last shard, renames every shard to its final name and writes the index when there is
  // more than one shard. Returns the files written (shards in order, then the index). With no
  // tensors added it writes a `model.safetensors` holding only the metadata.
  std::vector<std::filesystem::path> finish();

  size_t tensor_count() const { return names_.size(); }
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t scratch_offset;  // where its bytes start in the shard's scratch file
    uint64_t nbytes;
  };
  // One shard being filled: its tensors and the unlinked scratch file holding their bytes.
  struct OpenShard {
    std::vector<PendingTensor> tensors;
    uint64_t nbytes = 0;
    std::FILE* scratch = nullptr;
  };

  void open_shard(OpenShard& shard);
  void append(OpenShard& shard, PendingTensor tensor, std::span<const std::byte> bytes);
  // Writes the shard under a staging name and records it; the shard is reset.
  void close_shard(OpenShard& shard);
  void discard(OpenShard& shard);
  std::string header_json(std::vector<PendingTensor>& tensors) const;
  void remove_staged();

  std::filesystem::path out_dir_;
  std::string staging_tag_;  // random: staged names nobody can plant anything at ahead of time
  uint64_t max_shard_bytes_;
  std::map<std::string, std::string> metadata_;
  OpenShard current_;
  std::vector<std::filesystem::path> staged_;           // closed shards, in shard order
  std::vector<std::vector<std::string>> staged_names_;  // the tensors of each closed shard
  std::set<std::string, std::less<>> names_;
  uint64_t total_bytes_ = 0;
  bool failed_ = false, finished_ = false;
};

}  // namespace whittle
