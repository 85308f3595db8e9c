// GPTQ against the original algorithm run in PyTorch (tests/golden/gptq_algo, made by
// tools/oracle/make_gptq_algo_golden.py) on the same W and H, plus the properties that hold
// whatever the reference says: the loss identity of the factor, GPTQ below RTN, the Hessian
// accumulator against a direct sum, dead inputs, damping, and errors that name the module.
#include "quant/gptq.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "io/npy.h"
#include "io/safetensors.h"
#include "tensor/dtype.h"
#include "util/testing.h"
#include "util/thread_pool.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/gptq_algo";

// The oracle's integer generator (see make_gptq_algo_golden.py): n values in [lo, hi].
std::vector<int64_t> splitmix_ints(uint64_t seed, int64_t n, int64_t lo, int64_t hi) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = seed + static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    v[static_cast<size_t>(i)] = lo + static_cast<int64_t>(z % static_cast<uint64_t>(hi - lo + 1));
  }
  return v;
}

// H = fp32((2/n)·XᵀX·2^-(e_k+e_l)) with X = Z + Y·B integers: exact, so bit-identical to the
// oracle's whatever the order of summation.
std::vector<float> generated_hessian(uint64_t seed, int64_t n, int64_t K, int64_t rank,
                                     const std::vector<int64_t>& dead) {
  const auto z = splitmix_ints(seed * 8 + 1, n * K, -2, 2);
  const auto y = splitmix_ints(seed * 8 + 2, n * rank, -8, 8);
  const auto b = splitmix_ints(seed * 8 + 3, rank * K, -3, 3);
  const auto e = splitmix_ints(seed * 8 + 4, K, 0, 3);
  std::vector<int64_t> x(static_cast<size_t>(n * K));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < K; ++k) {
      int64_t v = z[static_cast<size_t>(t * K + k)];
      for (int64_t j = 0; j < rank; ++j)
        v += y[static_cast<size_t>(t * rank + j)] * b[static_cast<size_t>(j * K + k)];
      x[static_cast<size_t>(t * K + k)] = v;
    }
  for (int64_t k : dead)
    for (int64_t t = 0; t < n; ++t) x[static_cast<size_t>(t * K + k)] = 0;
  std::vector<float> h(static_cast<size_t>(K * K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t l = 0; l < K; ++l) {
      int64_t g = 0;
      for (int64_t t = 0; t < n; ++t)
        g += x[static_cast<size_t>(t * K + k)] * x[static_cast<size_t>(t * K + l)];
      const double v =
          static_cast<double>(g) * (2.0 / static_cast<double>(n)) *
          std::ldexp(1.0, -static_cast<int>(e[static_cast<size_t>(k)] + e[static_cast<size_t>(l)]));
      h[static_cast<size_t>(k * K + l)] = static_cast<float>(v);
    }
  return h;
}

std::vector<float> generated_weight(uint64_t seed, int64_t rows, int64_t cols) {
  const auto v = splitmix_ints(seed * 8 + 5, rows * cols, -2047, 2047);
  std::vector<float> w(v.size());
  for (size_t i = 0; i < v.size(); ++i) w[i] = static_cast<float>(static_cast<double>(v[i]) / 2048);
  return w;
}

nlohmann::json oracle() {
  std::ifstream f(kGolden / "ORACLE.json");
  if (!f) throw Error("cannot open " + (kGolden / "ORACLE.json").string());
  return nlohmann::json::parse(f);
}

struct GoldenCase {
  std::string name;
  int64_t rows = 0, cols = 0;
  QuantSpec spec;
  GptqOptions opt;
  std::vector<float> w, h;
  QuantizedLinear reference;
  nlohmann::json info;
};

