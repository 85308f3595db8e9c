// No allocation in the decode loop: once warm, a decode step (GlmMoeDsa::decode into a reused
// logits vector, a cache with room reserved) asks the heap for nothing. Its own binary, because
// it replaces the global operator new to count calls (whittle's code allocates only through it;
// OpenBLAS's C allocations are not counted and not whittle's to make).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "model/glm_moe_dsa.h"
#include "quant/quantize_model.h"
#include "util/thread_pool.h"

namespace {
std::atomic<long> g_allocations{0};

void* counted(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* counted_aligned(std::size_t n, std::align_val_t al) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = static_cast<std::size_t>(al);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) {
  return counted(n);
}
void* operator new[](std::size_t n) {
  return counted(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_aligned(n, a);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace whittle {
namespace {

const std::filesystem::path kBundled =
    std::filesystem::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5";

// Prefill `prompt_len` tokens, reserve the cache for the steps, warm up, then count the heap
// allocations of `steps` decode steps.
long decode_allocations(const std::filesystem::path& model_dir, KvDType dtype) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(model_dir, pool, Kernels::kFast);
  // 122 > index_topk 64: the DSA selects; the steps cross the page boundary at 128 tokens and
  // the context grows by a fifth (every buffer sized by the context must have room already).
  const int64_t prompt_len = 122, warm = 3, steps = 24;
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (int64_t i = 0; i < prompt_len; ++i) prompt[static_cast<size_t>(i)] = (37 * i + 11) % 4000;
  KvCache cache(model.config(), dtype);
  model.prefill(prompt, cache, false);
  cache.reserve(prompt_len + warm + steps);
  std::vector<float> logits;
  for (int64_t i = 0; i < warm; ++i) model.decode(prompt[static_cast<size_t>(i)], cache, logits);
  const long before = g_allocations.load();
  for (int64_t i = 0; i < steps; ++i)
    model.decode(prompt[static_cast<size_t>(i + warm)], cache, logits);
  const long n = g_allocations.load() - before;
  EXPECT_EQ(cache.length(), prompt_len + warm + steps);
  EXPECT_EQ(logits.size(), static_cast<size_t>(model.config().vocab_size));
  return n;
}

TEST(DecodeAllocations, NoneOnceWarmOnTheBundledModel) {
  EXPECT_EQ(decode_allocations(kBundled, KvDType::kF32), 0);
  EXPECT_EQ(decode_allocations(kBundled, KvDType::kFP8), 0);
}

TEST(DecodeAllocations, NoneOnceWarmOnItsInt4Export) {
  // The int4 path: packed experts as one MoE job, absorbed attention over int4 kv_b.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("whittle-decode-alloc-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    ThreadPool pool(2);
    QuantizeOptions options;
    options.method = QuantMethod::kRtn;
    options.show_progress = false;
    quantize_checkpoint(kBundled, dir / "int4", options, pool);
  }
  EXPECT_EQ(decode_allocations(dir / "int4", KvDType::kBF16), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace whittle
