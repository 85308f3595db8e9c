// The decode cache of a GlmMoeDsa model: per layer and per token only what the spec says must be
// kept — the normalised MLA latent (kv_lora_rank), the rotated shared rope key (qk_rope_head_dim)
// and the DSA indexer key (index_head_dim) — 576 + 128 values per token per layer for GLM-5,
// ~57x less than caching expanded per-head K and V as transformers does.
//
// Storage is paged: each layer holds fixed pages of `page_tokens` tokens, allocated as the
// sequence grows (never a growing array that is copied on reallocation), in one of three formats:
//   f32   exact: attention reads back what the forward computed (the reference's numbers);
//   bf16  half the bytes, every part rounded to bfloat16;
//   fp8   DeepSeek's layout for the long-context cache (FlashMLA / V3.2): the latent and the
//         indexer key as E4M3 with one float32 scale per 128 values (absmax / 448), the rope key in
//         bfloat16 — 656 + 132 bytes per token per layer for GLM-5 instead of 2,304 + 512.
// Attention reads rows back as float32 (gather); the forward never sees the storage format.
//
// Pages are refcounted so that caches can share them: a token's cached values depend only on the
// tokens up to it, so a sequence that starts with another's tokens can hold that prefix's pages
// by reference (share_prefix) instead of running it again — agents resend the whole conversation
// every turn. A cache only ever writes at positions >= its length, and a shared page lies wholly
// below the lengths of all its holders, so nobody writes to a shared page; a page a cache must
// write to that is still shared (its length was truncated into it) is copied by reserve first.
// Caches made with one KvPagePool count their pages against its byte budget, a shared page once.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "io/model_config.h"
#include "util/error.h"

namespace whittle {

enum class KvDType { kF32, kBF16, kFP8 };
std::string_view kv_dtype_name(KvDType dtype);
std::optional<KvDType> parse_kv_dtype(std::string_view name);  // "f32", "bf16", "fp8"

// The cached parts of a token: the latent, the rope key, the indexer key (absent on IndexShare
// "shared" layers).
enum class KvPart { kLatent = 0, kRope = 1, kIndex = 2 };

// Thrown when a cache's pool cannot give the pages asked for (the cache is left as it was).
class KvBudgetError : public Error {
 public:
  using Error::Error;
};

// A budget of KV-cache bytes shared by every cache made with it (thread-safe counters; pages are
// allocated from the heap and counted, not carved from one block), so a server can tell before
// admitting a request whether its cache fits (available() >= cache.bytes_to_reserve(n)).
class KvPagePool {
 public:
  explicit KvPagePool(size_t budget_bytes) : budget_(budget_bytes) {}  // 0: no limit
  KvPagePool(const KvPagePool&) = delete;
  KvPagePool& operator=(const KvPagePool&) = delete;

  size_t budget() const { return budget_; }  // 0: no limit
  // Bytes of live pages (a page shared by several caches counts once).
  size_t used() const { return used_.load(std::memory_order_relaxed); }
  size_t available() const;  // budget - used (SIZE_MAX without a budget)
  // Counts `bytes` of new pages, all or none: throws KvBudgetError naming them and the budget when
  // they do not fit.
  void acquire(size_t bytes);
  void release(size_t bytes) { used_.fetch_sub(bytes, std::memory_order_relaxed); }

 private:
  const size_t budget_;
  std::atomic<size_t> used_{0};
};

class LayerCache {
 public:
  LayerCache(KvDType dtype, int64_t page_tokens, int64_t latent, int64_t rope, int64_t index,
             std::shared_ptr<KvPagePool> pool = nullptr);
  // A copy holds copies of the pages (counted in the same pool), none of them shared.
  LayerCache(const LayerCache& other);
  LayerCache(LayerCache&& other) noexcept;
  LayerCache& operator=(const LayerCache& other);
  LayerCache& operator=(LayerCache&& other) noexcept;
  ~LayerCache() { clear(); }

  int64_t length = 0;  // tokens this layer holds

  int64_t width(KvPart part) const { return parts_[static_cast<int>(part)].width; }
  // Makes room for tokens [0, tokens): whole pages, allocated once each, and a page of its own for
  // every position in [length, tokens) that is still on a shared page (copied). Throws
  // KvBudgetError, changing nothing, when the pool cannot give them.
  void reserve(int64_t tokens);
  // Bytes of the pages reserve(tokens) would add (0 when there is room).
  size_t bytes_to_reserve(int64_t tokens) const;
  // Holds the first `tokens` tokens of `other` (same format and pool; this layer must be empty,
  // tokens <= other.length): the pages wholly inside the prefix by reference, the page the prefix
  // ends inside as a copy of its first rows. `other` must not grow meanwhile (another thread).
  void share_prefix(const LayerCache& other, int64_t tokens);
  // Drops the tokens from `tokens` on (tokens <= length); the pages wholly past it are released.
  void truncate(int64_t tokens);
  // Writes token `t`'s values of `part` (width(part) floats) in the storage format; t < reserved,
  // on a page no other cache holds.
  void store(KvPart part, int64_t t, const float* values);
  // Reads tokens [t0, t1) of `part` as float32 rows into dst [t1 - t0, width].
  void gather(KvPart part, int64_t t0, int64_t t1, float* dst) const;
  // Reads the listed tokens (any order) of `part` as float32 rows into dst [tokens.size(), width].
  void gather(KvPart part, std::span<const int32_t> tokens, float* dst) const;
  // Bytes of the pages this layer holds, shared ones included (so the bytes() of caches sharing a
  // prefix add up to more than their pool's used()).
  size_t bytes() const { return pages_.size() * page_bytes_; }
  // Tokens there is room for without another page.
  int64_t capacity() const { return static_cast<int64_t>(pages_.size()) * page_tokens_; }
  // Releases every page (back to the pool, once no other cache holds it).
  void clear();

