#include "model/kv_cache.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "tensor/dtype.h"

namespace whittle {

namespace {

constexpr int64_t kFp8Block = 128;  // values per float32 scale in the fp8 format
constexpr float kFp8Max = 448.0f;

int64_t fp8_blocks(int64_t width) {
  return (width + kFp8Block - 1) / kFp8Block;
}

// The rope key stays 16-bit in the fp8 format: it carries the position, and it is small.
bool fp8_part(KvDType dtype, KvPart part) {
  return dtype == KvDType::kFP8 && part != KvPart::kRope;
}

// E4M3 code -> float32, by table: reading an fp8 cache back is one lookup per value.
const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b)
      t[static_cast<size_t>(b)] = f8e4m3_to_f32(static_cast<uint8_t>(b));
    return t;
  }();
  return table;
}

// Indexer keys are kept on layers with an indexer of their own (not on IndexShare "shared" ones).
int64_t index_width(const ModelConfig& config, int64_t layer) {
  const auto L = static_cast<size_t>(layer);
  return L < config.indexer_full.size() && config.indexer_full[L] ? config.index_head_dim : 0;
}

size_t row_bytes(KvDType dtype, KvPart part, int64_t width) {
  if (width == 0) return 0;
  if (fp8_part(dtype, part)) return static_cast<size_t>(width + 4 * fp8_blocks(width));
  return static_cast<size_t>(width) * (dtype == KvDType::kF32 ? 4 : 2);
}

}  // namespace

std::string_view kv_dtype_name(KvDType dtype) {
  switch (dtype) {
    case KvDType::kF32:
      return "f32";
    case KvDType::kBF16:
      return "bf16";
    case KvDType::kFP8:
      return "fp8";
  }
  return "?";
}

std::optional<KvDType> parse_kv_dtype(std::string_view name) {
  for (KvDType d : {KvDType::kF32, KvDType::kBF16, KvDType::kFP8})
    if (name == kv_dtype_name(d)) return d;
  return std::nullopt;
}

size_t KvPagePool::available() const {
  if (budget_ == 0) return std::numeric_limits<size_t>::max();
  const size_t u = used();
  return u < budget_ ? budget_ - u : 0;
}

void KvPagePool::acquire(size_t bytes) {
  if (bytes == 0) return;
  if (budget_ == 0) {
    used_.fetch_add(bytes, std::memory_order_relaxed);
    return;
  }
  size_t u = used_.load(std::memory_order_relaxed);
  do {
    if (bytes > budget_ || u > budget_ - bytes)
      throw KvBudgetError(
          fmt::format("the KV cache needs {} more bytes, but {} of its budget of {} bytes are in "
                      "use ({} available)",
                      bytes, u, budget_, u < budget_ ? budget_ - u : 0));
  } while (!used_.compare_exchange_weak(u, u + bytes, std::memory_order_relaxed));
}

LayerCache::LayerCache(KvDType dtype, int64_t page_tokens, int64_t latent, int64_t rope,
                       int64_t index, std::shared_ptr<KvPagePool> pool)
    : dtype_(dtype), page_tokens_(page_tokens), pool_(std::move(pool)) {
  if (page_tokens < 1) fail("internal: KV cache pages of {} tokens", page_tokens);
  const int64_t widths[3] = {latent, rope, index};
  for (int p = 0; p < 3; ++p) {
    parts_[p].width = widths[p];
    parts_[p].offset = page_bytes_;
    parts_[p].row_bytes = row_bytes(dtype, static_cast<KvPart>(p), widths[p]);
    // Each part's rows start 64-byte aligned within the page.
    page_bytes_ += (parts_[p].row_bytes * static_cast<size_t>(page_tokens) + 63) / 64 * 64;
  }
}

LayerCache::LayerCache(const LayerCache& other)
    : length(other.length),
      dtype_(other.dtype_),
      page_tokens_(other.page_tokens_),
      page_bytes_(other.page_bytes_),
      pool_(other.pool_) {
  std::copy(std::begin(other.parts_), std::end(other.parts_), std::begin(parts_));
  const size_t n = other.pages_.size();
  if (pool_) pool_->acquire(n * page_bytes_);
  pages_.reserve(n);
  try {
    for (Page* page : other.pages_) {
      pages_.push_back(new_page());
      std::memcpy(pages_.back()->data(), page->data(), page_bytes_);
    }
  } catch (...) {
    if (pool_) pool_->release((n - pages_.size()) * page_bytes_);
    clear();
    throw;
  }
}

