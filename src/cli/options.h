// What several subcommands share: validators that turn a bad option value into a usage error naming
// the option and its range (CLI11's own print DBL_MAX and let NaN through), the --threads option,
// the model folder check that comes before anything else, and the strict --ids parser.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/kv_cache.h"

namespace whittle::cli {

// A finite number >= 0 (temperature). NaN and infinities are refused.
extern const CLI::Validator kFiniteNonNegative;
// A probability mass in (0, 1] (top-p). NaN is refused.
extern const CLI::Validator kProbability;
// An integer >= 1 / >= 0 (window lengths, counts), with a message that states the bound plainly;
// values beyond int64 are refused (CLI11 alone saturates them).
extern const CLI::Validator kPositiveInteger;
extern const CLI::Validator kNonNegativeInteger;
// A random seed: an integer in [0, 2^64 - 1] (CLI11 alone takes -1 as 2^64 - 1).
extern const CLI::Validator kSeed;

// `--threads N`: 0 (the default) means one per core; the value is checked by
// checked_thread_count() at parse time.
CLI::Option* add_threads_option(CLI::App* cmd, int64_t& threads);

// `--reference`: run the reference kernels (every weight converted to float32; the oracle of the
// fast int4 / int8 path, which is the default).
CLI::Option* add_reference_option(CLI::App* cmd, bool& reference);

// `--kv-cache f32|bf16|fp8`: the storage format of the latent KV cache (model/kv_cache.h); f32,
// the default, keeps exactly what the forward computed.
CLI::Option* add_kv_cache_option(CLI::App* cmd, KvDType& dtype);

// Fails unless `dir` is an existing folder holding config.json, so every subcommand blames a wrong
// MODEL argument first, before it reads anything else (tokenizer, eval data).
void require_model_folder(const std::filesystem::path& dir);

// "1,2,3" -> ids. Every entry must be a decimal integer; an empty list or entry ("", "1,,2", "1,")
// is an error, not a silent 0 or a dropped item. Range checks against the vocabulary are the
// caller's.
std::vector<int64_t> parse_id_list(const std::string& text, const std::string& option);

}  // namespace whittle::cli