 private:
  friend class KvCache;
  struct Part {
    int64_t width = 0;
    size_t offset = 0;     // of the part's rows in a page
    size_t row_bytes = 0;  // per token
  };
  // A page's header: how many caches hold it. Its bytes follow, 64-byte aligned like the header.
  struct alignas(64) Page {
    std::atomic<int32_t> refs{1};
    std::byte* data() { return reinterpret_cast<std::byte*>(this + 1); }
  };
  static int64_t pages_for(int64_t tokens, int64_t page_tokens) {
    return (tokens + page_tokens - 1) / page_tokens;
  }
  const std::byte* row(KvPart part, int64_t t) const;
  void read_row(KvPart part, int64_t t, float* dst) const;
  bool same_format(const LayerCache& other) const;
  // Pages reserve(tokens) adds: new ones, and copies of the shared pages it must write to.
  int64_t pages_to_add(int64_t tokens) const;
  Page* new_page() const;  // zeroed; the pool is counted by the caller
  void drop(Page* page);   // one holder less; the last one frees it and gives back its bytes
  // reserve / share_prefix once `paid` bytes have been counted in the pool for them; bytes not
  // used (or, on an exception, pages not made) are given back.
  void grow(int64_t tokens, size_t paid);
  void share(const LayerCache& other, int64_t tokens, size_t paid);

  KvDType dtype_;
  int64_t page_tokens_;
  size_t page_bytes_ = 0;
  Part parts_[3];
  std::shared_ptr<KvPagePool> pool_;
  // Plain pointers: a token's lookup changes no count.
  std::vector<Page*> pages_;
};

class KvCache {
 public:
  // Caches made with the same `pool` count their pages against its budget and may share them;
  // nullptr: pages are not counted.
  explicit KvCache(const ModelConfig& config, KvDType dtype = KvDType::kF32,
                   int64_t page_tokens = 64, std::shared_ptr<KvPagePool> pool = nullptr);
  // Movable; a copy holds copies of the pages (counted in the same pool), sharing none.

  KvDType dtype() const { return dtype_; }
  int64_t page_tokens() const { return page_tokens_; }
  const std::shared_ptr<KvPagePool>& pool() const { return pool_; }
  // Tokens that have been through every layer. Each layer appends its own (a layer-major pass
  // fills layer 0 for every sequence before layer 1), so the last layer's count is the cache's.
  int64_t length() const { return layers.empty() ? 0 : layers.back().length; }
  // False while a forward pass has filled some layers and not others (or one threw part-way).
  bool consistent() const {
    for (const auto& l : layers)
      if (l.length != length()) return false;
    return true;
  }
  // Releases every page back to the pool (once no other cache holds it).
  void clear() {
    for (auto& l : layers) l.clear();
  }
  // Room for `tokens` tokens in every layer, allocated now rather than page by page as they come.
  // Throws KvBudgetError naming the bytes needed and the budget when the pool cannot give them
  // all, and then leaves the cache as it was.
  void reserve(int64_t tokens);
  // Bytes of the pages this cache must add (in all layers together) to hold `tokens` tokens — 0
  // when it already has room. For admission: pool->available() >= cache.bytes_to_reserve(n).
  size_t bytes_to_reserve(int64_t tokens) const;
  // Makes this cache (which must hold no tokens; pages it reserved are released) hold the first
  // `tokens` tokens of `other` (same config, dtype, page size and pool; tokens <= other.length()):
  // the pages wholly inside the prefix are shared, the page the prefix ends inside is copied
  // (counted once in the pool). Every layer's length becomes `tokens`. Throws KvBudgetError when
  // the copies do not fit, leaving this cache empty. `other` must not run a forward pass meanwhile.
  void share_prefix(const KvCache& other, int64_t tokens);
  // Drops the tokens from `tokens` on (tokens <= length()): every layer's length set back, the
  // pages wholly past it released. Also mends a cache a forward pass left part-way (its earlier
  // layers hold more than length()): truncate(length()).
  void truncate(int64_t tokens);
  // Bytes of the pages this cache holds, shared ones included.
  size_t bytes() const {
    size_t n = 0;
    for (const auto& l : layers) n += l.bytes();
    return n;
  }
  // Bytes one token takes in every layer together (whole pages aside).
  static size_t bytes_per_token(const ModelConfig& config, KvDType dtype);

  std::vector<LayerCache> layers;

 private:
  KvDType dtype_;
  int64_t page_tokens_;
  std::shared_ptr<KvPagePool> pool_;
};

}  // namespace whittle
