// whittle_serve_load: a bounded load test of `whittle serve` on loopback. It starts the server in
// process on a free 127.0.0.1 port (the same Engine and Server the CLI runs), sends one warm-up
// request (every weight's pages touched; not reported), then
//   1. one stream:  `--requests1` completions one after another,
//   2. N streams:   N clients at once (--streams, default 8), one request each, same lengths, other
//                   prompts (nothing cached by phase 1),
//   3. the load:    --clients concurrent clients (default 32) sending --total requests in all with
//                   prompt lengths mixed from a few to --max-prompt tokens,
// and prints for each: requests/s, generated tokens/s (all tokens over the wall time), decode
// tokens/s (the engine's batched decode steps alone: the prompts run each in a pass of its own),
// time to the first token, latency percentiles and failures; then the ratios of phase 2's rates to
// phase 1's. Requests are streamed (server-sent events) to time the first token. It stops by
// itself: fixed request counts, each with a 600 s read timeout (a request that times out counts as
// failed). Exit status 1 when any request failed.
#include <httplib.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <cstdlib>

#include "model/glm_moe_dsa.h"
#include "ops/matmul.h"
#include "serve/engine.h"
#include "serve/openai_api.h"
#include "serve/server.h"
#include "tokenizer/bpe_tokenizer.h"
#include "util/thread_pool.h"

using namespace whittle;
using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

namespace {

struct Outcome {
  bool ok = false;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double seconds = 0, first_token = -1;  // the whole request, its first token
};

struct PhaseResult {
  std::string name;
  int clients = 0;
  std::vector<Outcome> outcomes;
  double wall = 0;
};

// One streamed completion, timed to its first token and to its end.
Outcome complete(int port, const std::string& prompt, int64_t max_tokens, uint64_t seed) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(600, 0);
  const ojson body{{"prompt", prompt},   {"max_tokens", max_tokens},
                   {"temperature", 0.8}, {"seed", seed},
                   {"stream", true},     {"stream_options", {{"include_usage", true}}}};
  const auto t0 = Clock::now();
  const auto since = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  Outcome o;
  bool done = false;
  std::string buffer;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      if (event == "data: [DONE]") {
        done = true;
        continue;
      }
      const ojson j = ojson::parse(event.substr(6), nullptr, false);
      if (j.is_discarded()) return false;
      if (o.first_token < 0 && j.contains("choices") && !j["choices"].empty())
        o.first_token = since();
      if (j.contains("usage") && j["usage"].is_object()) {
        o.prompt_tokens = j["usage"]["prompt_tokens"];
        o.completion_tokens = j["usage"]["completion_tokens"];
      }
    }
    return true;
  };
  const httplib::Result r = client.send(req);
  o.seconds = since();
  if (!r || r->status != 200 || !done || o.first_token < 0) {
    fmt::print(stderr, "request failed: {}\n",
               r ? fmt::format("HTTP {} {}", r->status, r->status == 200 ? "(no [DONE])" : r->body)
                 : httplib::to_string(r.error()));
    return o;
  }
  o.ok = true;
  return o;
}

// `clients` threads take requests from a shared list until it is empty.
PhaseResult run_phase(std::string name, int port, int clients,
                      const std::vector<std::pair<std::string, int64_t>>& requests) {
  PhaseResult p{std::move(name), clients, std::vector<Outcome>(requests.size()), 0};
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < requests.size();)
        p.outcomes[i] = complete(port, requests[i].first, requests[i].second, i + 1);
    });
  for (auto& t : threads) t.join();
  p.wall = std::chrono::duration<double>(Clock::now() - t0).count();
  return p;
}

struct Rates {
  double generated = -1, decode = -1;  // -1: some request failed
};

// Generated tokens/s: all the phase's tokens over its wall time (queue, prompts and all). Decode
// tokens/s: the tokens of the engine's batched decode steps over those steps' time (`before` and
// `after` are the engine's counters around the phase): what batching multiplies, without the
// prompts, which run each in a forward pass of its own (serve/engine.cc).
Rates report(const PhaseResult& p, const Engine::Stats& before, const Engine::Stats& after) {
  int64_t failed = 0, prompt = 0, completion = 0;
  std::vector<double> latency, first_token;
  for (const Outcome& o : p.outcomes) {
    if (!o.ok) {
      ++failed;
      continue;
    }
    prompt += o.prompt_tokens;
    completion += o.completion_tokens;
    latency.push_back(o.seconds);
    first_token.push_back(o.first_token);
  }
  const auto pct = [](std::vector<double>& v, double q) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, size_t(q * v.size()))];
  };
  const int64_t steps = after.decode_steps - before.decode_steps;
  const int64_t decoded = after.decoded_tokens - before.decoded_tokens;
  const double seconds = after.decode_seconds - before.decode_seconds;
  const Rates r{completion / p.wall, seconds > 0 ? decoded / seconds : 0};
  fmt::print(
      "| {} | {} | {} | {} | {:.1f} | {:.2f} | {:.1f} | {:.1f} | {:.1f} ({:.1f} rows, {:.1f} ms) | "
      "{:.2f} | {:.2f} / {:.2f} / {:.2f} |\n",
      p.name, p.clients, p.outcomes.size(), failed, p.wall, p.outcomes.size() / p.wall,
      prompt / p.wall, r.generated, r.decode, steps > 0 ? double(decoded) / steps : 0.0,
      steps > 0 ? 1e3 * seconds / steps : 0.0, pct(first_token, 0.5), pct(latency, 0.5),
      pct(latency, 0.95), pct(latency, 1.0));
  return failed > 0 ? Rates{} : r;
}

}  // namespace

