// `whittle generate MODEL -p TEXT`: encode, then run the shared generation loop
// (serve/generation.h: prefill, then sample and decode token by token from the latent cache);
// streams complete UTF-8 characters to stdout as they are made and stops at max tokens or one of
// the model's EOS ids.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "model/glm_moe_dsa.h"
#include "serve/generation.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace whittle::cli {

Command add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (streams to stdout)");
  struct Options {
    std::string model, prompt;
    int64_t max_tokens = 0, threads = 0;
    bool reference = false;
    KvDType kv_cache = KvDType::kF32;
    SamplingParams sampling;
    bool quiet = false, chat = false, think = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("-p,--prompt", o->prompt,
                  "Prompt text (special tokens such as [gMASK] are recognised)")
      ->required();
  // Sampling and length default to the model's generation_config.json (generation_defaults()).
  auto* max_tokens =
      cmd->add_option("-n,--max-tokens", o->max_tokens,
                      "Maximum number of new tokens (default: generation_config.json's "
                      "max_new_tokens, else 128)")
          ->check(kNonNegativeInteger);
  auto* temperature =
      cmd->add_option("-t,--temperature", o->sampling.temperature,
                      "Sampling temperature, 0 = greedy (default: generation_config.json's "
                      "when its do_sample is true, else 0)")
          ->check(kFiniteNonNegative);
  auto* top_p =
      cmd->add_option("--top-p", o->sampling.top_p,
                      "Nucleus sampling mass in (0, 1] (default: generation_config.json's, else 1)")
          ->check(kProbability);
  auto* top_k =
      cmd->add_option(
             "--top-k", o->sampling.top_k,
             "Keep only the k most likely tokens, 0 = off (default: generation_config.json's, "
             "else 0)")
          ->check(kNonNegativeInteger);
  cmd->add_option("--seed", o->sampling.seed, "Random seed")->capture_default_str()->check(kSeed);
  add_threads_option(cmd, o->threads);
  add_reference_option(cmd, o->reference);
  add_kv_cache_option(cmd, o->kv_cache);
  auto* chat = cmd->add_flag("--chat", o->chat,
                             "Wrap the prompt as one user turn in the model's chat template");
  cmd->add_flag("--think", o->think,
                "With --chat: let the model think first (<think>); default off")
      ->needs(chat);
  cmd->add_flag("-q,--quiet", o->quiet, "Do not print the settings and timing summary to stderr");
  return [=] {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    require_model_folder(o->model);
    const std::filesystem::path tokenizer_path = std::filesystem::path(o->model) / "tokenizer.json";
    BpeTokenizer tokenizer = BpeTokenizer::load(tokenizer_path);
    std::string text = o->prompt;
    if (o->chat) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      messages.push_back({{"role", "user"}, {"content", o->prompt}});
      ChatTemplateOptions options{.add_generation_prompt = true,
                                  .enable_thinking = o->think,
                                  .clear_thinking = std::nullopt};
      text = Glm5ChatTemplate::load(o->model).render(messages, nlohmann::ordered_json(), options);
    }
    std::vector<int32_t> ids;
    try {
      ids = tokenizer.encode(text);
    } catch (const Error& e) {
      fail("prompt: {}", e.what());
    }
    if (ids.empty())
      fail("prompt: encodes to no tokens with {}; give some text", tokenizer_path.string());
    ThreadPool pool(checked_thread_count(o->threads));
    GlmMoeDsa model =
        GlmMoeDsa::load(o->model, pool, o->reference ? Kernels::kReference : Kernels::kFast);
    const ModelConfig& config = model.config();
    if (tokenizer.vocab_size() > config.vocab_size)
      fail("{}: tokenizer has {} ids but the model's vocab_size is {}", o->model,
           tokenizer.vocab_size(), config.vocab_size);

    // Flags the user gave win; the rest come from generation_config.json.
    const GenerationDefaults defaults = generation_defaults(config);
    SamplingParams sampling = defaults.sampling;
    sampling.seed = o->sampling.seed;
    if (temperature->count()) sampling.temperature = o->sampling.temperature;
    if (top_p->count()) sampling.top_p = o->sampling.top_p;
    if (top_k->count()) sampling.top_k = o->sampling.top_k;
    const int64_t wanted = max_tokens->count() ? o->max_tokens : defaults.max_tokens;
    const int64_t room = context_room(config, 0, static_cast<int64_t>(ids.size()));
    // A default (generation_config.json's max_new_tokens) is cut to the context without a word.
    if (max_tokens->count() && static_cast<int64_t>(ids.size()) <= config.max_position_embeddings &&
        wanted > room)
      fmt::print(stderr,
                 "whittle: warning: {} new tokens do not fit after the {}-token prompt in the "
                 "model's context "
                 "of {} (max_position_embeddings); generating at most {}\n",
                 wanted, ids.size(), config.max_position_embeddings, room);
    if (!o->quiet)
      fmt::print(
          stderr, "[{}, max {} new tokens]\n",
          sampling.temperature > 0
              ? fmt::format("sampling: temperature {:g}, top-k {}, top-p {:g}, seed {}",
                            sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed)
              : std::string("greedy"),
          std::min(wanted, room));
    StreamDecoder stream(tokenizer, /*skip_special=*/true);
    GenerationOptions options{.max_tokens = wanted,
                              .sampling = sampling,
                              .sample_vocab = tokenizer.vocab_size(),
                              .stop_ids = config.eos_token_ids};

    const auto t1 = Clock::now();
    KvCache cache(config, o->kv_cache);
    GenerationResult result = generate(model, cache, ids, options, [&](int32_t token) {
      std::string piece = stream.push(token);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::string rest = stream.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!o->quiet)
      fmt::print(stderr,
                 "[load {:.2f}s | prompt {} tokens {:.1f} tok/s | generated {} tokens {:.1f} tok/s "
                 "| stop: {}]\n",
                 std::chrono::duration<double>(t1 - t0).count(), ids.size(),
                 ids.size() / std::max(result.prefill_seconds, 1e-9), result.sampled,
                 result.sampled / std::max(result.decode_seconds, 1e-9),
                 stop_reason_name(result.stop));
    return 0;
  };
}

}  // namespace whittle::cli
