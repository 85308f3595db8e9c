// generate(): the token-by-token generation loop shared by `whittle generate`, the eval tasks and
// (later) the server — prefill the prompt, then sample and decode one token at a time from the
// latent cache until max tokens, a stop id, or the caller's callback says stop.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/glm_moe_dsa.h"
#include "model/kv_cache.h"
#include "serve/sampler.h"

namespace whittle {

struct GenerationOptions {
  int64_t max_tokens = 128;
  SamplingParams sampling{};
  // Sampling considers only ids [0, sample_vocab): embedding rows past the tokenizer's ids are
  // padding (GLM-5 pads 154,856 ids to 154,880) and must never be produced. 0: the whole row.
  int64_t sample_vocab = 0;
  std::vector<int64_t> stop_ids = {};  // a sampled stop id ends generation and is not kept
};

// What generation does when the user sets nothing: the model's generation_config.json as
// transformers reads it. do_sample true: its temperature (1 when absent), top_k and top_p (off when
// absent); do_sample false or absent: greedy. max_tokens: its max_new_tokens, else 128.
struct GenerationDefaults {
  SamplingParams sampling{.temperature = 0.0f};
  int64_t max_tokens = 128;
};
GenerationDefaults generation_defaults(const ModelConfig& config);

// How many new tokens fit after `cached` + `prompt` tokens in the model's context (>= 0).
int64_t context_room(const ModelConfig& config, int64_t cached, int64_t prompt);

// kContext: the sequence reached the model's max_position_embeddings (prompt + output, as vLLM's
// max_model_len counts it) before max_tokens.
enum class StopReason { kMaxTokens, kStopId, kCallback, kContext };
const char* stop_reason_name(StopReason reason);  // "max tokens", "eos", "stop", "context full"

struct GenerationResult {
  std::vector<int32_t> tokens;  // the generated ids, without a final stop id
  int64_t sampled = 0;          // tokens sampled, a final stop id included
  int32_t stop_id = -1;         // the stop id that ended generation, else -1
  StopReason stop = StopReason::kMaxTokens;
  double prefill_seconds = 0.0, decode_seconds = 0.0;
};

// Called with each kept token as soon as it is sampled; returning false ends generation after it.
using TokenCallback = std::function<bool(int32_t token)>;

// Runs `prompt` (non-empty) after whatever `cache` already holds and generates from there; the
// cache is left holding the prompt and every generated token but the last. Throws Error for an
// empty prompt or one that does not fit the model's context; generation stops (kContext) when the
// cached tokens plus the output reach max_position_embeddings.
GenerationResult generate(GlmMoeDsa& model, KvCache& cache, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const TokenCallback& on_token = {});

}  // namespace whittle
