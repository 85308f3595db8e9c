// `whittle serve MODEL`: the OpenAI-compatible server (serve/server.h) over the continuous-batching
// engine (serve/engine.h). `whittle chat MODEL`: a terminal chat on the same engine and API code.
#include <fmt/color.h>
#include <fmt/core.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/options.h"
#include "model/glm_moe_dsa.h"
#include "serve/engine.h"
#include "serve/openai_api.h"
#include "serve/server.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace whittle::cli {
namespace {

// What `serve` and `chat` share: the model, its tokenizer and chat template, the engine over them.
struct EngineFlags {
  std::string model;
  int64_t threads = 0, parallel = 4, ctx = 0, queue = 64, prefill_chunk = 512;
  std::string kv_budget;
  bool reference = false;
  KvDType kv_cache = KvDType::kF32;
};

void add_engine_options(CLI::App* cmd, EngineFlags& f) {
  cmd->add_option("MODEL", f.model, "Hugging Face model folder")->required();
  cmd->add_option("--parallel", f.parallel, "Sequences decoded together (the batch)")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("--ctx", f.ctx,
                  "Tokens per sequence, prompt and output together (default: the model's "
                  "max_position_embeddings)")
      ->check(kPositiveInteger);
  cmd->add_option("--kv-budget", f.kv_budget,
                  "Bytes of KV cache for all sequences together, e.g. 8G, 512M (default: "
                  "--parallel sequences of --ctx tokens)");
  cmd->add_option("--queue", f.queue, "Requests that may wait; past that, HTTP 429")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("--prefill-chunk", f.prefill_chunk,
                  "Prompt tokens run per step, so that running streams keep going")
      ->capture_default_str()
      ->check(kPositiveInteger);
  add_threads_option(cmd, f.threads);
  add_reference_option(cmd, f.reference);
  add_kv_cache_option(cmd, f.kv_cache);
}

// "123", "64K", "512M", "8G", "1T" (powers of 1024; a trailing "B" or "iB" is allowed).
size_t parse_bytes(const std::string& text) {
  size_t used = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  if (used == 0 || text[0] == '-')
    fail("--kv-budget: expected a byte count such as 8G or 512M, got '{}'", text);
  if (unit.ends_with("iB"))
    unit.resize(unit.size() - 2);
  else if (unit.ends_with("B") && unit.size() > 1)
    unit.resize(unit.size() - 1);
  int shift = 0;
  if (unit == "K" || unit == "k")
    shift = 10;
  else if (unit == "M")
    shift = 20;
  else if (unit == "G")
    shift = 30;
  else if (unit == "T")
    shift = 40;
  else if (!unit.empty() && unit != "B")
    fail("--kv-budget: unknown unit '{}' in '{}' (expected K, M, G or T)", unit, text);
  if (n == 0 || n > (SIZE_MAX >> shift))
    fail("--kv-budget: expected a positive byte count that fits, got '{}'", text);
  return static_cast<size_t>(n) << shift;
}

struct Loaded {
  explicit Loaded(BpeTokenizer t) : tokenizer(std::move(t)) {}
  BpeTokenizer tokenizer;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<GlmMoeDsa> model;
  ServedModel served;
  std::unique_ptr<Engine> engine;
};

std::unique_ptr<Loaded> load(const EngineFlags& f) {
  require_model_folder(f.model);
  const std::filesystem::path dir(f.model);
  auto l = std::make_unique<Loaded>(BpeTokenizer::load(dir / "tokenizer.json"));
  l->pool = std::make_unique<ThreadPool>(checked_thread_count(f.threads));
  l->model = std::make_unique<GlmMoeDsa>(
      GlmMoeDsa::load(dir, *l->pool, f.reference ? Kernels::kReference : Kernels::kFast));
  const ModelConfig& config = l->model->config();
  if (l->tokenizer.vocab_size() > config.vocab_size)
    fail("{}: tokenizer has {} ids but the model's vocab_size is {}", f.model,
         l->tokenizer.vocab_size(), config.vocab_size);
  ServedModel& s = l->served;
  s.id = std::filesystem::weakly_canonical(dir).filename().string();
  s.tokenizer = &l->tokenizer;
  try {
    s.chat_template = Glm5ChatTemplate::load(dir);
  } catch (const Error& e) {
    fmt::print(stderr, "whittle: warning: {}; /v1/chat/completions will answer 400\n", e.what());
  }
  s.defaults = generation_defaults(config);
  s.stop_ids = config.eos_token_ids;
  s.created = static_cast<int64_t>(std::time(nullptr));
  EngineOptions o{.parallel = f.parallel,
                  .max_waiting = f.queue,
                  .ctx = f.ctx,
                  .kv_budget = f.kv_budget.empty() ? 0 : parse_bytes(f.kv_budget),
                  .kv_dtype = f.kv_cache,
                  .prefill_chunk = f.prefill_chunk,
                  .sample_vocab = l->tokenizer.vocab_size()};
  if (f.ctx > config.max_position_embeddings)
    fail("--ctx {} is past the model's context of {} tokens (max_position_embeddings)", f.ctx,
         config.max_position_embeddings);
  l->engine = std::make_unique<Engine>(*l->model, o);
  return l;
}

int g_stop_pipe[2] = {-1, -1};

void on_stop_signal(int sig) {
  const char c = static_cast<char>(sig);
  [[maybe_unused]] ssize_t n = write(g_stop_pipe[1], &c, 1);  // async-signal-safe
}

}  // namespace

