// `whittle quantize` end to end: the RTN export of a tiny GLM-5 is byte for byte auto-round
// 0.16.1's (tests/golden/quantize, tools/oracle/make_quantize_golden.py), the packer is
// auto-round's packer on the same codes and scales, the plan of the bundled model is the published
// recipe's, the written quantization_config means the same to every reader as auto-round's, and bad
// requests fail before anything that looks like a model is written.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "io/checkpoint_io.h"
#include "io/npy.h"
#include "io/quant_config.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/glm_moe_dsa.h"
#include "quant/gptq_pack.h"
#include "quant/quantize_model.h"
#include "tensor/dtype.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kGolden = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/quantize";
const fs::path kTiny = fs::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5";

fs::path temp_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / fmt::format("whittle_quant_{}_{}", name, ::getpid());
  fs::remove_all(p);
  return p;
}

template <typename T>
std::vector<T> npy_as(const fs::path& path, DType dtype) {
  const NpyArray a = read_npy(path);
  EXPECT_EQ(a.dtype, dtype) << path;
  std::vector<T> out(a.bytes.size() / sizeof(T));
  std::memcpy(out.data(), a.bytes.data(), a.bytes.size());
  return out;
}

// auto-round's own packer (auto_round_extension QuantLinear.pack) on given codes and scales.
TEST(GptqPack, IsAutoRoundsPackerByteForByte) {
  for (const auto& e : fs::directory_iterator(kGolden / "packer")) {
    const fs::path d = e.path();
    std::vector<int64_t> shape;
    const std::vector<int8_t> q = npy_as<int8_t>(d / "q.npy", DType::I8);
    const NpyArray qa = read_npy(d / "q.npy");
    const NpyArray sa = read_npy(d / "scales.npy");
    const int64_t N = qa.shape[0], K = qa.shape[1], groups = sa.shape[1];
    const int bits = d.filename().string().ends_with("b8") ? 8 : 4;
    QuantizedLinear ql{
        "m", N, K, {bits, K / groups}, q, npy_as<uint16_t>(d / "scales.npy", DType::F16)};
    const GptqPacked p = pack_gptq(ql);
    EXPECT_EQ(p.qweight, npy_as<int32_t>(d / "qweight.npy", DType::I32)) << d;
    EXPECT_EQ(p.qzeros, npy_as<int32_t>(d / "qzeros.npy", DType::I32)) << d;
    EXPECT_EQ(p.scales, npy_as<uint16_t>(d / "scales_out.npy", DType::F16)) << d;
    EXPECT_EQ(p.g_idx, npy_as<int32_t>(d / "g_idx.npy", DType::I32)) << d;
  }
}

// The tensors of a checkpoint folder by name: dtype, shape and bytes.
std::map<std::string, std::tuple<DType, std::vector<int64_t>, std::vector<std::byte>>> tensors(
    const fs::path& dir) {
  TensorStore store(dir);
  std::map<std::string, std::tuple<DType, std::vector<int64_t>, std::vector<std::byte>>> out;
  for (const std::string& n : store.names()) {
    const TensorView v = store.get(n);
    out[n] = {v.dtype(), v.shape(), std::vector<std::byte>(v.bytes.begin(), v.bytes.end())};
  }
  return out;
}

QuantizeOptions rtn_options(int64_t group, bool vllm_rules) {
  QuantizeOptions o;
  o.method = QuantMethod::kRtn;
  o.plan.spec = {4, group};
  o.plan.vllm_rules = vllm_rules;
  o.show_progress = false;
  return o;
}