GoldenCase load_case(const std::string& name) {
  const nlohmann::json all = oracle();
  GoldenCase c;
  c.name = name;
  c.info = all.at("cases").at(name);
  const auto& s = c.info.at("settings");
  c.rows = s.at("N").get<int64_t>();
  c.cols = s.at("K").get<int64_t>();
  c.spec.bits = c.info.at("bits").get<int>();
  c.spec.group_size = s.at("group").get<int64_t>();
  c.opt.damp = c.info.at("percdamp").get<double>();
  c.opt.block_size = s.at("block").get<int64_t>();
  if (name == "stored") {
    c.w = read_npy_f32(kGolden / "stored.w.npy");
    c.h = read_npy_f32(kGolden / "stored.h.npy");
  } else {
    const auto seed = s.at("seed").get<uint64_t>();
    c.h = generated_hessian(seed, s.at("n").get<int64_t>(), c.cols, s.at("rank").get<int64_t>(),
                            s.at("dead").get<std::vector<int64_t>>());
    if (s.contains("tensor")) {
      TensorStore store(fs::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5");
      c.w = store.load_f32(s.at("tensor").get<std::string>(), {c.rows, c.cols});
    } else {
      c.w = generated_weight(seed, c.rows, c.cols);
    }
    // Our copy of H is the oracle's: its diagonal bit for bit.
    const auto diag = read_npy_f32(kGolden / (name + ".h_diag.npy"));
    for (int64_t k = 0; k < c.cols; ++k)
      EXPECT_EQ(diag[static_cast<size_t>(k)], c.h[static_cast<size_t>(k * c.cols + k)])
          << name << " H[" << k << "," << k << "]";
  }
  double w_sum = 0, h_sum = 0;
  for (float v : c.w) w_sum += v;
  for (float v : c.h) h_sum += v;
  EXPECT_DOUBLE_EQ(w_sum, c.info.at("w_sum").get<double>()) << name;
  EXPECT_NEAR(h_sum, c.info.at("h_sum").get<double>(), 1e-9 * std::abs(h_sum)) << name;

  // The reference's codes (8 per int32, code + 8 per nibble) and its fp16 scales.
  std::vector<int64_t> shape;
  const auto words = read_npy_i32(kGolden / (name + ".codes.npy"), &shape);
  const auto scales = read_npy_f32(kGolden / (name + ".scales.npy"));
  QuantizedLinear& r = c.reference;
  r = {name, c.rows, c.cols, c.spec, {}, {}};
  r.q.resize(static_cast<size_t>(c.rows * c.cols));
  for (int64_t n = 0; n < c.rows; ++n)
    for (int64_t k = 0; k < c.cols; ++k) {
      const auto word = static_cast<uint32_t>(words[static_cast<size_t>(n * c.cols / 8 + k / 8)]);
      r.q[static_cast<size_t>(n * c.cols + k)] =
          static_cast<int8_t>(static_cast<int>((word >> (4 * (k % 8))) & 15u) - 8);
    }
  for (float s : scales) r.scales.push_back(f32_to_f16(s));
  return c;
}

double loss_of(const GoldenCase& c, const QuantizedLinear& q) {
  return gptq_proxy_loss(c.w.data(), q.dequantize().data(), c.rows, c.cols, c.h.data());
}

const char* const kCases[] = {"correlated", "awkward", "real_q_b", "stored"};

// The criterion: tr((W−Q)H(W−Q)ᵀ) within 1 % of PyTorch's on the same W and H.
TEST(Gptq, MatchesPytorchReference) {
  for (const char* name : kCases) {
    SCOPED_TRACE(name);
    const GoldenCase c = load_case(name);
    const double ref_loss = loss_of(c, c.reference);
    // Our reading of the reference's codes gives the loss the oracle computed from them.
    EXPECT_NEAR(ref_loss, c.info.at("loss").get<double>(), 1e-9 * ref_loss);

    GptqStats stats;
    const QuantizedLinear q =
        gptq_quantize(name, c.w.data(), c.rows, c.cols, c.h, c.spec, c.opt, &stats);
    const double loss = loss_of(c, q);
    EXPECT_DOUBLE_EQ(stats.loss, loss);
    // The criterion is 1 %; achieved at most 6.5e-5 (the awkward case), so the bound is
    // ~30x that.
    EXPECT_NEAR(loss, ref_loss, 2e-3 * ref_loss);
    EXPECT_NEAR(stats.rtn_loss, c.info.at("rtn_loss").get<double>(), 1e-9 * stats.rtn_loss);
    EXPECT_NEAR(stats.damped_loss, c.info.at("damped_loss").get<double>(),
                0.01 * stats.damped_loss);

    int64_t same_codes = 0, same_scales = 0, first_group_same = 0;
    for (size_t i = 0; i < q.q.size(); ++i) same_codes += q.q[i] == c.reference.q[i];
    for (size_t i = 0; i < q.scales.size(); ++i)
      same_scales += q.scales[i] == c.reference.scales[i];
    // A row's first scale comes from the weight before any error feedback: exact.
    for (int64_t n = 0; n < c.rows; ++n)
      first_group_same += q.scales[static_cast<size_t>(n * q.groups())] ==
                          c.reference.scales[static_cast<size_t>(n * q.groups())];
    EXPECT_EQ(first_group_same, c.rows);
    const double code_share = static_cast<double>(same_codes) / static_cast<double>(q.q.size());
    const double scale_share =
        static_cast<double>(same_scales) / static_cast<double>(q.scales.size());
    std::printf(
        "  %-10s [%lld x %lld] G=%lld: loss %.6g, PyTorch %.6g (%+.4f %%), RTN %.6g; codes equal "
        "%.4f %%, scales equal %.4f %%\n",
        name, static_cast<long long>(c.rows), static_cast<long long>(c.cols),
        static_cast<long long>(c.spec.group_size), loss, ref_loss,
        100.0 * (loss - ref_loss) / ref_loss, stats.rtn_loss, 100.0 * code_share,
        100.0 * scale_share);
    // Float order (float64 factor, BLAS) may flip a rounding decision, and error feedback
    // carries a flip along its row, so the share need not be 1; all four cases gave 100 %. The
    // scales of `awkward` differ in 4 of 640 by an fp16 ulp: there the float32 reference differs
    // from its own float64 run in the same 4 (ORACLE.json float64_run_scales_equal), and whittle's
    // loss is the float64 run's.
    EXPECT_GE(code_share, 0.99);
  }
}

// W − Q = E·U exactly when every error is fed forward (E the matrix of errs), so Σ err² =
// ‖(W − Q) U⁻¹‖² = tr((W − Q)(H + λI)(W − Q)ᵀ). A skipped or wrong update (lazy or in-block)
// breaks it.
TEST(Gptq, DampedLossIsTheQuadraticFormOfTheFactor) {
  const int64_t rows = 40, cols = 200;
  const auto h = generated_hessian(11, 512, cols, 8, {});
  const auto w = generated_weight(11, rows, cols);
  for (int64_t block : {int64_t{128}, int64_t{48}, int64_t{7}, int64_t{1000}}) {
    SCOPED_TRACE(block);
    GptqOptions opt;
    opt.block_size = block;
    QuantSpec spec;
    spec.group_size = 32;
    GptqStats stats;
    const QuantizedLinear q = gptq_quantize("m", w.data(), rows, cols, h, spec, opt, &stats);
    std::vector<float> hd = h;
    for (int64_t k = 0; k < cols; ++k)
      hd[static_cast<size_t>(k * cols + k)] += static_cast<float>(stats.damp);
    const double form = gptq_proxy_loss(w.data(), q.dequantize().data(), rows, cols, hd.data());
    EXPECT_NEAR(stats.damped_loss, form, 1e-4 * form);
  }
}

TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  const int64_t rows = 32, cols = 256;
  const auto h = generated_hessian(5, 512, cols, 8, {});
  const auto w = generated_weight(5, rows, cols);
  GptqStats stats;
  gptq_quantize("m", w.data(), rows, cols, h, QuantSpec{}, GptqOptions{}, &stats);
  EXPECT_LT(stats.loss, 0.5 * stats.rtn_loss) << stats.loss << " vs RTN " << stats.rtn_loss;
}

