// load_weights against config.json: every `model.layers.N.*` tensor must belong to a decoder layer
// or an MTP layer, so a config that declares fewer layers than the checkpoint holds is an error
// rather than a silently truncated model.
#include "model/weights.h"
#include "model/weight_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "util/atomic_file.h"
#include "util/testing.h"

namespace whittle {
namespace {
namespace fs = std::filesystem;

const fs::path kModel = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/models/dsa_long";  // 2 layers

// A copy of a golden model (dsa_long unless `from` says) with an edited config.json, extra
// tensors, and without the tensors in `drop`.
class ScratchModel {
 public:
  ScratchModel(const std::function<void(nlohmann::ordered_json&)>& edit_config,
               const std::vector<std::string>& extra_tensors, const fs::path& from = kModel,
               const std::vector<std::string>& drop = {})
      : dir_(fs::temp_directory_path() /
             ("whittle_weights_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++))) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    nlohmann::ordered_json config = nlohmann::ordered_json::parse(read_file(from / "config.json"));
    edit_config(config);
    write_file_atomic(dir_ / "config.json", config.dump(2));
    SafeTensorsFile in(from / "model.safetensors");
    SafeTensorsWriter out(dir_, uint64_t{1} << 30);
    for (const TensorInfo& t : in.tensors())
      if (std::find(drop.begin(), drop.end(), t.name) == drop.end())
        out.add(t.name, t.dtype, t.shape, in.view(t).bytes);
    const std::vector<std::byte> zeros(64 * 2);
    for (const std::string& name : extra_tensors) out.add(name, DType::BF16, {64}, zeros);
    out.finish();
  }
  ~ScratchModel() { fs::remove_all(dir_); }
  const fs::path& dir() const { return dir_; }

  // The number of decoder layers bound.
  size_t load() const {
    return WeightSource(dir_, ModelConfig::load(dir_)).weights().layers.size();
  }

 private:
  static inline int counter_ = 0;
  fs::path dir_;
};

// The golden config cut to its first layer.
void one_layer(nlohmann::ordered_json& j) {
  j["num_hidden_layers"] = 1;
  j["mlp_layer_types"] = {"dense"};
  j["indexer_types"] = {"full"};
  j["layer_types"] = {"indexed_attention"};
}

TEST(Weights, LayersBeyondTheConfigAreAnError) {
  // num_hidden_layers 1 while the weights hold layers 0 and 1: once this ran a 1-layer model.
  ScratchModel m(one_layer, {});
  expect_error(
      [&] { m.load(); },
      {(m.dir() / "model.safetensors").string(), "tensor 'model.layers.1.",
       "is beyond num_hidden_layers 1 + num_nextn_predict_layers 0", "expected layers 0..0"});
}

TEST(Weights, MtpLayersAfterTheDecoderLayersLoad) {
  // GLM-5 ships its MTP layer at index num_hidden_layers; the forward pass ignores it.
  ScratchModel cut(
      [](nlohmann::ordered_json& j) {
        one_layer(j);
        j["num_nextn_predict_layers"] = 1;
      },
      {});
  EXPECT_EQ(cut.load(), 1u);

  const std::vector<std::string> mtp = {"model.layers.2.enorm.weight",
                                        "model.layers.2.hnorm.weight"};
  ScratchModel with_mtp([](nlohmann::ordered_json& j) { j["num_nextn_predict_layers"] = 1; }, mtp);
  EXPECT_EQ(with_mtp.load(), 2u);
  // The same tensors without num_nextn_predict_layers (absent means 0) are extra layers.
  ScratchModel undeclared([](nlohmann::ordered_json&) {}, mtp);
  expect_error([&] { undeclared.load(); }, {"tensor 'model.layers.2.enorm.weight' is beyond "
                                            "num_hidden_layers 2 + num_nextn_predict_layers 0"});
  // One MTP layer declared, two present.
  ScratchModel two([](nlohmann::ordered_json& j) { j["num_nextn_predict_layers"] = 1; },
                   {"model.layers.2.enorm.weight", "model.layers.3.enorm.weight"});
  expect_error([&] { two.load(); },
               {"tensor 'model.layers.3.enorm.weight' is beyond num_hidden_layers 2 + "
                "num_nextn_predict_layers 1 of config.json (expected layers 0..2)"});
}

TEST(Weights, AbsurdLayerIndexIsAnErrorNotAnOverflow) {
  ScratchModel m([](nlohmann::ordered_json&) {},
                 {"model.layers.99999999999999999999999.enorm.weight"});
  expect_error([&] { m.load(); },
               {"tensor 'model.layers.99999999999999999999999.enorm.weight' is beyond"});
  // Names that are not `model.layers.<N>.` are not layers: they are unused tensors.
  for (const char* name :
       {"model.layers.x.enorm.weight", "model.layers.7", "model.layers..w", "extra.layers.9.w"}) {
    ScratchModel other([](nlohmann::ordered_json&) {}, {name});
    expect_error([&] { other.load(); }, {name, "is not read by the glm_moe_dsa forward pass"});
  }
}

// GPTQ checkpoints whose config and tensors disagree are refused naming the module and the file:
// which modules are quantized comes from the file, how from quantization_config.
TEST(Weights, GptqConfigAndFileMustAgree) {
  const fs::path gptq = fs::path(WHITTLE_SOURCE_DIR) / "tests/golden/gptq/autoround_rtn";
  const std::string m = "model.layers.0.self_attn.q_a_proj";
  auto keep = [](nlohmann::ordered_json&) {};
  EXPECT_EQ(ScratchModel(keep, {}, gptq).load(), 1u);
  ScratchModel no_config([](nlohmann::ordered_json& j) { j.erase("quantization_config"); }, {},
                         gptq);
  expect_error([&] { no_config.load(); },
               {m + ".qweight' is GPTQ-quantized but config.json has no quantization_config"});
  ScratchModel kept_16_bit(
      [&](nlohmann::ordered_json& j) {
        j["quantization_config"]["dynamic"]["-:.*q_a_proj"] = nlohmann::ordered_json::object();
      },
      {}, gptq);
  expect_error([&] { kept_16_bit.load(); }, {m, "keeps '" + m + "' in 16 bit"});
  ScratchModel eight_bits([](nlohmann::ordered_json& j) { j["quantization_config"]["bits"] = 8; },
                          {}, gptq);
  expect_error([&] { eight_bits.load(); },
               {"model.safetensors", ".qweight' has shape", "expected"});
  ScratchModel no_scales(keep, {}, gptq, {m + ".scales"});
  expect_error([&] { no_scales.load(); }, {m + ".scales"});
  ScratchModel act_order_without_g_idx(
      [](nlohmann::ordered_json& j) { j["quantization_config"]["desc_act"] = true; }, {}, gptq,
      {m + ".g_idx"});
  expect_error([&] { act_order_without_g_idx.load(); }, {m, "desc_act but has no g_idx"});
}

// A tensor the forward pass would not read (here a bias GLM-5's Linear layers do not have) means
// the model computed would not be the one the file describes: refused, naming it. MTP layers and
// rotary buffers are the exceptions.
TEST(Weights, TensorsTheForwardPassWouldIgnoreAreRefused) {
  ScratchModel bias([](nlohmann::ordered_json&) {}, {"model.layers.0.self_attn.q_a_proj.bias"});
  expect_error([&] { bias.load(); },
               {"model.safetensors", "tensor 'model.layers.0.self_attn.q_a_proj.bias' is not read",
                "different model"});
  ScratchModel rotary([](nlohmann::ordered_json&) {},
                      {"model.layers.1.self_attn.rotary_emb.inv_freq"});
  EXPECT_EQ(rotary.load(), 2u);
}

}  // namespace
}  // namespace whittle