LayerCache::LayerCache(LayerCache&& other) noexcept
    : length(std::exchange(other.length, 0)),
      dtype_(other.dtype_),
      page_tokens_(other.page_tokens_),
      page_bytes_(other.page_bytes_),
      pool_(other.pool_),
      pages_(std::move(other.pages_)) {
  std::copy(std::begin(other.parts_), std::end(other.parts_), std::begin(parts_));
  other.pages_.clear();
}

LayerCache& LayerCache::operator=(const LayerCache& other) {
  if (this != &other) *this = LayerCache(other);
  return *this;
}

LayerCache& LayerCache::operator=(LayerCache&& other) noexcept {
  if (this != &other) {
    clear();
    length = std::exchange(other.length, 0);
    dtype_ = other.dtype_;
    page_tokens_ = other.page_tokens_;
    page_bytes_ = other.page_bytes_;
    std::copy(std::begin(other.parts_), std::end(other.parts_), std::begin(parts_));
    pool_ = other.pool_;
    pages_ = std::move(other.pages_);
    other.pages_.clear();
  }
  return *this;
}

LayerCache::Page* LayerCache::new_page() const {
  void* memory = ::operator new (sizeof(Page) + page_bytes_, std::align_val_t{alignof(Page)});
  Page* page = new (memory) Page;
  std::memset(page->data(), 0, page_bytes_);
  return page;
}