// Plain RTN (auto-round iters=0, disable_opt_rtn=True, format auto_gptq) of the same bf16 source,
// with the recipe's module set: every tensor identical in name, dtype, shape and bytes.
TEST(Quantize, RtnExportIsAutoRoundsByteForByte) {
  ThreadPool pool(2);
  const fs::path out = temp_dir("rtn_golden");
  // vLLM's rules off: auto-round quantizes q_a_proj while keeping its fused partner
  // kv_a_proj_with_mqa (48 outputs), and layers of 32 or 64 inputs that Marlin refuses.
  quantize_checkpoint(kGolden / "source", out, rtn_options(32, false), pool);
  const auto mine = tensors(out), theirs = tensors(kGolden / "autoround_rtn");
  ASSERT_EQ(mine.size(), theirs.size());
  int quantized = 0;
  for (const auto& [name, t] : theirs) {
    ASSERT_TRUE(mine.contains(name)) << name;
    EXPECT_EQ(std::get<0>(mine.at(name)), std::get<0>(t)) << name;
    EXPECT_EQ(std::get<1>(mine.at(name)), std::get<1>(t)) << name;
    EXPECT_TRUE(std::get<2>(mine.at(name)) == std::get<2>(t)) << name << ": bytes differ";
    quantized += name.ends_with(".qweight");
  }
  EXPECT_EQ(quantized, 27);

  // The configs: the same module list, and every reader (transformers/gptqmodel and vLLM) reads
  // the same decision for every module from whittle's `dynamic` as from auto-round's.
  const nlohmann::ordered_json mine_cfg = read_json_file(out / "config.json");
  const nlohmann::ordered_json theirs_cfg = read_json_file(kGolden / "autoround_rtn/config.json");
  const auto& mq = mine_cfg["quantization_config"];
  const auto& tq = theirs_cfg["quantization_config"];
  EXPECT_EQ(mq["modules_in_block_to_quantize"], tq["modules_in_block_to_quantize"]);
  for (const char* key : {"bits", "group_size", "sym", "data_type", "quant_method", "desc_act",
                          "lm_head", "true_sequential", "damp_percent"})
    EXPECT_EQ(mq[key], tq[key]) << key;
  EXPECT_FALSE(mq.contains("checkpoint_format"));  // GPTQ v1, as auto-round writes it
  EXPECT_EQ(mine_cfg["torch_dtype"], "float16");
  EXPECT_EQ(mine_cfg["dtype"], "float16");
  const auto a = QuantConfig::from_config_json(mine_cfg, "whittle");
  const auto b = QuantConfig::from_config_json(theirs_cfg, "auto-round");
  TensorStore source(kGolden / "source");
  int checked = 0;
  for (const std::string& n : source.names()) {
    if (!n.ends_with(".weight") || source.get(n).shape().size() != 2) continue;
    const std::string m = n.substr(0, n.size() - 7);
    EXPECT_EQ(a->for_module(m).has_value(), b->for_module(m).has_value()) << m;
    ++checked;
  }
  EXPECT_GT(checked, 30);
  fs::remove_all(out);
}

// The recipe's set on the bundled model: per MoE layer the 32 x 3 routed + 3 shared + 5 attention
// + 2 indexer (wq_b, wk) Linears; the dense MLP, weights_proj, router and lm_head stay 16-bit.
TEST(Quantize, PlanOfTheBundledModelIsTheRecipes) {
  const ModelConfig config = ModelConfig::load(kTiny);
  const WeightSource source(kTiny, config);
  const QuantPlan plan = plan_quantization(config, source.weights(), {});
  ASSERT_EQ(plan.layers.size(), 6u);
  int64_t dense_q = 0;
  for (const LinearPlan& p : plan.layers[0]) dense_q += p.quantize;
  EXPECT_EQ(dense_q, 7);  // attention 5 + indexer wq_b, wk
  for (size_t L = 1; L < 6; ++L) {
    int64_t q = 0;
    for (const LinearPlan& p : plan.layers[L]) {
      q += p.quantize;
      if (p.module.ends_with("weights_proj")) {
        EXPECT_FALSE(p.quantize);
      }
      if (p.module.ends_with("indexer.wq_b") || p.module.ends_with("indexer.wk")) {
        EXPECT_TRUE(p.quantize);
      }
    }
    EXPECT_EQ(q, 106) << L;
  }
  EXPECT_TRUE(plan.warnings.empty());
  const nlohmann::ordered_json qc = quantization_config(plan, {}, "rtn", {});
  check_quantization_config(plan, qc, true);
  // --keep: a pattern the loaders apply the same way; vLLM's fusion keeps a kept shard's partner.
  PlanOptions keep;
  keep.keep = {R"(.*\.q_a_proj)"};
  const QuantPlan k = plan_quantization(config, source.weights(), keep);
  const LinearPlan* kv = k.find("model.layers.2.self_attn.kv_a_proj_with_mqa");
  ASSERT_NE(kv, nullptr);
  EXPECT_FALSE(kv->quantize);
  EXPECT_NE(kv->kept_because.find("vLLM fuses it with"), std::string::npos);
  EXPECT_FALSE(k.warnings.empty());
  check_quantization_config(k, quantization_config(k, {}, "rtn", {}), true);
}

