// The continuous-batching engine; see engine.h.
#include "serve/engine.h"

#include <fmt/core.h>

#include <algorithm>
#include <random>
#include <span>

#include "serve/openai_request.h"
#include "util/error.h"

namespace whittle {

using Clock = std::chrono::steady_clock;

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kRunning:
      return "running";
    case FinishReason::kStopId:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
    case FinishReason::kError:
      return "abort";
  }
  return "?";
}

void Stream::wait(size_t seen, std::chrono::milliseconds timeout, State& out, bool finish_only) {
  std::unique_lock lock(mutex_);
  if (finish_only)
    finish_.wait_for(lock, timeout, [&] { return state_.finish != FinishReason::kRunning; });
  else
    token_or_finish_.wait_for(lock, timeout, [&] {
      return state_.tokens.size() > seen || state_.finish != FinishReason::kRunning;
    });
  out.tokens.assign(
      state_.tokens.begin() + static_cast<std::ptrdiff_t>(std::min(seen, state_.tokens.size())),
      state_.tokens.end());
  out.finish = state_.finish;
  out.prompt_tokens = state_.prompt_tokens;
  out.cached_tokens = state_.cached_tokens;
  out.error = state_.error;
  out.queued_seconds = state_.queued_seconds;
  out.first_token_seconds = state_.first_token_seconds;
}

void Stream::push(int32_t token) {
  {
    std::lock_guard lock(mutex_);
    state_.tokens.push_back(token);
  }
  token_or_finish_.notify_all();
}

void Stream::finish(FinishReason reason, std::string error) {
  {
    std::lock_guard lock(mutex_);
    if (state_.finish != FinishReason::kRunning) return;
    state_.finish = reason;
    state_.error = std::move(error);
  }
  token_or_finish_.notify_all();
  finish_.notify_all();
}

struct Engine::Sequence {
  Job job;
  std::shared_ptr<Stream> stream = std::make_shared<Stream>();
  std::unique_ptr<KvCache> cache;
  std::vector<int32_t> fed;  // the tokens the cache holds: the prompt, then the ones decoded
  int32_t last = -1;         // the sampled token to run next
  int64_t sampled = 0;
  Sampler sampler;
  Clock::time_point submitted = Clock::now();

  explicit Sequence(Job j) : job(std::move(j)), sampler(job.sampling) {}
  size_t prompt_fed() const { return std::min(fed.size(), job.prompt.size()); }
};

Engine::Engine(const GlmMoeDsa& model, EngineOptions options)
    : model_(model), options_(std::move(options)), empty_(model_.config(), options_.kv_dtype) {
  const ModelConfig& config = model_.config();
  if (options_.ctx <= 0 || options_.ctx > config.max_position_embeddings)
    options_.ctx = config.max_position_embeddings;
  options_.parallel = std::max<int64_t>(1, options_.parallel);
  options_.prefill_chunk = std::max<int64_t>(1, options_.prefill_chunk);
  if (options_.kv_budget == 0) {
    // Enough for `parallel` sequences of the full context, in whole pages.
    options_.kv_budget =
        static_cast<size_t>(options_.parallel) * empty_.bytes_to_reserve(options_.ctx);
  }
  pool_ = std::make_shared<KvPagePool>(options_.kv_budget);
  stats_.kv_budget = options_.kv_budget;
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() {
  stop(/*cancel=*/true);
}

std::shared_ptr<Stream> Engine::submit(Job job) {
  if (job.prompt.empty())
    throw RequestError(400, "the prompt encodes to no tokens", job.prompt_field);
  const int64_t prompt = static_cast<int64_t>(job.prompt.size());
  // Checked here, not in the batch: one bad id there would fail every sequence with it.
  const int64_t vocab = model_.config().vocab_size;
  for (size_t i = 0; i < job.prompt.size(); ++i)
    if (job.prompt[i] < 0 || job.prompt[i] >= vocab)
      throw RequestError(400,
                         fmt::format("token id {} at position {} is outside the vocabulary [0, {})",
                                     job.prompt[i], i, vocab),
                         job.prompt_field);
  if (prompt >= options_.ctx)
    throw RequestError(400,
                       fmt::format("the prompt has {} tokens; this server's context is {} tokens, "
                                   "prompt and output together",
                                   prompt, options_.ctx),
                       job.prompt_field);
  if (job.max_tokens < 1 || prompt + job.max_tokens > options_.ctx)
    throw RequestError(400,
                       fmt::format("max_tokens is {}, but the prompt has {} tokens and this "
                                   "server's context is {}: at most {} new tokens fit",
                                   job.max_tokens, prompt, options_.ctx, options_.ctx - prompt),
                       "max_tokens");
  const size_t need = empty_.bytes_to_reserve(prompt + job.max_tokens);
  if (need > options_.kv_budget)
    throw RequestError(400,
                       fmt::format("{} prompt + {} new tokens need {} bytes of KV cache; the "
                                   "server's --kv-budget is {} bytes",
                                   prompt, job.max_tokens, need, options_.kv_budget),
                       "max_tokens");
  auto seq = std::make_unique<Sequence>(std::move(job));
  std::shared_ptr<Stream> stream = seq->stream;
  stream->state_.prompt_tokens = prompt;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw RequestError(503, "the server is shutting down", "", "server_error");
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_waiting)
      throw RequestError(
          429, fmt::format("{} requests are already waiting; try again later", waiting_.size()), "",
          "rate_limit_exceeded");
    waiting_.push_back(std::move(seq));
    stats_.waiting = static_cast<int64_t>(waiting_.size());
  }
  wake_.notify_one();
  return stream;
}