TEST(Gptq, HessianAccumulatorMatchesDirectSum) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 1.0f);
  const int64_t cols = 300;  // two panels of 256, the second short
  ThreadPool pool(2);
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
    HessianAccumulator acc(cols);
    std::vector<double> direct(static_cast<size_t>(cols * cols), 0.0);
    int64_t total = 0;
    for (int64_t rows : {int64_t{1}, int64_t{37}, int64_t{0}, int64_t{200}}) {
      std::vector<float> x(static_cast<size_t>(rows * cols));
      for (float& v : x) v = d(rng);
      acc.add(x.data(), rows, p);
      total += rows;
      for (int64_t t = 0; t < rows; ++t)
        for (int64_t i = 0; i < cols; ++i)
          for (int64_t j = 0; j < cols; ++j)
            direct[static_cast<size_t>(i * cols + j)] +=
                static_cast<double>(x[static_cast<size_t>(t * cols + i)]) *
                x[static_cast<size_t>(t * cols + j)];
    }
    EXPECT_EQ(acc.count(), total);
    const auto h = acc.hessian();
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const double want =
            2.0 / static_cast<double>(total) * direct[static_cast<size_t>(i * cols + j)];
        ASSERT_NEAR(h[static_cast<size_t>(i * cols + j)], want, 1e-5 * (1.0 + std::abs(want)))
            << i << "," << j;
        ASSERT_EQ(h[static_cast<size_t>(i * cols + j)], h[static_cast<size_t>(j * cols + i)]);
      }
  }
  expect_error([] { HessianAccumulator(4).hessian(); }, {"no calibration rows", "quantize_rtn"});
}

