// Engine: continuous batching for the server. One model thread owns the forward pass; requests
// from any thread are queued, and every step of that thread
//   1. admits waiting requests while fewer than `parallel` sequences run and the KV page pool can
//      hold each one's prompt plus its max tokens (reserved up front, so a running sequence never
//      runs out of pages and nothing is ever preempted),
//   2. runs a chunk of every admitted prompt not yet cached (at most `prefill_chunk` prompt tokens
//      per step in all, so that running streams keep going), each sequence in a batch of its own,
//      then ONE batch with the last sampled token of every decoding sequence, each with its own
//      cache, and
//   3. samples each sequence whose input is all cached, and hands the token to its Stream.
// Batches are kept this way so that batching changes nothing but speed (engine.cc, step()).
// A request whose prompt starts with tokens an earlier one cached (a conversation resent with one
// more turn) shares that cache's whole pages instead of recomputing them (KvCache::share_prefix).
// Finished and cancelled caches are kept, least recently used first out, while their pages are
// not needed.
//
// A Stream is the meeting point of the model thread and the client's thread: tokens appear in it as
// they are sampled; cancel() (a client that went away, a stop string found in the text) makes the
// model thread drop the sequence at its next step and free its pages.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "model/glm_moe_dsa.h"
#include "model/kv_cache.h"
#include "serve/sampler.h"

namespace whittle {

struct EngineOptions {
  int64_t parallel = 4;      // sequences that run at once (the decode batch)
  int64_t max_waiting = 64;  // queued requests past which submit() refuses with 429
  int64_t ctx = 0;           // tokens per sequence, prompt + output; 0: the model's context
  size_t kv_budget = 0;      // bytes of KV pages; 0: parallel full-context sequences
  KvDType kv_dtype = KvDType::kF32;
  int64_t prefill_chunk = 512;  // prompt tokens per step, all sequences together
  int64_t sample_vocab = 0;     // ids >= this are never sampled (padding); 0: the whole row
  int64_t prefix_cache = 16;    // finished conversations kept for prefix reuse
};

struct Job {
  std::vector<int32_t> prompt;  // non-empty
  int64_t max_tokens = 1;       // >= 1; prompt + max_tokens <= ctx
  SamplingParams sampling = {};
  std::vector<int64_t> stop_ids = {};   // a sampled stop id ends the job and is not kept
  std::string prompt_field = "prompt";  // the request field the prompt came from, for errors
};

enum class FinishReason { kRunning, kStopId, kLength, kCancelled, kError };
// OpenAI's finish_reason: "stop" (a stop id; the server also uses it for stop strings), "length",
// and for the rest what vLLM sends ("abort").
const char* finish_reason_name(FinishReason reason);

class Stream {
 public:
  struct State {
    std::vector<int32_t> tokens;  // every kept token so far
    FinishReason finish = FinishReason::kRunning;
    int64_t prompt_tokens = 0;
    int64_t cached_tokens = 0;  // prompt tokens whose cache was reused from an earlier request
    std::string error;          // kError: what went wrong
    double queued_seconds = 0, first_token_seconds = 0;
  };
  // Waits until the stream holds more than `seen` tokens (unless `finish_only`), has finished, or
  // `timeout` passed; then copies its state (only tokens[seen:] into out.tokens, which is cleared
  // first). A whole-response client waits with finish_only, so that the model thread does not
  // wake it for every token.
  void wait(size_t seen, std::chrono::milliseconds timeout, State& out, bool finish_only = false);
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Engine;
  void push(int32_t token);
  void finish(FinishReason reason, std::string error = {});

  std::mutex mutex_;
  std::condition_variable token_or_finish_, finish_;
  State state_;
  std::atomic<bool> cancelled_{false};
};

class Engine {
 public:
  // The model must outlive the engine; its thread pool is used from the engine's thread only.
  Engine(const GlmMoeDsa& model, EngineOptions options);
  ~Engine();  // stop(/*cancel=*/true)
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job. Throws RequestError: 400 when it can never run (empty prompt, prompt + max tokens
  // past the context or the KV budget), 429 when `max_waiting` jobs already wait, 503 once
  // stopping.
  std::shared_ptr<Stream> submit(Job job);
  // Stops taking jobs; with `cancel`, ends the running and waiting ones (kCancelled), else lets
  // them finish; returns when the model thread has ended. Idempotent.
  void stop(bool cancel);

  const EngineOptions& options() const { return options_; }
  int64_t ctx() const { return options_.ctx; }
  struct Stats {
    int64_t running = 0, waiting = 0;
    size_t kv_used = 0, kv_budget = 0;
    int64_t steps = 0, prefix_hits = 0, reused_tokens = 0;
    int64_t finished = 0, cancelled = 0;  // sequences that ran, by how they ended
    // The batched decode steps alone (no prompt chunks): how many, the tokens they sampled, and
    // their time (forward and sampling).
    int64_t decode_steps = 0, decoded_tokens = 0;
    double decode_seconds = 0;
  };
  Stats stats() const;

 private:
  struct Sequence;
  struct Cached {                 // a finished sequence's cache, kept for prefix reuse
    std::vector<int32_t> tokens;  // what the cache holds
    KvCache cache;
  };
  void run();
  bool admit(std::unique_ptr<Sequence>& seq);  // false: no pages for it now
  void step();
  // One batch through the model, then a token sampled for each sequence whose input is all cached.
  void forward(std::span<Sequence* const> seqs, const std::vector<SequenceInput>& inputs);
  void retire(Sequence& seq, FinishReason reason, std::string error = {});

  const GlmMoeDsa& model_;
  EngineOptions options_;
  KvCache empty_;  // a cache with no pages: what a fresh sequence needs (bytes_to_reserve)
  std::shared_ptr<KvPagePool> pool_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  bool stopping_ = false, cancel_all_ = false;
  Stats stats_;
  std::atomic<int64_t> finished_{0}, cancelled_{0};

  // The model thread's own state.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::list<Cached> cached_;  // most recently used first
  std::vector<float> logits_;
  std::thread thread_;
};

}  // namespace whittle
