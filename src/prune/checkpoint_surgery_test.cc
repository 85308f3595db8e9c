// write_pruned_checkpoint on the golden checkpoints (per-expert, fused, sharded, FP8, GPTQ,
// grouped, and a synthesized MTP layer): renamed experts carry the original kept experts' bytes,
// routers are sliced, everything else is byte-identical, the output loads and runs, and with the
// dropped experts never chosen the pruned model gives the original model's logits. Bad input is
// refused with nothing left behind.
#include "prune/checkpoint_surgery.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "io/npy.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/glm_moe_dsa.h"
#include "util/atomic_file.h"
#include "util/testing.h"
#include "util/thread_pool.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

const fs::path kModels = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/models";
const fs::path kGptq = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/gptq/autoround_rtn";

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.bytes.size() == b.bytes.size() &&
         std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) == 0;
}

// `kept` for every MoE layer of `c` (empty for dense layers).
ExpertKeep uniform_keep(const ModelConfig& c, const std::vector<int32_t>& kept) {
  ExpertKeep k;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L)
    k.kept_per_layer.push_back(c.layer_is_moe[static_cast<size_t>(L)] ? kept
                                                                      : std::vector<int32_t>{});
  return k;
}

// "model.layers.L.mlp.experts.E.<suffix>" -> (L, E, suffix); nullopt otherwise.
struct ExpertName {
  int64_t layer, expert;
  std::string suffix;
};
std::optional<ExpertName> parse_expert(const std::string& name) {
  int64_t L = 0, E = 0;
  int used = 0;
  if (std::sscanf(name.c_str(), "model.layers.%ld.mlp.experts.%ld%n", &L, &E, &used) != 2)
    return std::nullopt;
  if (name[static_cast<size_t>(used)] != '.') return std::nullopt;
  return ExpertName{L, E, name.substr(static_cast<size_t>(used))};
}

// Checks the pruned folder `out` against `in` for the kept sets in `keep` (per layer; layers not
// in it are untouched) and returns nothing; failures are reported by gtest.
void expect_pruned(const fs::path& in, const fs::path& out,
                   const std::map<int64_t, std::vector<int32_t>>& keep, int64_t E) {
  TensorStore a(in), b(out);
  std::set<std::string> expected;
  for (const std::string& name : a.names()) {
    auto ex = parse_expert(name);
    int64_t L = -1;
    if (std::sscanf(name.c_str(), "model.layers.%ld.", &L) != 1) L = -1;
    auto it = keep.find(L);
    if (it == keep.end()) {
      expected.insert(name);
      ASSERT_TRUE(b.contains(name)) << name;
      EXPECT_TRUE(same_bytes(a.get(name), b.get(name))) << name << " is not byte-identical";
      continue;
    }
    const std::vector<int32_t>& kept = it->second;
    const int64_t K = static_cast<int64_t>(kept.size());
    if (ex) {
      auto pos = std::find(kept.begin(), kept.end(), ex->expert);
      if (pos == kept.end()) continue;
      const std::string renamed =
          fmt::format("model.layers.{}.mlp.experts.{}{}", L, pos - kept.begin(), ex->suffix);
      expected.insert(renamed);
      ASSERT_TRUE(b.contains(renamed)) << renamed;
      EXPECT_TRUE(same_bytes(a.get(name), b.get(renamed)))
          << renamed << " does not hold the bytes of " << name;
      continue;
    }
    const bool sliced = name.ends_with("mlp.gate.weight") ||
                        name.ends_with("mlp.gate.e_score_correction_bias") ||
                        name.find(".mlp.experts.") != std::string::npos;
    expected.insert(name);
    ASSERT_TRUE(b.contains(name)) << name;
    TensorView x = a.get(name), y = b.get(name);
    if (!sliced) {
      EXPECT_TRUE(same_bytes(x, y)) << name << " is not byte-identical";
      continue;
    }
    ASSERT_EQ(x.shape()[0], E) << name;
    std::vector<int64_t> shape = x.shape();
    shape[0] = K;
    EXPECT_EQ(y.shape(), shape) << name;
    EXPECT_EQ(y.dtype(), x.dtype()) << name;
    const size_t row = x.bytes.size() / static_cast<size_t>(E);
    ASSERT_EQ(y.bytes.size(), row * static_cast<size_t>(K)) << name;
    for (int64_t r = 0; r < K; ++r)
      EXPECT_EQ(std::memcmp(y.bytes.data() + r * row, x.bytes.data() + kept[r] * row, row), 0)
          << name << ": slice " << r << " is not original slice " << kept[r];
  }
  const std::vector<std::string> got = b.names();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), expected);
}