void LayerCache::drop(Page* page) {
  if (page->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  page->~Page();
  ::operator delete (page, std::align_val_t{alignof(Page)});
  if (pool_) pool_->release(page_bytes_);
}

void LayerCache::clear() {
  for (Page* page : pages_) drop(page);
  pages_.clear();
  length = 0;
}

int64_t LayerCache::pages_to_add(int64_t tokens) const {
  const int64_t held = static_cast<int64_t>(pages_.size()), want = pages_for(tokens, page_tokens_);
  int64_t n = std::max<int64_t>(0, want - held);
  // The pages reserve makes room on: from the one `length` is in (never a page wholly below it).
  for (int64_t i = length / page_tokens_; i < std::min(held, want); ++i)
    if (pages_[static_cast<size_t>(i)]->refs.load(std::memory_order_relaxed) > 1) ++n;
  return n;
}

size_t LayerCache::bytes_to_reserve(int64_t tokens) const {
  return static_cast<size_t>(pages_to_add(tokens)) * page_bytes_;
}

void LayerCache::reserve(int64_t tokens) {
  const size_t bytes = bytes_to_reserve(tokens);
  if (bytes == 0) return;
  if (pool_) pool_->acquire(bytes);
  grow(tokens, bytes);
}

void LayerCache::grow(int64_t tokens, size_t paid) {
  size_t made = 0;
  try {
    const int64_t want = pages_for(tokens, page_tokens_);
    for (int64_t i = length / page_tokens_; i < std::min<int64_t>(want, pages_.size()); ++i) {
      Page*& page = pages_[static_cast<size_t>(i)];
      if (page->refs.load(std::memory_order_acquire) == 1) continue;
      Page* own = new_page();
      ++made;
      std::memcpy(own->data(), page->data(), page_bytes_);
      drop(std::exchange(page, own));
    }
    pages_.reserve(static_cast<size_t>(want));
    while (static_cast<int64_t>(pages_.size()) < want) {
      pages_.push_back(nullptr);  // never reallocates (reserved): new_page's page is not lost
      pages_.back() = new_page();
      ++made;
    }
  } catch (...) {
    if (!pages_.empty() && pages_.back() == nullptr) pages_.pop_back();
    if (pool_) pool_->release(paid - made * page_bytes_);
    throw;
  }
  // A page counted as shared may have lost its other holders in the meantime.
  if (pool_) pool_->release(paid - made * page_bytes_);
}

bool LayerCache::same_format(const LayerCache& other) const {
  if (dtype_ != other.dtype_ || page_tokens_ != other.page_tokens_ || pool_ != other.pool_)
    return false;
  for (int p = 0; p < 3; ++p)
    if (parts_[p].width != other.parts_[p].width) return false;
  return true;
}

void LayerCache::share_prefix(const LayerCache& other, int64_t tokens) {
  if (!same_format(other))
    fail("internal: a KV cache can only share the pages of one of the same format and pool");
  if (length != 0) fail("internal: sharing a prefix into a KV cache that holds {} tokens", length);
  if (tokens < 0 || tokens > other.length)
    fail("internal: sharing {} tokens of a KV cache that holds {}", tokens, other.length);
  clear();
  const size_t bytes = tokens % page_tokens_ != 0 ? page_bytes_ : 0;
  if (pool_) pool_->acquire(bytes);
  share(other, tokens, bytes);
}

void LayerCache::share(const LayerCache& other, int64_t tokens, size_t paid) {
  const int64_t whole = tokens / page_tokens_, rows = tokens % page_tokens_;
  Page* own = nullptr;
  try {
    pages_.reserve(static_cast<size_t>(pages_for(tokens, page_tokens_)));
    if (rows > 0) own = new_page();
  } catch (...) {
    if (pool_) pool_->release(paid);
    throw;
  }
  for (int64_t i = 0; i < whole; ++i) {
    Page* page = other.pages_[static_cast<size_t>(i)];
    page->refs.fetch_add(1, std::memory_order_relaxed);
    pages_.push_back(page);
  }
  if (own) {
    // Only the prefix's rows: those past it are the other cache's to write.
    const std::byte* src = other.pages_[static_cast<size_t>(whole)]->data();
    for (const Part& p : parts_)
      std::memcpy(own->data() + p.offset, src + p.offset, static_cast<size_t>(rows) * p.row_bytes);
    pages_.push_back(own);
  }
  length = tokens;
}

void LayerCache::truncate(int64_t tokens) {
  if (tokens < 0 || tokens > length)
    fail("internal: truncating a KV cache of {} tokens to {}", length, tokens);
  const size_t keep = static_cast<size_t>(pages_for(tokens, page_tokens_));
  for (size_t i = keep; i < pages_.size(); ++i) drop(pages_[i]);
  pages_.resize(std::min(keep, pages_.size()));
  length = tokens;
}

const std::byte* LayerCache::row(KvPart part, int64_t t) const {
  const Part& p = parts_[static_cast<int>(part)];
  return pages_[static_cast<size_t>(t / page_tokens_)]->data() + p.offset +
         static_cast<size_t>(t % page_tokens_) * p.row_bytes;
}

void LayerCache::store(KvPart part, int64_t t, const float* values) {
  const Part& p = parts_[static_cast<int>(part)];
  if (t < 0 || t >= capacity())
    fail("internal: KV cache store at token {} beyond the {} reserved", t, capacity());
  // A page another cache holds lies wholly below both lengths: a store there is a bug upstream.
  if (pages_[static_cast<size_t>(t / page_tokens_)]->refs.load(std::memory_order_relaxed) != 1)
    fail("internal: KV cache store at token {} into a page shared with another cache", t);
  std::byte* dst = const_cast<std::byte*>(row(part, t));
  if (dtype_ == KvDType::kF32) {
    std::memcpy(dst, values, static_cast<size_t>(p.width) * 4);
  } else if (!fp8_part(dtype_, part)) {
    for (int64_t i = 0; i < p.width; ++i) {
      const uint16_t h = f32_to_bf16(values[i]);
      std::memcpy(dst + 2 * i, &h, 2);
    }
  } else {
    // Codes first, then one float32 scale per block of 128: value = code's value * scale.
    for (int64_t b = 0; b < fp8_blocks(p.width); ++b) {
      const int64_t i0 = b * kFp8Block, i1 = std::min(p.width, i0 + kFp8Block);
      float amax = 0.0f;
      for (int64_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(values[i]));
      const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
      for (int64_t i = i0; i < i1; ++i)
        dst[i] = static_cast<std::byte>(f32_to_f8e4m3(values[i] / scale));
      std::memcpy(dst + p.width + 4 * b, &scale, 4);
    }
  }
}

void LayerCache::read_row(KvPart part, int64_t t, float* dst) const {
  const Part& p = parts_[static_cast<int>(part)];
  const std::byte* src = row(part, t);
  if (dtype_ == KvDType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(p.width) * 4);
  } else if (!fp8_part(dtype_, part)) {
    convert_to_f32(DType::BF16, src, static_cast<size_t>(p.width), dst);
  } else {
    const std::array<float, 256>& value = fp8_values();
    for (int64_t b = 0; b < fp8_blocks(p.width); ++b) {
      float scale;
      std::memcpy(&scale, src + p.width + 4 * b, 4);
      for (int64_t i = b * kFp8Block; i < std::min(p.width, (b + 1) * kFp8Block); ++i)
        dst[i] = value[static_cast<uint8_t>(src[i])] * scale;
    }
  }
}