Command add_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  auto f = std::make_shared<EngineFlags>();
  auto o = std::make_shared<ServerOptions>();
  add_engine_options(cmd, *f);
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on (0: any free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/ requests (also read from "
                  "WHITTLE_API_KEY)")
      ->envname("WHITTLE_API_KEY");
  return [=] {
    // SIGTERM and SIGINT wake one thread that stops the server, through a pipe (the handler may
    // run on any thread, OpenBLAS's own among them, so a signal mask cannot route it).
    if (pipe(g_stop_pipe) != 0) fail("serve: cannot make a pipe for the signal handler");
    struct sigaction action = {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    signal(SIGPIPE, SIG_IGN);

    std::unique_ptr<Loaded> l = load(*f);
    Server server(*l->engine, l->served, *o);
    server.bind();
    const Engine::Stats stats = l->engine->stats();
    fmt::print(stderr,
               "whittle serve: {} | context {} tokens | {} parallel | KV budget {:.1f} MiB ({} "
               "per token) | listening on http://{}:{}\n",
               l->served.id, l->engine->ctx(), l->engine->options().parallel,
               stats.kv_budget / 1048576.0,
               KvCache::bytes_per_token(l->model->config(), f->kv_cache), o->host, server.port());
    std::thread stopper([&] {
      char sig = 0;
      while (read(g_stop_pipe[0], &sig, 1) < 0 && errno == EINTR) {
      }
      if (sig != 0)
        fmt::print(stderr, "whittle serve: {}: cancelling running requests and stopping\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      l->engine->stop(/*cancel=*/true);
      server.stop();
    });
    server.serve();
    // The listener ended by itself (not through a signal): wake the stopper so it can end.
    const char none = 0;
    if (write(g_stop_pipe[1], &none, 1) != 1) l->engine->stop(/*cancel=*/true);
    stopper.join();
    fmt::print(stderr, "whittle serve: stopped\n");
    return 0;
  };
}

Command add_chat(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "chat", "Chat with a model in the terminal (/reset starts over, /exit or Ctrl-D ends)");
  auto f = std::make_shared<EngineFlags>();
  auto think = std::make_shared<bool>(false);
  auto show_thinking = std::make_shared<bool>(true);
  auto max_tokens = std::make_shared<int64_t>(0);
  add_engine_options(cmd, *f);
  cmd->add_flag("--think", *think, "Let the model think first (<think>); default off");
  cmd->add_flag("!--hide-thinking", *show_thinking, "With --think: do not print the thinking");
  cmd->add_option("-n,--max-tokens", *max_tokens,
                  "Maximum new tokens per answer (default: generation_config.json's)")
      ->check(kPositiveInteger);
  return [=] {
    EngineFlags flags = *f;
    flags.parallel = 1;
    std::unique_ptr<Loaded> l = load(flags);
    if (!l->served.chat_template) fail("{}: no chat template whittle can render", f->model);
    const bool tty = isatty(fileno(stdout));
    fmt::print(stderr, "whittle chat: {} (/reset starts over, /exit or Ctrl-D ends)\n",
               l->served.id);
    nlohmann::ordered_json history = nlohmann::ordered_json::array();
    std::string line;
    while (true) {
      fmt::print("> ");
      std::fflush(stdout);
      if (!std::getline(std::cin, line) || line == "/exit") break;
      if (line == "/reset") {
        history = nlohmann::ordered_json::array();
        fmt::print("(history cleared)\n");
        continue;
      }
      if (line.empty()) continue;
      history.push_back({{"role", "user"}, {"content", line}});
      OpenAiRequest r;
      r.messages = history;
      r.enable_thinking = *think;
      if (*max_tokens > 0) r.max_tokens = *max_tokens;
      PreparedRequest p;
      try {
        p = prepare_request(std::move(r), l->served, l->engine->ctx());
      } catch (const RequestError& e) {
        fmt::print(stderr, "whittle chat: {} (/reset starts over)\n", e.what());
        history.erase(history.end() - 1);
        continue;
      }
      std::shared_ptr<Stream> stream;
      try {
        stream = l->engine->submit(p.job);
      } catch (const RequestError& e) {
        fmt::print(stderr, "whittle chat: {} (/reset starts over)\n", e.what());
        history.erase(history.end() - 1);
        continue;
      }
      p.request.stream = true;
      Response answer(std::move(p), stream, l->served);
      nlohmann::ordered_json message{{"role", "assistant"}, {"content", ""}};
      std::string reasoning;
      while (!answer.done()) {
        for (const nlohmann::ordered_json& chunk :
             answer.next_chunks(std::chrono::milliseconds(100))) {
          if (chunk.contains("error")) {
            fmt::print(stderr, "\nwhittle chat: {}\n", chunk["error"]["message"].dump());
            continue;
          }
          if (chunk["choices"].empty()) continue;
          const auto& delta = chunk["choices"][0]["delta"];
          if (delta.contains("reasoning_content")) {
            const std::string s = delta["reasoning_content"];
            reasoning += s;
            if (*show_thinking) {
              if (tty)
                fmt::print(fmt::emphasis::faint, "{}", s);
              else
                fmt::print("{}", s);
            }
          }
          if (delta.contains("content")) {
            const std::string s = delta["content"];
            if (!reasoning.empty() && message["content"] == "" && !s.empty() && *show_thinking)
              fmt::print("\n");
            message["content"] = message["content"].get<std::string>() + s;
            fmt::print("{}", s);
          }
          if (delta.contains("tool_calls")) fmt::print("{}", delta["tool_calls"].dump());
        }
        std::fflush(stdout);
      }
      fmt::print("\n");
      if (!reasoning.empty()) message["reasoning_content"] = reasoning;
      history.push_back(message);
    }
    l->engine->stop(/*cancel=*/true);
    return 0;
  };
}

}  // namespace whittle::cli