ordered_json read_json(const fs::path& p) {
  return ordered_json::parse(read_file(p));
}

std::vector<std::string> keys_of(const ordered_json& j) {
  std::vector<std::string> k;
  for (const auto& [key, v] : j.items()) k.push_back(key);
  return k;
}

// Loads `dir`, prefills `ids` and checks that every logit is finite; returns them.
std::vector<float> run_model(const fs::path& dir, const std::vector<int32_t>& ids) {
  ThreadPool pool(2);
  GlmMoeDsa model = GlmMoeDsa::load(dir, pool);
  KvCache cache(model.config());
  std::vector<float> logits = model.prefill(ids, cache);
  EXPECT_EQ(logits.size(), ids.size() * static_cast<size_t>(model.config().vocab_size));
  for (float x : logits) EXPECT_TRUE(std::isfinite(x));
  return logits;
}

std::vector<int32_t> golden_ids(const fs::path& dir) {
  std::vector<int32_t> ids;
  for (int64_t id : read_npy_i64(dir / "input_ids.npy")) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

// Nothing in `parent` but the entries in `allowed` (no output, no temporary).
void expect_only(const fs::path& parent, const std::set<std::string>& allowed) {
  for (const auto& e : fs::directory_iterator(parent))
    EXPECT_TRUE(allowed.contains(e.path().filename().string()))
        << "left behind: " << e.path().string();
}

TEST(CheckpointSurgery, PerExpertLayoutRenamesSlicesAndCopies) {
  ScratchDir tmp;
  const fs::path in = kModels / "dsa_long", out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  const std::vector<int32_t> kept = {1, 2, 4, 5, 7};
  PruneWriteOptions opts;
  opts.extra_files["reap_report.json"] = "{\"criterion\": \"reap\"}\n";
  PruneWriteResult r = write_pruned_checkpoint(in, out, c, uniform_keep(c, kept), opts);
  EXPECT_EQ(r.kept_experts, 5);
  EXPECT_EQ(r.pruned_layers, 1);
  expect_pruned(in, out, {{1, kept}}, 8);

  const ordered_json before = read_json(in / "config.json"), after = read_json(out / "config.json");
  EXPECT_EQ(after["n_routed_experts"], 5);
  EXPECT_EQ(keys_of(after), keys_of(before));  // same keys, same order
  ordered_json expect = before;
  expect["n_routed_experts"] = 5;
  EXPECT_EQ(after, expect);  // nothing else changed
  EXPECT_EQ(read_file(out / "generation_config.json"), read_file(in / "generation_config.json"));
  EXPECT_EQ(read_file(out / "reap_report.json"), "{\"criterion\": \"reap\"}\n");
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors.index.json"));
  expect_only(tmp.path(), {"pruned"});

  const ModelConfig pc = ModelConfig::load(out);
  EXPECT_EQ(pc.n_routed_experts, 5);
  run_model(out, golden_ids(in));
}

// The bundled model: a different kept set per layer, and the tokenizer, template and generation
// config copied byte for byte.
TEST(CheckpointSurgery, BundledModelKeepsTokenizerTemplateAndLoads) {
  ScratchDir tmp;
  const fs::path in = fs::path(WHITTLE_SOURCE_DIR) / "models/tiny-glm5", out = tmp.path() / "p";
  const ModelConfig c = ModelConfig::load(in);
  ExpertKeep keep;
  std::map<int64_t, std::vector<int32_t>> want;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    std::vector<int32_t> kept;
    if (c.layer_is_moe[static_cast<size_t>(L)]) {
      for (int32_t e = 0; e < c.n_routed_experts; ++e)
        if ((e + L) % 4 != 0) kept.push_back(e);  // 24 of 32, another 8 dropped in every layer
      want[L] = kept;
    }
    keep.kept_per_layer.push_back(kept);
  }
  write_pruned_checkpoint(in, out, c, keep, {});
  expect_pruned(in, out, want, c.n_routed_experts);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                        "generation_config.json", "README.md"})
    EXPECT_EQ(read_file(out / f), read_file(in / f)) << f;
  EXPECT_FALSE(fs::exists(out / "eval"));
  EXPECT_EQ(ModelConfig::load(out).n_routed_experts, 24);
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 24; ++i) ids.push_back(10 + 7 * i);
  run_model(out, ids);
}