// An input that is 0 on every calibration row: its weight column is zeroed and coded 0, and the
// other columns come out as if the column were not there at all.
TEST(Gptq, DeadInputColumnsAreZeroedAndIgnored) {
  const int64_t rows = 24, cols = 96;
  const std::vector<int64_t> dead = {0, 17, 95};
  const auto h = generated_hessian(7, 256, cols, 4, dead);
  const auto w = generated_weight(7, rows, cols);
  QuantSpec spec;
  spec.group_size = 32;
  GptqStats stats;
  const QuantizedLinear q = gptq_quantize("m", w.data(), rows, cols, h, spec, {}, &stats);
  EXPECT_EQ(stats.dead_columns, 3);
  for (int64_t k : dead)
    for (int64_t n = 0; n < rows; ++n) EXPECT_EQ(q.q[static_cast<size_t>(n * cols + k)], 0);
  // Dead columns zeroed beforehand give the same result: only the weight is touched.
  std::vector<float> w0 = w;
  for (int64_t k : dead)
    for (int64_t n = 0; n < rows; ++n) w0[static_cast<size_t>(n * cols + k)] = 0.0f;
  const QuantizedLinear q0 = gptq_quantize("m", w0.data(), rows, cols, h, spec, {});
  EXPECT_EQ(q.q, q0.q);
  EXPECT_EQ(q.scales, q0.scales);
  // A diagonal H (uncorrelated inputs) makes U diagonal: no error is fed forward and GPTQ is RTN.
  std::vector<float> diag_h(static_cast<size_t>(cols * cols), 0.0f);
  for (int64_t k = 0; k < cols; ++k) diag_h[static_cast<size_t>(k * cols + k)] = 1.0f + 0.01f * k;
  const QuantizedLinear qz = gptq_quantize("m", w0.data(), rows, cols, diag_h, spec, {});
  const QuantizedLinear rtn = quantize_rtn("m", w0.data(), rows, cols, spec);
  EXPECT_EQ(qz.q, rtn.q);
  EXPECT_EQ(qz.scales, rtn.scales);
}

