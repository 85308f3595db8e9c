// Kernel microbenchmarks: the int4 and bf16 GEMV kernels against the machine's read bandwidth, on
// weights far larger than the caches (a ring of copies, each read once per round), per kernel set.
//   build/whittle_kernels_bench [--benchmark_filter=Int4] ; WHITTLE_ISA=avx2 caps the kernel set,
//   WHITTLE_BENCH_THREADS=1 runs one thread (all cores by default)
// The counters: bytes/s of weights streamed (GB/s = 1e9), and what fraction of the measured
// bandwidth that is.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "ops/int4_linear.h"
#include "ops/linear.h"
#include "ops/memory_bandwidth.h"
#include "tensor/packed_int4.h"
#include "util/thread_pool.h"

namespace whittle {
namespace {

constexpr size_t kRingBytes = size_t{1} << 30;

ThreadPool& pool() {
  static ThreadPool p([] {
    const char* env = std::getenv("WHITTLE_BENCH_THREADS");
    return env != nullptr ? std::atoi(env) : 0;
  }());
  return p;
}

double bandwidth_gbs() {
  static const double gbs = measure_read_bandwidth(pool()).best_gbs;
  return gbs;
}

// A GPTQ-shaped int4 weight [N, K], g128, sym, random codes and f16 scales, packed.
std::shared_ptr<const PackedInt4> random_packed(int64_t N, int64_t K) {
  std::mt19937 rng(1);
  const int64_t G = K / 128;
  std::vector<int32_t> qweight(static_cast<size_t>(K / 8 * N));
  for (int32_t& w : qweight) w = static_cast<int32_t>(rng());
  std::vector<uint16_t> scales(static_cast<size_t>(G * N), f32_to_f16(0.01f));
  GptqTensors t{std::as_bytes(std::span<const int32_t>(qweight)),
                {},
                std::as_bytes(std::span<const uint16_t>(scales)),
                {},
                DType::F16,
                G};
  return pack_int4(Weight::gptq("bench", t, N, K, GptqParams{4, 128, false, true}), &pool());
}

void Int4Gemv(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1), M = state.range(2);
  auto proto = random_packed(N, K);
  // Copies of the packed weight, together far larger than the last-level cache.
  const size_t copies = std::max<size_t>(2, kRingBytes / proto->bytes());
  std::vector<PackedInt4> ring(copies, *proto);
  for (PackedInt4& p : ring) {
    auto data = std::shared_ptr<std::byte>(
        static_cast<std::byte*>(std::aligned_alloc(64, p.bytes())), std::free);
    std::memcpy(data.get(), proto->data.get(), p.bytes());
    p.data = data;
  }
  std::vector<float> x(static_cast<size_t>(M * K), 0.5f), y(static_cast<size_t>(M * N));
  size_t i = 0;
  for (auto _ : state) {
    int4_linear(ring[i++ % copies], x.data(), M, y.data(), false, &pool());
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(proto->bytes()) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["GMAC/s"] = benchmark::Counter(
      static_cast<double>(N * K * M) * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["bw_GB/s"] = bandwidth_gbs();
  state.SetLabel(std::string(isa_name(active_isa())));
}

void Bf16Gemv(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1), M = state.range(2);
  std::vector<uint16_t> bits(static_cast<size_t>(N * K));
  std::mt19937 rng(2);
  for (uint16_t& b : bits) b = f32_to_bf16(static_cast<float>(rng() % 1000) * 1e-4f);
  Weight w =
      Weight::dense("bench", DType::BF16, std::as_bytes(std::span<const uint16_t>(bits)), N, K);
  std::vector<float> x(static_cast<size_t>(M * K), 0.5f), y(static_cast<size_t>(M * N));
  for (auto _ : state) {
    linear_fast(w, x.data(), M, y.data(), false, &pool());
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = 2.0 * static_cast<double>(N * K) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["bw_GB/s"] = bandwidth_gbs();
  state.SetLabel(std::string(isa_name(active_isa())));
}

// GLM-5's expert gate/up [2048, 6144] and down [6144, 2048]; decode (M = 1), a few rows, and a
// prefill's share of one expert (128 rows: AMX where the CPU has it; WHITTLE_ISA=avx512vnni
// for the VNNI kernel). GMAC/s counts the products.
BENCHMARK(Int4Gemv)
    ->Args({2048, 6144, 1})
    ->Args({6144, 2048, 1})
    ->Args({2048, 6144, 4})
    ->Args({2048, 6144, 128})
    ->Args({6144, 2048, 128})
    ->Args({2048, 6144, 512})
    ->UseRealTime();
// 1 GiB of bf16 rows, lm_head-sized, through linear_fast: one row, and decode batches of 4 and 8.
BENCHMARK(Bf16Gemv)
    ->Args({87381, 6144, 1})
    ->Args({87381, 6144, 4})
    ->Args({87381, 6144, 8})
    ->UseRealTime();

}  // namespace
}  // namespace whittle

BENCHMARK_MAIN();