// With every expert the router chooses kept, routing picks the same experts with the same weights
// (the sigmoid of each expert does not depend on the others), so the logits are the original's.
TEST(CheckpointSurgery, LogitsUnchangedWhenDroppedExpertsAreNeverChosen) {
  ScratchDir tmp;
  const fs::path in = kModels / "dsa_long", out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  std::vector<int64_t> shape;
  const std::vector<int32_t> chosen = read_npy_i32(in / "router_experts.npy", &shape);
  ASSERT_EQ(shape.size(), 3u);  // [moe layers = 1, T, top-k]
  const std::vector<int32_t> ids = golden_ids(in);
  // The longest prefix whose tokens use at most E - 2 experts.
  std::set<int32_t> used;
  size_t T = 0;
  for (; T < ids.size(); ++T) {
    std::set<int32_t> next = used;
    for (int64_t k = 0; k < shape[2]; ++k) next.insert(chosen[T * shape[2] + k]);
    if (static_cast<int64_t>(next.size()) > c.n_routed_experts - 2) break;
    used = std::move(next);
  }
  ASSERT_GE(T, 2u);
  std::vector<int32_t> kept(used.begin(), used.end());
  const std::vector<int32_t> prefix(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(T));
  write_pruned_checkpoint(in, out, c, uniform_keep(c, kept), {});
  const std::vector<float> want = run_model(in, prefix), got = run_model(out, prefix);
  ASSERT_EQ(want.size(), got.size());
  float max_abs = 0.0f, worst = 0.0f;
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(want[i]));
    worst = std::max(worst, std::fabs(want[i] - got[i]));
  }
  EXPECT_LE(worst, 1e-5f * max_abs) << "over " << T << " tokens keeping " << kept.size();
}

TEST(CheckpointSurgery, FusedExpertsAreSlicedOnTheExpertDimension) {
  ScratchDir tmp;
  const fs::path in = kModels / "fused_experts", out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  const std::vector<int32_t> kept = {0, 3, 6};
  write_pruned_checkpoint(in, out, c, uniform_keep(c, kept), {});
  expect_pruned(in, out, {{1, kept}}, 8);
  TensorStore b(out);
  EXPECT_EQ(b.get("model.layers.1.mlp.experts.gate_up_proj").shape(),
            (std::vector<int64_t>{3, 48, 64}));
  EXPECT_EQ(b.get("model.layers.1.mlp.experts.down_proj").shape(),
            (std::vector<int64_t>{3, 64, 24}));
  run_model(out, golden_ids(in));
}