int main(int argc, char** argv) {
  // As the whittle binary does (cli/main.cc): OpenBLAS's best kernels for this CPU.
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    if (const char* core = openblas_better_core()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      execv("/proc/self/exe", argv);
    }
  }
  CLI::App app{"Bounded load test of whittle serve on loopback"};
  std::string model_dir;
  int64_t threads = 0, parallel = 8, streams = 8, clients = 32, total = 96, requests1 = 4,
          max_tokens = 64, max_prompt = 1024;
  app.add_option("MODEL", model_dir, "model folder")->required();
  app.add_option("--threads", threads, "compute threads (0: one per core)");
  app.add_option("--parallel", parallel, "the server's --parallel")->capture_default_str();
  app.add_option("--streams", streams, "phase 2's concurrent streams")->capture_default_str();
  app.add_option("--clients", clients, "phase 3's concurrent clients")->capture_default_str();
  app.add_option("--total", total, "phase 3's requests")->capture_default_str();
  app.add_option("--requests1", requests1, "phase 1's requests")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "new tokens per request")->capture_default_str();
  app.add_option("--max-prompt", max_prompt, "longest phase-3 prompt, tokens")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::filesystem::path dir(model_dir);
  BpeTokenizer tokenizer = BpeTokenizer::load(dir / "tokenizer.json");
  ThreadPool pool(checked_thread_count(threads));
  GlmMoeDsa model = GlmMoeDsa::load(dir, pool, Kernels::kFast);
  ServedModel served{.id = dir.filename().string(), .tokenizer = &tokenizer};
  served.defaults = generation_defaults(model.config());
  served.stop_ids = model.config().eos_token_ids;
  Engine engine(
      model,
      {.parallel = parallel, .max_waiting = clients + 8, .sample_vocab = tokenizer.vocab_size()});
  Server server(engine, served, {.port = 0});
  server.bind();
  std::thread http([&] { server.serve(); });

  // Prompts: pieces of a text file of the model's own kind (its calibration text when present).
  std::string text;
  for (const char* name : {"calibration.txt", "README.md"}) {
    std::ifstream in(dir / name);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
      break;
    }
  }
  const std::vector<int32_t> ids = tokenizer.encode(text.empty() ? "hello world" : text);
  std::mt19937_64 rng(1);
  const auto prompt_of = [&](int64_t n) {
    n = std::max<int64_t>(1, std::min<int64_t>(n, static_cast<int64_t>(ids.size())));
    const size_t at = std::uniform_int_distribution<size_t>(0, ids.size() - n)(rng);
    return tokenizer.decode(std::span<const int32_t>(ids).subspan(at, n), true);
  };
  fmt::print(
      "model {}, {} compute threads, --parallel {}, {} new tokens per request "
      "(temperature 0.8, ignore_eos)\n\n",
      served.id, pool.size(), parallel, max_tokens);
  fmt::print(
      "| phase | clients | requests | failed | wall s | requests/s | prompt tok/s | "
      "generated tok/s | decode tok/s (rows, ms per step) | first token p50 s | latency p50 / p95 "
      "/ "
      "max s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  // Each phase its own prompts (no prefix cached by an earlier phase), after one request that
  // touches every weight's pages first (not reported).
  const auto short_requests = [&](int64_t n) {
    std::vector<std::pair<std::string, int64_t>> out;
    for (int64_t i = 0; i < n; ++i) out.emplace_back(prompt_of(16), max_tokens);
    return out;
  };
  run_phase("warm-up", server.port(), 1, {{prompt_of(16), 2}});
  // A phase, reported with the engine's counters around it.
  const auto phase = [&](std::string name, int n_clients,
                         const std::vector<std::pair<std::string, int64_t>>& requests) {
    const Engine::Stats before = engine.stats();
    PhaseResult p = run_phase(std::move(name), server.port(), n_clients, requests);
    return report(p, before, engine.stats());
  };
  const Rates one = phase("1 stream", 1, short_requests(requests1));
  const Rates many =
      phase(fmt::format("{} streams", streams), static_cast<int>(streams), short_requests(streams));
  std::vector<std::pair<std::string, int64_t>> mixed;
  for (int64_t i = 0; i < total; ++i) {
    // Log-uniform lengths: many short prompts, some long ones.
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    mixed.emplace_back(prompt_of(static_cast<int64_t>(std::exp(u * std::log(max_prompt)))),
                       max_tokens);
  }
  const Rates load =
      phase(fmt::format("{} clients, mixed prompts", clients), static_cast<int>(clients), mixed);
  const Engine::Stats s = engine.stats();
  fmt::print(
      "\n{} streams / 1 stream: decode tokens/s {:.2f}x, generated tokens/s {:.2f}x; engine "
      "steps {}, prefix hits {} ({} tokens reused)\n",
      streams, many.decode / one.decode, many.generated / one.generated, s.steps, s.prefix_hits,
      s.reused_tokens);
  engine.stop(true);
  server.stop();
  http.join();
  return one.generated < 0 || many.generated < 0 || load.generated < 0 ? 1 : 0;
}
