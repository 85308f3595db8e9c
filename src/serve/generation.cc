// The generation loop; see generation.h.
#include "serve/generation.h"

#include <algorithm>
#include <chrono>

#include <fmt/core.h>

#include "util/error.h"

namespace whittle {

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kMaxTokens:
      return "max tokens";
    case StopReason::kStopId:
      return "eos";
    case StopReason::kCallback:
      return "stop";
    case StopReason::kContext:
      return "context full";
  }
  return "?";
}

GenerationDefaults generation_defaults(const ModelConfig& config) {
  GenerationDefaults d;
  if (config.max_new_tokens) d.max_tokens = *config.max_new_tokens;
  if (config.do_sample.value_or(false)) {
    d.sampling.temperature = static_cast<float>(config.temperature.value_or(1.0));
    d.sampling.top_k = config.top_k.value_or(0);
    d.sampling.top_p = static_cast<float>(config.top_p.value_or(1.0));
  }
  return d;
}

int64_t context_room(const ModelConfig& config, int64_t cached, int64_t prompt) {
  return std::max<int64_t>(0, config.max_position_embeddings - cached - prompt);
}

GenerationResult generate(GlmMoeDsa& model, KvCache& cache, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const TokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  if (prompt.empty()) fail("generation: the prompt has no tokens");
  const ModelConfig& config = model.config();
  const int64_t prompt_len = static_cast<int64_t>(prompt.size());
  if (cache.length() + prompt_len > config.max_position_embeddings)
    fail("the prompt has {} tokens{}; the model's context is {} (max_position_embeddings)",
         prompt_len, cache.length() > 0 ? fmt::format(" after {} cached", cache.length()) : "",
         config.max_position_embeddings);
  // Output tokens fit while the whole sequence stays within the context.
  const int64_t room = context_room(config, cache.length(), prompt_len);
  const int64_t max_tokens = std::min(options.max_tokens, room);
  const int64_t vocab = model.config().vocab_size;
  const int64_t n_sample = options.sample_vocab > 0 ? std::min(options.sample_vocab, vocab) : vocab;
  Sampler sampler(options.sampling);
  GenerationResult r;

  // Every page the generation can need, now: the decode loop below then allocates nothing.
  cache.reserve(cache.length() + prompt_len + max_tokens);
  const auto t0 = Clock::now();
  std::vector<float> logits = model.prefill(prompt, cache, /*all_logits=*/false);
  const auto t1 = Clock::now();
  r.prefill_seconds = secs(t0, t1);
  while (r.sampled < max_tokens) {
    int32_t next =
        sampler.sample(std::span<const float>(logits).first(static_cast<size_t>(n_sample)));
    ++r.sampled;
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) !=
        options.stop_ids.end()) {
      r.stop = StopReason::kStopId;
      r.stop_id = next;
      break;
    }
    r.tokens.push_back(next);
    if (on_token && !on_token(next)) {
      r.stop = StopReason::kCallback;
      break;
    }
    // The last token is not decoded: nobody would read its logits.
    if (r.sampled == max_tokens) break;
    model.decode(next, cache, logits);
  }
  if (r.stop == StopReason::kMaxTokens && max_tokens < options.max_tokens)
    r.stop = StopReason::kContext;
  r.decode_seconds = secs(t1, Clock::now());
  return r;
}

}  // namespace whittle