TEST(CheckpointSurgery, ShardedInputGivesShardsAndAnIndex) {
  ScratchDir tmp;
  const fs::path in = kModels / "sharded", out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  const std::vector<int32_t> kept = {0, 1, 2, 3, 5, 6};
  write_pruned_checkpoint(in, out, c, uniform_keep(c, kept), {});
  expect_pruned(in, out, {{1, kept}}, 8);
  ASSERT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  TensorStore b(out);
  EXPECT_GT(b.file_count(), 1u);
  EXPECT_LE(b.file_count(), TensorStore(in).file_count());
  const ordered_json index = read_json(out / "model.safetensors.index.json");
  uint64_t total = 0;
  for (const std::string& name : b.names()) total += b.get(name).bytes.size();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  run_model(out, golden_ids(in));

  // An explicit shard size.
  PruneWriteOptions opts;
  opts.max_shard_bytes = 1u << 30;
  write_pruned_checkpoint(in, tmp.path() / "one", c, uniform_keep(c, kept), opts);
  EXPECT_TRUE(fs::exists(tmp.path() / "one" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(tmp.path() / "one" / "model.safetensors.index.json"));
}

TEST(CheckpointSurgery, Fp8ScalesTravelWithTheirExperts) {
  ScratchDir tmp;
  const fs::path in = kModels / "fp8", out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  const std::vector<int32_t> kept = {1, 3};
  write_pruned_checkpoint(in, out, c, uniform_keep(c, kept), {});
  expect_pruned(in, out, {{1, kept}}, 4);
  TensorStore a(in), b(out);
  EXPECT_TRUE(same_bytes(a.get("model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"),
                         b.get("model.layers.1.mlp.experts.1.down_proj.weight_scale_inv")));
  run_model(out, golden_ids(in));
}

TEST(CheckpointSurgery, GptqExpertsAndTheirQuantizationListAreRenumbered) {
  ScratchDir tmp;
  const fs::path in = kGptq, out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  const std::vector<int32_t> kept = {0, 2, 3};
  write_pruned_checkpoint(in, out, c, uniform_keep(c, kept), {});
  expect_pruned(in, out, {{0, kept}}, 4);
  TensorStore b(out);
  for (const char* part : {"qweight", "qzeros", "scales", "g_idx"})
    EXPECT_TRUE(b.contains(fmt::format("model.layers.0.mlp.experts.2.up_proj.{}", part))) << part;
  EXPECT_FALSE(b.contains("model.layers.0.mlp.experts.3.up_proj.qweight"));

  const ordered_json q = read_json(out / "config.json")["quantization_config"];
  std::vector<std::string> listed;
  for (const auto& list : q["modules_in_block_to_quantize"])
    for (const auto& s : list) listed.push_back(s.get<std::string>());
  for (int e = 0; e < 3; ++e)
    for (const char* p : {"down_proj", "gate_proj", "up_proj"})
      EXPECT_THAT(listed, ::testing::Contains(fmt::format("mlp.experts.{}.{}", e, p)));
  EXPECT_THAT(listed, ::testing::Not(::testing::Contains("mlp.experts.3.up_proj")));
  EXPECT_THAT(listed, ::testing::Contains("self_attn.o_proj"));
  if (fs::exists(in / "quantization_config.json")) {
    EXPECT_EQ(read_json(out / "quantization_config.json")["modules_in_block_to_quantize"],
              q["modules_in_block_to_quantize"]);
  }
  EXPECT_FALSE(fs::exists(out / "dequant"));  // folders are not copied
  run_model(out, golden_ids(in));
}

// A two-layer golden model plus an MTP layer 2 (a copy of layer 1 with GLM's MTP extras).
fs::path make_mtp_model(const fs::path& root, const fs::path& src = kModels / "dsa_long") {
  const fs::path dir = root / "mtp_in";
  fs::create_directories(dir);
  TensorStore store(src);
  {
    SafeTensorsWriter w(dir, uint64_t{1} << 40);
    for (const std::string& name : store.names()) {
      TensorView v = store.get(name);
      w.add(name, v.dtype(), v.shape(), v.bytes);
      const std::string_view p = "model.layers.1.";
      if (name.starts_with(p))
        w.add("model.layers.2." + name.substr(p.size()), v.dtype(), v.shape(), v.bytes);
    }
    std::vector<std::byte> norm(64 * 2), eh(64 * 128 * 2);
    for (size_t i = 0; i < norm.size(); i += 2) norm[i + 1] = std::byte{0x3f};  // bf16 ~0.5
    for (const char* n : {"enorm", "hnorm", "shared_head.norm"})
      w.add(fmt::format("model.layers.2.{}.weight", n), DType::BF16, {64}, norm);
    w.add("model.layers.2.eh_proj.weight", DType::BF16, {64, 128}, eh);
    w.finish();
  }
  ordered_json cfg = read_json(src / "config.json");
  cfg["num_nextn_predict_layers"] = 1;
  write_file_atomic(dir / "config.json", cfg.dump(2) + "\n");
  fs::copy_file(src / "generation_config.json", dir / "generation_config.json");
  write_file_atomic(dir / "reap_report.json", "{\"from\": \"an earlier pruning\"}");
  return dir;
}

TEST(CheckpointSurgery, GroupedRoutingKeepsGroupsAndRefusesUnequalDrops) {
  ScratchDir tmp;
  const fs::path in = kModels / "grouped";
  const ModelConfig c = ModelConfig::load(in);  // 16 experts, 4 groups of 4, topk_group 2, top-4
  ASSERT_EQ(c.n_group, 4);
  const std::vector<int32_t> kept = {0, 2, 3, 5, 6, 7, 8, 9, 11, 13, 14, 15};  // 3 per group
  write_pruned_checkpoint(in, tmp.path() / "ok", c, uniform_keep(c, kept), {});
  expect_pruned(in, tmp.path() / "ok", {{0, kept}, {1, kept}}, 16);
  const ordered_json cfg = read_json(tmp.path() / "ok" / "config.json");
  EXPECT_EQ(cfg["n_routed_experts"], 12);
  EXPECT_EQ(cfg["n_group"], 4);
  EXPECT_EQ(cfg["topk_group"], 2);
  run_model(tmp.path() / "ok", golden_ids(in));

  const std::vector<int32_t> unequal = {0, 1, 2, 3, 5, 6, 7, 8, 12, 13, 14, 15};
  expect_error(
      [&] { write_pruned_checkpoint(in, tmp.path() / "bad", c, uniform_keep(c, unequal), {}); },
      {"routing group 0", "every group must keep 3"});
  const std::vector<int32_t> eleven = {0, 2, 3, 5, 6, 7, 8, 9, 11, 13, 14};
  expect_error(
      [&] { write_pruned_checkpoint(in, tmp.path() / "bad", c, uniform_keep(c, eleven), {}); },
      {"keeps 11 experts, not a multiple of n_group 4"});
  const std::vector<int32_t> one_each = {0, 4, 8, 12};
  expect_error(
      [&] { write_pruned_checkpoint(in, tmp.path() / "bad", c, uniform_keep(c, one_each), {}); },
      {"num_experts_per_tok"});
  expect_only(tmp.path(), {"ok"});

  // The MTP layer's default set keeps the first 3 of every group.
  const fs::path mtp = make_mtp_model(tmp.path(), in);
  const ModelConfig mc = ModelConfig::load(mtp);
  write_pruned_checkpoint(mtp, tmp.path() / "mtp_out", mc, uniform_keep(mc, kept), {});
  expect_pruned(mtp, tmp.path() / "mtp_out",
                {{0, kept}, {1, kept}, {2, {0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14}}}, 16);
  run_model(tmp.path() / "mtp_out", golden_ids(in));
}

// Quantization rules that name one expert cannot follow a per-layer renumbering.
TEST(CheckpointSurgery, QuantizationRulesNamingOneExpertAreRefused) {
  ScratchDir tmp;
  const fs::path in = tmp.path() / "in";
  fs::create_directories(in);
  for (const char* f : {"model.safetensors", "generation_config.json"})
    fs::copy_file(kGptq / f, in / f);
  ordered_json cfg = read_json(kGptq / "config.json");
  cfg["quantization_config"]["dynamic"]["-:.*mlp\\.experts\\.3\\..*"] = ordered_json::object();
  write_file_atomic(in / "config.json", cfg.dump(2));
  const ModelConfig c = ModelConfig::load(in);
  expect_error(
      [&] {
        write_pruned_checkpoint(in, tmp.path() / "out", c, uniform_keep(c, {0, 1}), {});
      },
      {"quantization_config.dynamic", "names a single routed expert"});

  cfg = read_json(kGptq / "config.json");
  auto& list = cfg["quantization_config"]["modules_in_block_to_quantize"][0];
  for (size_t i = 0; i < list.size(); ++i)
    if (list[i] == "mlp.experts.2.up_proj") list.erase(i);
  write_file_atomic(in / "config.json", cfg.dump(2));
  const ModelConfig c2 = ModelConfig::load(in);
  expect_error(
      [&] {
        write_pruned_checkpoint(in, tmp.path() / "out", c2, uniform_keep(c2, {0, 1}), {});
      },
      {"lists expert 2 differently"});
  expect_only(tmp.path(), {"in"});
}

TEST(CheckpointSurgery, MtpLayerIsPrunedToTheSameCountOrDropped) {
  ScratchDir tmp;
  const fs::path in = make_mtp_model(tmp.path());
  const ModelConfig c = ModelConfig::load(in);
  ASSERT_EQ(c.num_nextn_predict_layers, 1);
  const std::vector<int32_t> kept = {1, 2, 4, 5, 7};
  const std::vector<int32_t> first = {0, 1, 2, 3, 4};

  // Default: the MTP layer keeps experts 0..K-1.
  write_pruned_checkpoint(in, tmp.path() / "a", c, uniform_keep(c, kept), {});
  expect_pruned(in, tmp.path() / "a", {{1, kept}, {2, first}}, 8);
  EXPECT_EQ(read_json(tmp.path() / "a" / "config.json")["num_nextn_predict_layers"], 1);
  EXPECT_FALSE(fs::exists(tmp.path() / "a" / "reap_report.json"));  // the earlier one is not copied
  run_model(tmp.path() / "a", golden_ids(kModels / "dsa_long"));

  // An explicit MTP set.
  ExpertKeep keep = uniform_keep(c, kept);
  keep.kept_per_layer.push_back({0, 3, 4, 6, 7});
  write_pruned_checkpoint(in, tmp.path() / "b", c, keep, {});
  expect_pruned(in, tmp.path() / "b", {{1, kept}, {2, {0, 3, 4, 6, 7}}}, 8);

  // Dropped.
  PruneWriteOptions opts;
  opts.drop_mtp = true;
  write_pruned_checkpoint(in, tmp.path() / "c", c, uniform_keep(c, kept), opts);
  for (const std::string& name : TensorStore(tmp.path() / "c").names())
    EXPECT_FALSE(name.starts_with("model.layers.2.")) << name;
  EXPECT_EQ(read_json(tmp.path() / "c" / "config.json")["num_nextn_predict_layers"], 0);
  expect_pruned(kModels / "dsa_long", tmp.path() / "c", {{1, kept}}, 8);
  run_model(tmp.path() / "c", golden_ids(kModels / "dsa_long"));

  // An MTP set of another size.
  keep.kept_per_layer.back() = {0, 1, 2};
  expect_error([&] { write_pruned_checkpoint(in, tmp.path() / "d", c, keep, {}); },
               {"MTP layer 2 keeps 3 experts", "keep 5"});
}

TEST(CheckpointSurgery, ExistingOutputIsRefusedUnlessOverwrite) {
  ScratchDir tmp;
  const fs::path in = kModels / "dsa_long", out = tmp.path() / "pruned";
  const ModelConfig c = ModelConfig::load(in);
  fs::create_directories(out);
  write_file_atomic(out / "keep.txt", "mine");
  expect_error(
      [&] {
        write_pruned_checkpoint(in, out, c, uniform_keep(c, {0, 1, 2}), {});
      },
      {out.string(), "already exists"});
  EXPECT_EQ(read_file(out / "keep.txt"), "mine");
  expect_only(tmp.path(), {"pruned"});

  PruneWriteOptions opts;
  opts.overwrite = true;
  write_pruned_checkpoint(in, out, c, uniform_keep(c, {0, 1, 2}), opts);
  EXPECT_FALSE(fs::exists(out / "keep.txt"));
  EXPECT_EQ(ModelConfig::load(out).n_routed_experts, 3);
  expect_only(tmp.path(), {"pruned"});

  // The input folder itself, even with overwrite.
  expect_error(
      [&] {
        write_pruned_checkpoint(out, out, ModelConfig::load(out), uniform_keep(c, {0, 1}), opts);
      },
      {"is the input model folder"});
}

// A file system nobody may create folders in: refused even for root.
TEST(CheckpointSurgery, UnwritableFileSystemIsRefused) {
  const fs::path in = kModels / "dsa_long", out = "/proc/whittle-pruned";
  const ModelConfig c = ModelConfig::load(in);
  expect_error(
      [&] {
        write_pruned_checkpoint(in, out, c, uniform_keep(c, {0, 1}), {});
      },
      {out.string(), "cannot create a temporary folder"});
  EXPECT_FALSE(fs::exists(out));
}

TEST(CheckpointSurgery, ReadOnlyDestinationIsRefused) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores folder permissions";
  ScratchDir tmp;
  const fs::path in = kModels / "dsa_long", parent = tmp.path() / "ro";
  const ModelConfig c = ModelConfig::load(in);
  fs::create_directories(parent);
  fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_exec);
  expect_error(
      [&] {
        write_pruned_checkpoint(in, parent / "out", c, uniform_keep(c, {0, 1}), {});
      },
      {(parent / "out").string(), "Permission denied"});
  fs::permissions(parent, fs::perms::owner_all);
  expect_only(parent, {});
}

