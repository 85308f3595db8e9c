// `whittle bench MODEL`: how fast this machine runs a model, against what its memory allows. It
// measures the read bandwidth itself (before loading and again after decode; the faster probe is
// the ceiling), then prefill (tokens/s over --prompt-tokens random ids) and
// greedy decode (tokens/s over --gen-tokens), counting the bytes of weights every decoded token
// read with the routing actually taken. Decode is bound by memory bandwidth, so the ratio of the
// achieved GB/s to the measured bandwidth says how close to the limit the kernels run.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli/commands.h"
#include "cli/options.h"
#include "model/glm_moe_dsa.h"
#include "ops/cpu_isa.h"
#include "ops/linear.h"
#include "ops/matmul.h"
#include "ops/memory_bandwidth.h"
#include "tensor/packed_int4.h"
#include "util/error.h"

namespace whittle::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Sums the bytes of weights each Linear call reads (routed experts only: the observer sees the
// calls the routing made).
class WeightTraffic : public ForwardObserver {
 public:
  void linear_input(const Weight& w, const float*, int64_t) override {
    bytes += linear_fast_bytes(w);
  }
  size_t bytes = 0;
};

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown CPU";
}

int32_t argmax(const std::vector<float>& v, int64_t n) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.begin() + n) - v.begin());
}

}  // namespace