void LayerCache::gather(KvPart part, int64_t t0, int64_t t1, float* dst) const {
  const int64_t w = width(part);
  if (t0 < 0 || t1 > capacity())
    fail("internal: KV cache read of tokens [{}, {}) beyond the {} reserved", t0, t1, capacity());
  for (int64_t t = t0; t < t1; ++t) read_row(part, t, dst + (t - t0) * w);
}

void LayerCache::gather(KvPart part, std::span<const int32_t> tokens, float* dst) const {
  const int64_t w = width(part), reserved = capacity();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= reserved)
      fail("internal: KV cache read of token {} beyond the {} reserved", tokens[i], reserved);
    read_row(part, tokens[i], dst + static_cast<int64_t>(i) * w);
  }
}

KvCache::KvCache(const ModelConfig& config, KvDType dtype, int64_t page_tokens,
                 std::shared_ptr<KvPagePool> pool)
    : dtype_(dtype), page_tokens_(page_tokens), pool_(std::move(pool)) {
  layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t L = 0; L < config.num_hidden_layers; ++L)
    layers.emplace_back(dtype, page_tokens, config.kv_lora_rank, config.qk_rope_head_dim,
                        index_width(config, L), pool_);
}

size_t KvCache::bytes_to_reserve(int64_t tokens) const {
  size_t n = 0;
  for (const auto& l : layers) n += l.bytes_to_reserve(tokens);
  return n;
}

// All layers' pages are counted in the pool at once, so that a reservation that does not fit
// changes nothing rather than leaving some layers grown.
void KvCache::reserve(int64_t tokens) {
  const size_t bytes = bytes_to_reserve(tokens);
  if (bytes == 0) return;
  if (pool_) pool_->acquire(bytes);
  size_t left = bytes;
  try {
    for (auto& l : layers) {
      const size_t b = l.bytes_to_reserve(tokens);
      left -= b;
      l.grow(tokens, b);
    }
  } catch (...) {
    if (pool_) pool_->release(left);  // of the layers not reached (grow gives back its own)
    throw;
  }
}

void KvCache::share_prefix(const KvCache& other, int64_t tokens) {
  if (other.layers.size() != layers.size())
    fail("internal: sharing the KV cache of a model of {} layers into one of {}",
         other.layers.size(), layers.size());
  if (length() != 0 || !consistent())
    fail("internal: sharing a prefix into a KV cache that holds {} tokens", length());
  for (size_t L = 0; L < layers.size(); ++L) {
    if (!layers[L].same_format(other.layers[L]))
      fail("internal: a KV cache can only share the pages of one of the same format and pool");
    if (tokens < 0 || tokens > other.layers[L].length)
      fail("internal: sharing {} tokens of a KV cache that holds {}", tokens,
           other.layers[L].length);
  }
  clear();
  const size_t copied = page_tokens_ > 0 && tokens % page_tokens_ != 0 ? 1 : 0;
  size_t bytes = 0;
  for (const auto& l : layers) bytes += copied * l.page_bytes_;
  if (pool_) pool_->acquire(bytes);
  size_t left = bytes;
  try {
    for (size_t L = 0; L < layers.size(); ++L) {
      const size_t b = copied * layers[L].page_bytes_;
      left -= b;
      layers[L].share(other.layers[L], tokens, b);
    }
  } catch (...) {
    if (pool_) pool_->release(left);
    clear();
    throw;
  }
}

void KvCache::truncate(int64_t tokens) {
  if (tokens < 0 || tokens > length())
    fail("internal: truncating a KV cache of {} tokens to {}", length(), tokens);
  for (const auto& l : layers)
    if (l.length < tokens)
      fail("internal: truncating a KV cache to {} tokens, but a layer holds {}", tokens, l.length);
  for (auto& l : layers) l.truncate(tokens);
}

size_t KvCache::bytes_per_token(const ModelConfig& config, KvDType dtype) {
  size_t n = 0;
  for (int64_t L = 0; L < config.num_hidden_layers; ++L)
    n += row_bytes(dtype, KvPart::kLatent, config.kv_lora_rank) +
         row_bytes(dtype, KvPart::kRope, config.qk_rope_head_dim) +
         row_bytes(dtype, KvPart::kIndex, index_width(config, L));
  return n;
}

}  // namespace whittle
