// Pieces every checkpoint rewriter shares (expert pruning, quantization): layer names, the JSON
// files of a Hugging Face folder, shard sizes, dropping a copied tensor's pages, the side files
// (tokenizer, chat template, ...) and the note on top of a model card.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace whittle {

class SafeTensorsFile;
class TensorStore;

inline constexpr std::string_view kLayerPrefix = "model.layers.";
inline constexpr std::string_view kSafetensorsIndex = "model.safetensors.index.json";

// "<digits>" at the start of `s` (no sign); nullopt when there are none. *used: digits read.
std::optional<int64_t> leading_int(std::string_view s, size_t* used);
// `model.layers.L.<rest>` -> (L, rest).
std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view name);

// A JSON file (config.json, quantization_config.json) with its key order; an Error naming it when
// it is not valid JSON.
nlohmann::ordered_json read_json_file(const std::filesystem::path& path);
// transformers' layout: json.dumps(..., indent=2) + "\n" (ensure_ascii).
std::string dump_hf_json(const nlohmann::ordered_json& j);

// Largest tensor bytes per output shard that keeps a checkpoint shaped like `store`: one file stays
// one file; a sharded input's largest shard bounds every output shard.
uint64_t shard_bytes_like(const TensorStore& store);

// Drops the pages of a tensor just copied from `file` (and the 2 MiB before it, which a fault's
// read-around maps: everything before it in the file is done), so that a streaming copy keeps only
// what it is working on resident. The pages stay in the page cache.
void drop_copied_pages(const SafeTensorsFile& file, std::span<const std::byte> bytes);

// Copies every regular file of `in` into `out` except the checkpoint itself (config.json, the
// safetensors and their index) and those `skip` names.
void copy_side_files(const std::filesystem::path& in, const std::filesystem::path& out,
                     const std::function<bool(const std::string&)>& skip);

// A model card with `note` at the top of its text: after the YAML front matter (`---` ... `---`)
// that Hugging Face model cards may start with, which must stay first.
std::string card_with_note(const std::string& card, const std::string& note);

}  // namespace whittle