std::vector<std::vector<int32_t>> random_samples(int64_t n, int64_t T, int32_t vocab) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n), std::vector<int32_t>(T));
  for (auto& s : out)
    for (int32_t& x : s) x = id(rng);
  return out;
}

// AutoRound evaluates iteration 0 (V = 0, alpha = beta = 1) before its first step: with one
// iteration the result is RTN exactly. With several, the activations kept in a scratch file give
// the same bytes as in memory, and the tuned layer's loss is below RTN's.
TEST(Quantize, AutoRoundStartsAtRtnAndSpillsActivationsExactly) {
  ThreadPool pool(2);
  const fs::path rtn = temp_dir("ar_rtn"), one = temp_dir("ar_one"), mem = temp_dir("ar_mem"),
                 disk = temp_dir("ar_disk");
  quantize_checkpoint(kGolden / "source", rtn, rtn_options(32, false), pool);
  QuantizeOptions o = rtn_options(32, false);
  o.method = QuantMethod::kAutoRound;
  o.samples = random_samples(6, 40, 32);
  o.batch = 4;
  o.autoround.batch = 4;
  o.autoround.iters = 1;
  quantize_checkpoint(kGolden / "source", one, o, pool);
  EXPECT_TRUE(tensors(one) == tensors(rtn));
  o.autoround.iters = 12;
  const QuantizeResult in_memory = quantize_checkpoint(kGolden / "source", mem, o, pool);
  o.activation_budget_bytes = 0;
  quantize_checkpoint(kGolden / "source", disk, o, pool);
  EXPECT_TRUE(tensors(mem) == tensors(disk));
  EXPECT_FALSE(tensors(mem) == tensors(rtn));
  for (const LayerReport& r : in_memory.layers) EXPECT_LE(r.loss, r.loss_rtn) << r.layer;
  for (const fs::path& p : {rtn, one, mem, disk}) fs::remove_all(p);
}

// GPTQ's proxy loss tr((W-Q)H(W-Q)^T) is below RTN's on the same Hessians, in every layer.
TEST(Quantize, GptqBeatsRtnOnItsOwnObjective) {
  ThreadPool pool(2);
  const fs::path out = temp_dir("gptq");
  QuantizeOptions o = rtn_options(32, false);
  o.method = QuantMethod::kGptq;
  o.samples = random_samples(6, 40, 32);
  const QuantizeResult r = quantize_checkpoint(kGolden / "source", out, o, pool);
  for (const LayerReport& l : r.layers) {
    EXPECT_GT(l.loss, 0.0);
    EXPECT_LT(l.loss, 0.9 * l.loss_rtn) << l.layer;
  }
  // The result loads as a model.
  GlmMoeDsa model = GlmMoeDsa::load(out, pool);
  KvCache cache(model.config());
  const std::vector<int32_t> ids = {1, 2, 3, 4};
  EXPECT_EQ(model.prefill(ids, cache, false).size(), 32u);
  fs::remove_all(out);
}

