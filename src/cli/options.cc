#include "cli/options.h"

#include <fmt/core.h>

#include <charconv>
#include <cmath>
#include <optional>
#include <string_view>

#include "util/error.h"
#include "util/thread_pool.h"

namespace whittle::cli {
namespace fs = std::filesystem;

namespace {

// A validator over a parsed double: `ok` decides, `expected` says what was wanted.
CLI::Validator number_validator(bool (*ok)(double), const char* expected) {
  return CLI::Validator(
      [ok, expected](std::string& text) -> std::string {
        double v = 0.0;
        if (!CLI::detail::lexical_cast(text, v) || !ok(v))
          return fmt::format("must be {}, got '{}'", expected, text);
        return {};
      },
      expected);
}

// The whole of `text` as a decimal integer of type T, else nullopt: unlike CLI11's own conversion
// (strtoll, which saturates), a value out of T's range is refused.
template <typename T>
std::optional<T> parse_integer(std::string_view text) {
  T v{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return v;
}

// The same as number_validator over a parsed 64-bit integer.
CLI::Validator integer_validator(bool (*ok)(int64_t), const char* expected) {
  return CLI::Validator(
      [ok, expected](std::string& text) -> std::string {
        const std::optional<int64_t> v = parse_integer<int64_t>(text);
        if (!v || !ok(*v)) return fmt::format("must be {}, got '{}'", expected, text);
        return {};
      },
      expected);
}

}  // namespace

// `!(x >= 0)` and friends also refuse NaN, which every ordered comparison calls false.
const CLI::Validator kFiniteNonNegative =
    number_validator([](double v) { return std::isfinite(v) && v >= 0.0; }, "a finite number >= 0");
const CLI::Validator kProbability =
    number_validator([](double v) { return v > 0.0 && v <= 1.0; }, "a number in (0, 1]");
const CLI::Validator kPositiveInteger =
    integer_validator([](int64_t v) { return v >= 1; }, "an integer >= 1");
const CLI::Validator kNonNegativeInteger =
    integer_validator([](int64_t v) { return v >= 0; }, "an integer >= 0");
const CLI::Validator kSeed(
    [](std::string& text) -> std::string {
      if (!parse_integer<uint64_t>(text))
        return fmt::format("must be an integer in [0, 2^64 - 1], got '{}'", text);
      return {};
    },
    "SEED");

CLI::Option* add_reference_option(CLI::App* cmd, bool& reference) {
  return cmd->add_flag("--reference", reference,
                       "Run the reference kernels (float32 from every stored format, OpenBLAS): "
                       "the oracle of the default fast path (int4 weights packed at load, int8 "
                       "activations, 16-bit GEMV)");
}

CLI::Option* add_kv_cache_option(CLI::App* cmd, KvDType& dtype) {
  return cmd
      ->add_option_function<std::string>(
          "--kv-cache",
          [&dtype](const std::string& name) {
            // The validator below has refused anything else.
            dtype = parse_kv_dtype(name).value_or(KvDType::kF32);
          },
          "Storage of the latent KV cache: f32 (exact, default), bf16 (half the bytes) or fp8 "
          "(E4M3 latent and indexer keys with a scale per 128 values, bf16 rope key: about a "
          "quarter)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}));
}

CLI::Option* add_threads_option(CLI::App* cmd, int64_t& threads) {
  CLI::Validator check(
      [](std::string& text) -> std::string {
        const std::optional<int64_t> v = parse_integer<int64_t>(text);
        if (!v) return fmt::format("must be an integer, got '{}'", text);
        try {
          checked_thread_count(*v);
        } catch (const Error& e) {
          // CLI11 puts the option's name in front already.
          std::string_view message = e.what();
          if (message.starts_with("--threads ")) message.remove_prefix(10);
          return std::string(message);
        }
        return {};
      },
      "THREADS");
  return cmd->add_option("--threads", threads, "Worker threads (0: one per core)")->check(check);
}

void require_model_folder(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) fail("{}: no such model folder", dir.string());
  if (!fs::is_directory(dir, ec))
    fail("{}: not a folder (MODEL is a Hugging Face model folder)", dir.string());
  if (!fs::exists(dir / "config.json", ec))
    fail("{}: missing config.json (is this a model folder?)", dir.string());
}

std::vector<int64_t> parse_id_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> ids;
  if (text.empty())
    fail("{}: no token ids (expected comma-separated integers such as 1,2,3)", option);
  size_t start = 0;
  for (;;) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string_view item(text.data() + start, end - start);
    if (item.empty()) fail("{}: empty entry at position {} of '{}'", option, ids.size() + 1, text);
    const std::optional<int64_t> id = parse_integer<int64_t>(item);
    if (!id) fail("{}: '{}' is not an integer token id", option, item);
    ids.push_back(*id);
    if (end == text.size()) break;
    start = end + 1;
  }
  return ids;
}

}  // namespace whittle::cli