Command add_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench",
      "Measure memory bandwidth, prefill and decode speed, and decode's share of the "
      "bandwidth");
  struct Options {
    std::string model;
    int64_t prompt_tokens = 512, gen_tokens = 128, threads = 0;
    uint64_t seed = 0;
    bool json = false, reference = false;
    KvDType kv_cache = KvDType::kF32;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("--prompt-tokens", o->prompt_tokens, "Prompt length for prefill (random ids)")
      ->check(kPositiveInteger);
  cmd->add_option("--gen-tokens", o->gen_tokens, "Tokens decoded greedily after the prompt")
      ->check(kPositiveInteger);
  cmd->add_option("--seed", o->seed, "Seed of the random prompt")->check(kSeed);
  cmd->add_flag("--json", o->json, "Print the results as one JSON object");
  add_threads_option(cmd, o->threads);
  add_reference_option(cmd, o->reference);
  add_kv_cache_option(cmd, o->kv_cache);
  return [=] {
    require_model_folder(o->model);
    {
      const ModelConfig config = ModelConfig::load(o->model);  // refuse before measuring anything
      if (o->prompt_tokens + o->gen_tokens > config.max_position_embeddings)
        fail(
            "--prompt-tokens {} + --gen-tokens {} exceed the model's context of {} "
            "(max_position_embeddings)",
            o->prompt_tokens, o->gen_tokens, config.max_position_embeddings);
    }
    const size_t threads = checked_thread_count(o->threads);
    ThreadPool pool(threads);
    auto say = [&](const std::string& text) { fmt::print(stderr, "[bench] {}\n", text); };

    say(fmt::format("{} threads, kernels {}; measuring read bandwidth (1 GiB, 7 passes)", threads,
                    o->reference ? "reference" : isa_name(active_isa())));
    const Bandwidth before = measure_read_bandwidth(pool);
    say(fmt::format("read bandwidth {:.1f} GB/s (median {:.1f})", before.best_gbs,
                    before.median_gbs));

    const auto t_load = Clock::now();
    GlmMoeDsa model =
        GlmMoeDsa::load(o->model, pool, o->reference ? Kernels::kReference : Kernels::kFast);
    const double load_s = seconds_since(t_load);
    const ModelConfig& config = model.config();
    size_t packed_bytes = 0, weight_bytes = 0;
    auto count = [&](const Weight& w) {
      weight_bytes += linear_fast_bytes(w);
      if (w.packed()) packed_bytes += w.packed()->bytes();
    };
    for (const LayerWeights& layer : model.weights().weights().layers) layer.for_each_linear(count);
    count(model.weights().weights().lm_head);
    say(fmt::format("loaded in {:.1f} s ({:.2f} GB of Linear weights, {:.2f} GB packed int4)",
                    load_s, weight_bytes / 1e9, packed_bytes / 1e9));

    std::mt19937_64 rng(o->seed);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(config.vocab_size - 1));
    std::vector<int32_t> prompt(static_cast<size_t>(o->prompt_tokens));
    for (int32_t& t : prompt) t = id(rng);

    // Warm-up, as llama-bench's: touches the mapped 16-bit weights and the pool, and runs one
    // prefill of the timed length, so that the timed one finds its working buffers already
    // faulted in (a first 512-token prefill spends ~9 % of its time clearing fresh pages).
    say("warm-up");
    {
      KvCache warm(config, o->kv_cache);
      for (int i = 0; i < 2; ++i) model.decode(prompt[static_cast<size_t>(i)], warm);
      KvCache again(config, o->kv_cache);
      model.prefill(prompt, again, false);
    }

    say(fmt::format("prefill {} tokens", o->prompt_tokens));
    KvCache cache(config, o->kv_cache);
    const auto t_prefill = Clock::now();
    std::vector<float> logits = model.prefill(prompt, cache, /*all_logits=*/false);
    const double prefill_s = seconds_since(t_prefill);

    say(fmt::format("decode {} tokens", o->gen_tokens));
    WeightTraffic traffic;
    const size_t embed_row = static_cast<size_t>(config.hidden_size) *
                             dtype_size(model.weights().weights().embed_tokens.dtype());
    int32_t next = argmax(logits, config.vocab_size);
    const auto t_decode = Clock::now();
    for (int64_t i = 0; i < o->gen_tokens; ++i) {
      logits = model.decode(next, cache, &traffic);
      traffic.bytes += embed_row;
      next = argmax(logits, config.vocab_size);
    }
    const double decode_s = seconds_since(t_decode);

    // Measured again after decode, and the faster of the two is the ceiling: on a shared machine
    // one probe of ~2 s can fall in a slow phase (a VM here once read 17 GB/s against 29-32 in the
    // runs around it), which would flatter decode's ratio.
    say("measuring read bandwidth again");
    const Bandwidth after = measure_read_bandwidth(pool);
    say(fmt::format("read bandwidth {:.1f} GB/s (median {:.1f})", after.best_gbs,
                    after.median_gbs));
    const double bw_gbs = std::max(before.best_gbs, after.best_gbs);

    const double prefill_tps = o->prompt_tokens / prefill_s, decode_tps = o->gen_tokens / decode_s;
    const double bytes_per_token = static_cast<double>(traffic.bytes) / o->gen_tokens;
    const double gbs = traffic.bytes / decode_s / 1e9;
    nlohmann::ordered_json j = {
        {"model", o->model},
        {"cpu", cpu_name()},
        {"cores", std::thread::hardware_concurrency()},
        {"threads", threads},
        {"kernels", o->reference ? std::string("reference") : std::string(isa_name(active_isa()))},
        {"openblas_core", openblas_core()},
        {"bandwidth_gbs", bw_gbs},
        {"bandwidth_before_gbs", before.best_gbs},
        {"bandwidth_after_gbs", after.best_gbs},
        {"bandwidth_median_before_gbs", before.median_gbs},
        {"bandwidth_median_after_gbs", after.median_gbs},
        {"load_seconds", load_s},
        {"linear_weight_bytes", weight_bytes},
        {"packed_int4_bytes", packed_bytes},
        {"prompt_tokens", o->prompt_tokens},
        {"prefill_seconds", prefill_s},
        {"prefill_tokens_per_s", prefill_tps},
        {"gen_tokens", o->gen_tokens},
        {"decode_seconds", decode_s},
        {"decode_tokens_per_s", decode_tps},
        {"weight_bytes_per_token", bytes_per_token},
        {"decode_gbs", gbs},
        {"decode_bandwidth_ratio", gbs / bw_gbs},
        {"kv_cache", kv_dtype_name(o->kv_cache)},
        {"kv_cache_bytes", cache.bytes()},
    };
    if (o->json) {
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    fmt::print("model      {}\n", o->model);
    fmt::print("machine    {}, {} cores; {} threads; kernels {}, OpenBLAS {}\n", cpu_name(),
               std::thread::hardware_concurrency(), threads, j["kernels"].get<std::string>(),
               openblas_core());
    fmt::print(
        "bandwidth  {:.1f} GB/s read (the faster of two probes of 7 passes: {:.1f} before the "
        "load, "
        "{:.1f} after decode; medians {:.1f}, {:.1f})\n",
        bw_gbs, before.best_gbs, after.best_gbs, before.median_gbs, after.median_gbs);
    fmt::print("load       {:.1f} s ({:.2f} GB Linear weights, {:.2f} GB packed int4)\n", load_s,
               weight_bytes / 1e9, packed_bytes / 1e9);
    fmt::print("prefill    {} tokens in {:.2f} s = {:.1f} tokens/s\n", o->prompt_tokens, prefill_s,
               prefill_tps);
    fmt::print("decode     {} tokens in {:.2f} s = {:.2f} tokens/s (after {} cached)\n",
               o->gen_tokens, decode_s, decode_tps, o->prompt_tokens);
    fmt::print(
        "traffic    {:.1f} MB of weights per token = {:.1f} GB/s = {:.0f} % of the measured "
        "bandwidth\n",
        bytes_per_token / 1e6, gbs, 100.0 * gbs / bw_gbs);
    fmt::print("kv cache   {}, {:.1f} MB for {} tokens ({} bytes per token in all layers)\n",
               kv_dtype_name(o->kv_cache), cache.bytes() / 1e6, cache.length(),
               KvCache::bytes_per_token(config, o->kv_cache));
    return 0;
  };
}

}  // namespace whittle::cli