void Engine::stop(bool cancel) {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    cancel_all_ = cancel_all_ || cancel;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

Engine::Stats Engine::stats() const {
  std::lock_guard lock(mutex_);
  Stats s = stats_;
  s.kv_used = pool_->used();
  s.finished = finished_;
  s.cancelled = cancelled_;
  return s;
}

bool Engine::admit(std::unique_ptr<Sequence>& seq) {
  const std::vector<int32_t>& prompt = seq->job.prompt;
  // The kept cache sharing the longest prefix with the prompt. At least the prompt's last token
  // runs again: its logits give the first output token.
  auto best = cached_.end();
  size_t best_len = 0;
  for (auto it = cached_.begin(); it != cached_.end(); ++it) {
    const size_t limit = std::min(it->tokens.size(), prompt.size() - 1);
    size_t n = 0;
    while (n < limit && it->tokens[n] == prompt[n]) ++n;
    if (n > best_len) best = it, best_len = n;
  }
  auto cache = std::make_unique<KvCache>(model_.config(), options_.kv_dtype, 64, pool_);
  if (best != cached_.end()) {
    try {
      cache->share_prefix(best->cache, static_cast<int64_t>(best_len));
      cached_.splice(cached_.begin(), cached_, best);  // most recently used
    } catch (const KvBudgetError&) {
      best_len = 0;  // not even the copied last page fits now: the admission below decides
    }
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + seq->job.max_tokens;
  const size_t need = cache->bytes_to_reserve(total);
  // Kept caches give their pages back, least recently used first (a page this sequence now
  // shares stays alive through its own reference).
  while (need > pool_->available() && !cached_.empty()) cached_.pop_back();
  if (need > pool_->available()) return false;
  cache->reserve(total);
  seq->cache = std::move(cache);
  seq->fed.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(best_len));
  {
    std::lock_guard lock(seq->stream->mutex_);
    seq->stream->state_.cached_tokens = static_cast<int64_t>(best_len);
    seq->stream->state_.queued_seconds =
        std::chrono::duration<double>(Clock::now() - seq->submitted).count();
  }
  if (best_len > 0) ++stats_.prefix_hits, stats_.reused_tokens += static_cast<int64_t>(best_len);
  return true;
}

void Engine::retire(Sequence& seq, FinishReason reason, std::string error) {
  seq.stream->finish(reason, std::move(error));
  // Atomics: retire runs with and without mutex_ held.
  ++(reason == FinishReason::kCancelled ? cancelled_ : finished_);
  // A cancelled sequence's cache is as good as a finished one's for the tokens it holds (a stop
  // string cancels, and the agent's next turn starts with that text); the kept caches give their
  // pages back as soon as a new sequence needs them.
  if (reason == FinishReason::kError || !seq.cache || !seq.cache->consistent() ||
      seq.cache->length() != static_cast<int64_t>(seq.fed.size()) || options_.prefix_cache <= 0) {
    seq.cache.reset();  // its pages go back to the pool now
    return;
  }
  // Kept for the next turn of the conversation, without the pages reserved and not used.
  seq.cache->truncate(seq.cache->length());
  cached_.push_front(Cached{std::move(seq.fed), std::move(*seq.cache)});
  seq.cache.reset();
  while (static_cast<int64_t>(cached_.size()) > options_.prefix_cache) cached_.pop_back();
}

void Engine::forward(std::span<Sequence* const> seqs, const std::vector<SequenceInput>& inputs) {
  try {
    Batch b = model_.embed(inputs);
    for (int64_t L = 0; L < model_.config().num_hidden_layers; ++L) model_.forward_layer(L, b);
    model_.head(b, /*all_rows=*/false, logits_);
  } catch (const std::exception& e) {
    // The caches of this batch are part-written: end its sequences, with the reason.
    for (Sequence* seq : seqs) retire(*seq, FinishReason::kError, e.what());
    return;
  }
  const int64_t vocab = model_.config().vocab_size;
  const int64_t n_sample =
      options_.sample_vocab > 0 ? std::min(options_.sample_vocab, vocab) : vocab;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Sequence& seq = *seqs[i];
    const SequenceInput& in = inputs[i];
    seq.fed.insert(seq.fed.end(), in.tokens.begin(), in.tokens.end());
    if (seq.fed.size() < seq.job.prompt.size()) continue;  // more prompt to run first
    const int32_t token = seq.sampler.sample(std::span<const float>(logits_).subspan(
        i * static_cast<size_t>(vocab), static_cast<size_t>(n_sample)));
    if (seq.sampled++ == 0) {
      std::lock_guard lock(seq.stream->mutex_);
      seq.stream->state_.first_token_seconds =
          std::chrono::duration<double>(Clock::now() - seq.submitted).count();
    }
    if (std::find(seq.job.stop_ids.begin(), seq.job.stop_ids.end(), token) !=
        seq.job.stop_ids.end()) {
      retire(seq, FinishReason::kStopId);
      continue;
    }
    seq.stream->push(token);
    seq.last = token;
    if (seq.sampled >= seq.job.max_tokens) retire(seq, FinishReason::kLength);
  }
}