// λ = damp · mean(diag H). On an ill-conditioned H more damping moves GPTQ towards RTN: the
// undamped loss rises; no damping at all fails on a singular H with an error saying so.
TEST(Gptq, DampingIsRelativeToTheMeanDiagonalAndCostsLoss) {
  const int64_t rows = 32, cols = 128;
  const auto h = generated_hessian(9, 512, cols, 8, {});
  const auto w = generated_weight(9, rows, cols);
  double mean_diag = 0;
  for (int64_t k = 0; k < cols; ++k) mean_diag += h[static_cast<size_t>(k * cols + k)];
  mean_diag /= static_cast<double>(cols);
  double prev = 0.0;
  for (double damp : {0.01, 0.1, 1.0}) {
    GptqOptions opt;
    opt.damp = damp;
    GptqStats stats;
    gptq_quantize("m", w.data(), rows, cols, h, QuantSpec{}, opt, &stats);
    EXPECT_NEAR(stats.damp, damp * mean_diag, 1e-9 * mean_diag);
    EXPECT_GT(stats.loss, prev) << "damp " << damp;
    EXPECT_LT(stats.loss, stats.rtn_loss) << "damp " << damp;
    prev = stats.loss;
  }
  // Rank 1: singular without damping.
  std::vector<float> h1(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) h1[static_cast<size_t>(i * cols + j)] = 1.0f;
  GptqOptions none;
  none.damp = 0.0;
  expect_error([&] { gptq_quantize("layers.0.mlp.up_proj", w.data(), rows, cols, h1, {}, none); },
               {"layers.0.mlp.up_proj", "not positive definite"});
}

TEST(Gptq, RejectsBadInput) {
  const int64_t rows = 4, cols = 8;
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.5f),
      eye(static_cast<size_t>(cols * cols));
  for (int64_t k = 0; k < cols; ++k) eye[static_cast<size_t>(k * cols + k)] = 1.0f;
  const std::string m = "model.layers.3.mlp.experts.7.gate_proj";
  expect_error([&] { gptq_quantize(m, w.data(), rows, cols, std::vector<float>(63), {}, {}); },
               {m, "63 values", "8 x 8 = 64"});
  // Indefinite: an eigenvalue of -1 that 1 % damping cannot lift.
  std::vector<float> bad = eye;
  bad[1] = bad[cols] = 2.0f;
  expect_error([&] { gptq_quantize(m, w.data(), rows, cols, bad, {}, {}); },
               {m, "not positive definite", "at input 0 of 8", "damping"});
  std::vector<float> nan = eye;
  nan[9] = std::nanf("");
  expect_error([&] { gptq_quantize(m, w.data(), rows, cols, nan, {}, {}); },
               {m, "non-finite", "[1, 1]"});
  GptqOptions zero_block;
  zero_block.block_size = 0;
  expect_error([&] { gptq_quantize(m, w.data(), rows, cols, eye, {}, zero_block); },
               {m, "block size"});
  GptqOptions negative;
  negative.damp = -0.1;
  expect_error([&] { gptq_quantize(m, w.data(), rows, cols, eye, {}, negative); }, {m, "damping"});
  const GptqFactor f = gptq_factor(m, eye, cols);
  expect_error([&] { gptq_quantize(m, w.data(), 2, 16, f, {}, {}); }, {m, "16 input columns", "8"});
}