// transformers' fused expert tensors (gate_up_proj [E, 2I, H], down_proj [E, H, I]) quantize to
// the same per-expert GPTQ tensors as the per-expert layout GLM-5 ships.
TEST(Quantize, FusedExpertsQuantizeLikePerExpertOnes) {
  ThreadPool pool(1);
  const fs::path fused = temp_dir("fused_src"), a = temp_dir("fused_a"), b = temp_dir("fused_b");
  {
    TensorStore src(kGolden / "source");
    fs::create_directories(fused);
    fs::copy_file(kGolden / "source/config.json", fused / "config.json");
    SafeTensorsWriter w(fused, std::numeric_limits<uint64_t>::max());
    const int64_t E = 4;
    std::vector<std::byte> gate_up, down;
    std::vector<int64_t> gu_shape, down_shape;
    for (int64_t e = 0; e < E; ++e) {
      const std::string m = fmt::format("model.layers.1.mlp.experts.{}.", e);
      for (const char* proj : {"gate_proj", "up_proj"}) {
        const TensorView v = src.get(m + proj + ".weight");
        gate_up.insert(gate_up.end(), v.bytes.begin(), v.bytes.end());
        gu_shape = {E, 2 * v.shape()[0], v.shape()[1]};
      }
      const TensorView d = src.get(m + "down_proj.weight");
      down.insert(down.end(), d.bytes.begin(), d.bytes.end());
      down_shape = {E, d.shape()[0], d.shape()[1]};
    }
    for (const std::string& n : src.names())
      if (n.find(".mlp.experts.") == std::string::npos) {
        const TensorView v = src.get(n);
        w.add(n, v.dtype(), v.shape(), v.bytes);
      }
    w.add("model.layers.1.mlp.experts.gate_up_proj", DType::BF16, gu_shape, gate_up);
    w.add("model.layers.1.mlp.experts.down_proj", DType::BF16, down_shape, down);
    w.finish();
  }
  quantize_checkpoint(kGolden / "source", a, rtn_options(32, false), pool);
  quantize_checkpoint(fused, b, rtn_options(32, false), pool);
  EXPECT_TRUE(tensors(a) == tensors(b));
  EXPECT_TRUE(tensors(b).contains("model.layers.1.mlp.experts.3.up_proj.qweight"));
  for (const fs::path& p : {fused, a, b}) fs::remove_all(p);
}

TEST(Quantize, RefusesBadRequestsAndLeavesNothing) {
  ThreadPool pool(1);
  const fs::path out = temp_dir("bad");
  auto fails = [&](QuantizeOptions o, const fs::path& in, std::vector<std::string> parts) {
    expect_error([&] { quantize_checkpoint(in, out, o, pool); }, parts);
    EXPECT_FALSE(fs::exists(out));
    for (const auto& e : fs::directory_iterator(out.parent_path()))
      EXPECT_FALSE(e.path().filename().string().starts_with(out.filename().string())) << e.path();
  };
  QuantizeOptions o = rtn_options(128, true);
  o.plan.spec.bits = 3;
  fails(o, kTiny, {"--bits", "3"});
  o = rtn_options(100, true);
  fails(o, kTiny, {"--group-size", "100"});
  o = rtn_options(256, true);
  fails(o, kTiny, {"--group-size", "256", "--no-vllm-rules"});
  fails(rtn_options(32, false), kGolden / "autoround_rtn", {"already quantized"});
  o = rtn_options(128, true);
  o.method = QuantMethod::kGptq;
  fails(o, kTiny, {"calibration samples"});
  o = rtn_options(128, true);
  o.plan.keep = {"model.*"};
  fails(o, kTiny, {"no Linear is left"});
  o.plan.keep = {"(unclosed"};
  fails(o, kTiny, {"(unclosed"});
}

}  // namespace
}  // namespace whittle
