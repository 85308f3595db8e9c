// `whittle generate MODEL -p TEXT`: encode, then run the shared generation loop (serve/generation.h:
// prefill, then sample and decode token by token from the latent cache); streams complete UTF-8
// characters to stdout as they are made and stops at max tokens or one of the model's EOS ids.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>

#include "cli/commands.h"
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
    int64_t max_tokens = 128;
    SamplingParams sampling{.temperature = 0.0f};
    size_t threads = 0;
    bool quiet = false, chat = false, think = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text (special tokens such as [gMASK] are recognised)")
      ->required();
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Maximum number of new tokens")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--temperature", o->sampling.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass in (0, 1]")->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Keep only the k most likely tokens (0 = off)")
      ->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "Random seed")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Worker threads (0: one per core)");
  cmd->add_flag("--chat", o->chat, "Wrap the prompt as one user turn in the model's chat template");
  cmd->add_flag("--think", o->think, "With --chat: let the model think first (<think>); default off");
  cmd->add_flag("-q,--quiet", o->quiet, "Do not print the timing summary to stderr");
  return [=] {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    BpeTokenizer tokenizer = BpeTokenizer::load(std::filesystem::path(o->model) / "tokenizer.json");
    std::string text = o->prompt;
    if (o->chat) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      messages.push_back({{"role", "user"}, {"content", o->prompt}});
      ChatTemplateOptions options{
          .add_generation_prompt = true, .enable_thinking = o->think, .clear_thinking = std::nullopt};
      text = Glm5ChatTemplate::load(o->model).render(messages, nlohmann::ordered_json(), options);
    }
    std::vector<int32_t> ids;
    try {
      ids = tokenizer.encode(text);
    } catch (const Error& e) {
      fail("prompt: {}", e.what());
    }
    if (ids.empty()) fail("prompt: encodes to no tokens");
    ThreadPool pool(o->threads);
    GlmMoeDsa model = GlmMoeDsa::load(o->model, pool);
    if (tokenizer.vocab_size() > model.config().vocab_size)
      fail("{}: tokenizer has {} ids but the model's vocab_size is {}", o->model, tokenizer.vocab_size(),
           model.config().vocab_size);
    StreamDecoder stream(tokenizer, /*skip_special=*/true);
    GenerationOptions options{.max_tokens = o->max_tokens,
                              .sampling = o->sampling,
                              .sample_vocab = tokenizer.vocab_size(),
                              .stop_ids = model.config().eos_token_ids};

    const auto t1 = Clock::now();
    KvCache cache(model.config());
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
      fmt::print(stderr, "[load {:.2f}s | prompt {} tokens {:.1f} tok/s | generated {} tokens {:.1f} tok/s | stop: {}]\n",
                 std::chrono::duration<double>(t1 - t0).count(), ids.size(),
                 ids.size() / std::max(result.prefill_seconds, 1e-9), result.sampled,
                 result.sampled / std::max(result.decode_seconds, 1e-9), stop_reason_name(result.stop));
    return 0;
  };
}

}  // namespace whittle::cli