void Engine::step() {
  // Prompt chunks first, each sequence in a batch of its own; then every decoding sequence in one
  // batch. Kept apart so that a token's arithmetic does not depend on what else runs: a batch's
  // Linears see only its own rows, and the fast kernels give each row the same bits alone or with
  // up to 32 others (ops/dense16_gemv.h, ops/int4_linear.h). A prompt that fits one chunk is then
  // run exactly as `whittle generate` runs it, and its decoding too, whatever the load.
  std::vector<Sequence*> decoding;
  std::vector<SequenceInput> decode_inputs;
  int64_t chunk_left = options_.prefill_chunk;
  for (auto& seq : running_) {
    const size_t done = seq->prompt_fed();
    if (done == seq->job.prompt.size()) {
      decoding.push_back(seq.get());
      decode_inputs.push_back(
          SequenceInput{std::span<const int32_t>(&seq->last, 1), seq->cache.get(), true});
      continue;
    }
    const int64_t n =
        std::min<int64_t>(chunk_left, static_cast<int64_t>(seq->job.prompt.size() - done));
    if (n == 0) continue;  // the step's prompt tokens are spent; next step
    chunk_left -= n;
    Sequence* one[] = {seq.get()};
    forward(one,
            {SequenceInput{
                std::span<const int32_t>(seq->job.prompt).subspan(done, static_cast<size_t>(n)),
                seq->cache.get(), /*absorbed=*/false}});
  }
  if (!decoding.empty()) {
    const auto t0 = Clock::now();
    forward(decoding, decode_inputs);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    std::lock_guard lock(mutex_);
    ++stats_.decode_steps;
    stats_.decoded_tokens += static_cast<int64_t>(decoding.size());
    stats_.decode_seconds += seconds;
  }
  std::erase_if(running_, [](const auto& s) { return s->cache == nullptr; });
}

void Engine::run() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
      if (cancel_all_) {
        for (auto& seq : waiting_) seq->stream->finish(FinishReason::kCancelled);
        waiting_.clear();
        for (auto& seq : running_) retire(*seq, FinishReason::kCancelled);
        running_.clear();
      }
      if (stopping_ && waiting_.empty() && running_.empty()) {
        cached_.clear();  // nothing will reuse them
        break;
      }
      while (static_cast<int64_t>(running_.size()) < options_.parallel && !waiting_.empty()) {
        std::unique_ptr<Sequence>& next = waiting_.front();
        if (next->stream->cancelled()) {
          next->stream->finish(FinishReason::kCancelled);
        } else if (admit(next)) {
          running_.push_back(std::move(next));
        } else if (running_.empty()) {
          // Cannot happen (submit() refuses a job larger than the whole budget, and with nothing
          // running every page can be reclaimed), but never wait for pages nobody will free.
          next->stream->finish(FinishReason::kError, "no KV pages are free for this request");
        } else {
          break;  // waits for a running sequence to end
        }
        waiting_.pop_front();
      }
      stats_.waiting = static_cast<int64_t>(waiting_.size());
    }
    for (auto& seq : running_)
      if (seq->stream->cancelled()) retire(*seq, FinishReason::kCancelled);
    std::erase_if(running_, [](const auto& s) { return s->cache == nullptr; });
    step();
    std::lock_guard lock(mutex_);
    stats_.running = static_cast<int64_t>(running_.size());
    ++stats_.steps;
  }
}

}  // namespace whittle