// Uᵀ U = (H + λI)⁻¹ with U upper, for a size of several factorization panels (the last one
// short), and the same bits with a pool as without.
TEST(Gptq, FactorIsTheUpperCholeskyFactorOfTheInverse) {
  const int64_t cols = 600;
  const auto h = generated_hessian(17, 1024, cols, 16, {});
  const GptqFactor f = gptq_factor("m", h, cols);
  ThreadPool pool(2);
  EXPECT_EQ(gptq_factor("m", h, cols, {}, &pool).u, f.u);
  double max_err = 0.0;
  // (H + λI) · Uᵀ U should be I; Uᵀ U in float64 from the float32 U.
  std::vector<double> utu(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t k = 0; k < cols; ++k)
    for (int64_t i = k; i < cols; ++i)
      for (int64_t j = k; j < cols; ++j)
        utu[static_cast<size_t>(i * cols + j)] +=
            static_cast<double>(f.u[static_cast<size_t>(k * cols + i)]) *
            f.u[static_cast<size_t>(k * cols + j)];
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(f.u[static_cast<size_t>(i * cols + j)], 0.0f);
    ASSERT_GT(f.u[static_cast<size_t>(i * cols + i)], 0.0f);
  }
  for (int64_t i = 0; i < cols; i += 7)
    for (int64_t j = 0; j < cols; ++j) {
      double v = 0.0;
      for (int64_t k = 0; k < cols; ++k)
        v += (static_cast<double>(h[static_cast<size_t>(i * cols + k)]) + (i == k ? f.damp : 0.0)) *
             utu[static_cast<size_t>(k * cols + j)];
      max_err = std::max(max_err, std::abs(v - (i == j ? 1.0 : 0.0)));
    }
  // float32 U: about 6e-8 relative per entry, times the condition number of H + λI (1.4e-5 seen).
  EXPECT_LT(max_err, 1e-4);
  std::printf("  max |(H + λI) UᵀU − I| = %.3g\n", max_err);
}

// gate_proj and up_proj share one factor; a pool splits rows without changing a bit.
TEST(Gptq, SharedFactorAndPoolGiveTheSameResult) {
  const int64_t rows = 50, cols = 160;
  const auto h = generated_hessian(13, 512, cols, 8, {3});
  const auto w = generated_weight(13, rows, cols);
  QuantSpec spec;
  spec.group_size = 64;
  const QuantizedLinear direct = gptq_quantize("m", w.data(), rows, cols, h, spec);
  const GptqFactor f = gptq_factor("m", h, cols);
  ThreadPool pool(2);
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
    const QuantizedLinear q = gptq_quantize("m", w.data(), rows, cols, f, spec, {}, nullptr, p);
    EXPECT_EQ(q.q, direct.q);
    EXPECT_EQ(q.scales, direct.scales);
  }
}

// Not run by default: the time of GLM-5-sized layers on a pool of 2 (report numbers with it).
TEST(Gptq, DISABLED_Timing) {
  ThreadPool pool(2);
  const int64_t shapes[][2] = {{2048, 2048}, {2048, 6144}};
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1], n = 4096;
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n * cols)), w(static_cast<size_t>(rows * cols));
    for (float& v : x) v = d(rng);
    for (float& v : w) v = 0.02f * d(rng);
    // Wall and process CPU seconds: on a shared machine the CPU time says what the work costs and
    // cpu / wall how many of the 2 cores it got.
    using clock = std::chrono::steady_clock;
    struct Mark {
      clock::time_point wall = clock::now();
      std::clock_t cpu = std::clock();
    };
    auto since = [](const Mark& a, const Mark& b) {
      return std::pair{std::chrono::duration<double>(b.wall - a.wall).count(),
                       static_cast<double>(b.cpu - a.cpu) / CLOCKS_PER_SEC};
    };
    Mark m0;
    HessianAccumulator acc(cols);
    acc.add(x.data(), n, &pool);
    auto h = acc.hessian();
    Mark m1;
    const GptqFactor f = gptq_factor("timing", std::move(h), cols, {}, &pool);
    Mark m2;
    gptq_quantize("timing", w.data(), rows, cols, f, QuantSpec{}, {}, nullptr, &pool);
    Mark m3;
    const auto [hw, hc] = since(m0, m1);
    const auto [fw, fc] = since(m1, m2);
    const auto [qw, qc] = since(m2, m3);
    std::printf(
        "  N=%lld K=%lld (wall s / cpu s): hessian of %lld rows %.2f / %.2f, factor %.2f / %.2f, "
        "quantize %.2f / %.2f\n",
        static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n), hw,
        hc, fw, fc, qw, qc);
  }
}

}  // namespace
}  // namespace whittle