TEST(CheckpointSurgery, BadKeptSetsAreRefused) {
  ScratchDir tmp;
  const fs::path in = kModels / "dsa_long", out = tmp.path() / "out";
  const ModelConfig c = ModelConfig::load(in);
  auto refuse = [&](const ExpertKeep& keep, const std::vector<std::string>& parts) {
    expect_error([&] { write_pruned_checkpoint(in, out, c, keep, {}); }, parts);
  };
  refuse(uniform_keep(c, {0, 8}), {"layer 1", "id 8 is out of range [0, 8)"});
  refuse(uniform_keep(c, {-1, 3}), {"id -1 is out of range"});
  refuse(uniform_keep(c, {3, 1, 2}), {"not ascending"});
  refuse(uniform_keep(c, {1, 1, 2}), {"id 1 appears twice"});
  refuse(uniform_keep(c, {4}), {"fewer than num_experts_per_tok 2"});
  refuse(ExpertKeep{{{}, {}}}, {"MoE layer 1 has no kept set"});
  refuse(ExpertKeep{{{0, 1}, {0, 1}}}, {"layer 0 is a dense layer"});
  refuse(ExpertKeep{{{}}}, {"cover 1 layer(s)", "num_hidden_layers 2"});
  refuse(ExpertKeep{{{}, {0, 1}, {0, 1}}}, {"cover 3 layer(s)"});

  // Different sizes per layer.
  const fs::path multi = kModels / "multi_moe";
  const ModelConfig mc = ModelConfig::load(multi);
  expect_error(
      [&] {
        write_pruned_checkpoint(multi, out, mc, ExpertKeep{{{}, {}, {0, 1, 2}, {0, 1}, {0, 1, 2}}},
                                {});
      },
      {"layer 3 keeps 2 experts but layer 2 keeps 3"});

  // No MoE layers.
  ModelConfig dense = c;
  dense.layer_is_moe.assign(dense.layer_is_moe.size(), false);
  expect_error(
      [&] {
        write_pruned_checkpoint(in, out, dense, ExpertKeep{{{}, {}}}, {});
      },
      {"no MoE layers"});

  // Extra files that would clobber the checkpoint.
  PruneWriteOptions opts;
  opts.extra_files["../x.json"] = "{}";
  expect_error(
      [&] {
        write_pruned_checkpoint(in, out, c, uniform_keep(c, {0, 1}), opts);
      },
      {"'../x.json'"});
  opts.extra_files = {{"config.json", "{}"}};
  expect_error(
      [&] {
        write_pruned_checkpoint(in, out, c, uniform_keep(c, {0, 1}), opts);
      },
      {"'config.json'"});
  expect_only(tmp.path(), {});
}

// A checkpoint whose tensors disagree with its config fails before anything is renamed into place.
TEST(CheckpointSurgery, MissingExpertTensorsLeaveNothingBehind) {
  ScratchDir tmp;
  const fs::path src = kModels / "dsa_long", in = tmp.path() / "in";
  fs::create_directories(in);
  TensorStore store(src);
  {
    SafeTensorsWriter w(in, uint64_t{1} << 40);
    for (const std::string& name : store.names()) {
      if (name.starts_with("model.layers.1.mlp.experts.5.")) continue;
      TensorView v = store.get(name);
      w.add(name, v.dtype(), v.shape(), v.bytes);
    }
    w.finish();
  }
  fs::copy_file(src / "config.json", in / "config.json");
  const ModelConfig c = ModelConfig::load(in);
  expect_error(
      [&] {
        write_pruned_checkpoint(in, tmp.path() / "out", c, uniform_keep(c, {1, 5, 6}), {});
      },
      {"layer 1", "2 of the 3 kept experts"});
  expect_only(tmp.path(), {"in"});
}

}  // namespace
}  // namespace whittle
