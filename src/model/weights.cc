#include "model/weights.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <string_view>

#include "io/quant_config.h"
#include "util/error.h"

namespace whittle {

namespace {

class Binder {
 public:
  Binder(const TensorStore& store, const ModelConfig& config) : store_(store), config_(config) {}

  std::vector<float> vec(const std::string& name, int64_t n) const {
    used_.insert(name);
    return store_.load_f32(name, {n});
  }

  // Every tensor bound so far (the check that nothing in the file is silently ignored).
  const std::set<std::string, std::less<>>& used() const { return used_; }

  // The Linear `module` ("model.layers.0.self_attn.q_a_proj") as its file stores it.
  Weight linear(const std::string& module, int64_t out, int64_t in) const {
    if (store_.contains(module + ".qweight")) return gptq(module, out, in);
    const std::string name = module + ".weight";
    TensorView v = store_.get(name, std::initializer_list<int64_t>{out, in});
    used_.insert(name);
    if (v.dtype() == DType::F8_E4M3) {
      const std::string scale_name = name + "_scale_inv";
      if (!store_.contains(scale_name))
        fail("{}: FP8 tensor '{}' has no companion '{}'", v.file->string(), name, scale_name);
      const int64_t br = (out + kFp8Block - 1) / kFp8Block, bc = (in + kFp8Block - 1) / kFp8Block;
      TensorView s = store_.get(scale_name, std::initializer_list<int64_t>{br, bc});
      used_.insert(scale_name);
      return with_file(
          v, [&] { return Weight::fp8_block(module, v.bytes, out, in, s.dtype(), s.bytes); });
    }
    return with_file(v, [&] { return Weight::dense(module, v.dtype(), v.bytes, out, in); });
  }

  MlpWeights mlp(const std::string& prefix, int64_t hidden, int64_t inter) const {
    return MlpWeights{linear(prefix + "gate_proj", inter, hidden),
                      linear(prefix + "up_proj", inter, hidden),
                      linear(prefix + "down_proj", hidden, inter)};
  }

  // Routed experts, per-expert or fused; `prefix` is "model.layers.L.mlp.experts.".
  std::vector<MlpWeights> experts(const std::string& prefix, int64_t n, int64_t hidden,
                                  int64_t inter) const {
    std::vector<MlpWeights> out;
    const std::string fused_gate_up = prefix + "gate_up_proj", fused_down = prefix + "down_proj";
    if (store_.contains(fused_gate_up) || store_.contains(fused_down)) {
      // transformers' fused layout: gate rows then up rows per expert. Dense dtypes only: no
      // quantizer writes fused experts.
      Weight gu = fused(fused_gate_up, {n, 2 * inter, hidden});
      Weight down = fused(fused_down, {n, hidden, inter});
      for (int64_t e = 0; e < n; ++e) {
        const std::string m = fmt::format("{}{}.", prefix, e);
        const int64_t g0 = e * 2 * inter;
        out.push_back(MlpWeights{gu.slice_rows(g0, g0 + inter, m + "gate_proj"),
                                 gu.slice_rows(g0 + inter, g0 + 2 * inter, m + "up_proj"),
                                 down.slice_rows(e * hidden, (e + 1) * hidden, m + "down_proj")});
      }
      return out;
    }
    for (int64_t e = 0; e < n; ++e)
      out.push_back(mlp(fmt::format("{}{}.", prefix, e), hidden, inter));
    return out;
  }

 private:
  // Errors from the weight type name the module; add the file.
  template <typename Make>
  static Weight with_file(const TensorView& v, Make make) {
    try {
      return make();
    } catch (const Error& e) {
      fail("{}: {}", v.file->string(), e.what());
    }
  }

  Weight fused(const std::string& name, std::initializer_list<int64_t> shape) const {
    TensorView v = store_.get(name, shape);
    used_.insert(name);
    const auto dims = std::vector<int64_t>(shape);
    return with_file(
        v, [&] { return Weight::dense(name, v.dtype(), v.bytes, dims[0] * dims[1], dims[2]); });
  }

  // GPTQ: the file says the module is quantized; config.json's quantization_config says how, and
  // the tensor shapes must agree with it.
  Weight gptq(const std::string& module, int64_t out, int64_t in) const {
    TensorView qweight = store_.get(module + ".qweight");
    const std::string file = qweight.file->string();
    if (!config_.quantization)
      fail("{}: '{}.qweight' is GPTQ-quantized but config.json has no quantization_config", file,
           module);
    const std::optional<ModuleQuant> q = config_.quantization->for_module(module);
    if (!q)
      fail(
          "{}: '{}.qweight' is quantized but config.json's quantization_config keeps '{}' in 16 "
          "bit",
          file, module, module);
    if (q->bits != 4 && q->bits != 8)
      fail("{}: '{}' is quantized with {} bits; whittle reads 4 and 8", file, module, q->bits);
    const int64_t pack = 32 / q->bits;
    if (in % pack != 0 || out % pack != 0)
      fail("{}: '{}' [{}, {}] cannot be packed {} values per int32", file, module, out, in, pack);
    const int64_t group = q->group_size == -1 ? in : q->group_size;
    if (group < 1) fail("{}: '{}' has group_size {}", file, module, q->group_size);
    const int64_t groups = (in + group - 1) / group;
    auto int32 = [&](const std::string& name, std::initializer_list<int64_t> shape) {
      TensorView v = store_.get(name, shape);
      used_.insert(name);
      if (v.dtype() != DType::I32)
        fail("{}: tensor '{}' has dtype {}, expected I32", v.file->string(), name,
             dtype_name(v.dtype()));
      return v.bytes;
    };
    GptqTensors t;
    t.qweight = int32(module + ".qweight", {in / pack, out});
    if (store_.contains(module + ".qzeros") || !q->sym)
      t.qzeros = int32(module + ".qzeros", {groups, out / pack});
    TensorView scales = store_.get(module + ".scales", std::initializer_list<int64_t>{groups, out});
    used_.insert(module + ".scales");
    t.scales = scales.bytes;
    t.scale_dtype = scales.dtype();
    t.groups = groups;
    if (store_.contains(module + ".g_idx")) t.g_idx = int32(module + ".g_idx", {in});
    if (q->desc_act && t.g_idx.empty())
      fail("{}: '{}' is quantized with desc_act but has no g_idx", file, module);
    const GptqParams params{q->bits, group, config_.quantization->checkpoint_format == 2, q->sym};
    return with_file(qweight, [&] { return Weight::gptq(module, t, out, in, params); });
  }

  const TensorStore& store_;
  const ModelConfig& config_;
  mutable std::set<std::string, std::less<>> used_;
};

// A tensor the forward pass does not read (a bias, an extra norm, an indexer on a shared layer, a
// quantization tensor of another scheme) would be silently ignored and the model computed would not
// be the one the file describes. Only the MTP layers (listed by `whittle info`) and rotary buffers
// that old exports carry are skipped.
void check_every_tensor_used(const TensorStore& store, const ModelConfig& c,
                             const std::set<std::string, std::less<>>& used) {
  for (const std::string& name : store.names()) {
    if (used.count(name) || name.ends_with("rotary_emb.inv_freq")) continue;
    if (const std::optional<int64_t> L = layer_index(name); L && *L >= c.num_hidden_layers)
      continue;
    fail(
        "{}: tensor '{}' is not read by the {} forward pass; whittle would silently compute a "
        "different model than the checkpoint describes",
        store.get(name).file->string(), name, c.model_type);
  }
}

// A config.json with fewer num_hidden_layers than the checkpoint holds would run a truncated model
// without a word. Layers [num_hidden_layers, + num_nextn_predict_layers) are the MTP layers GLM-5
// ships: the forward pass ignores them (`whittle info` lists them).
void check_no_extra_layers(const TensorStore& store, const ModelConfig& c) {
  const int64_t known = c.num_hidden_layers + c.num_nextn_predict_layers;
  for (const std::string& name : store.names()) {
    const std::optional<int64_t> index = layer_index(name);
    if (!index || *index < known) continue;
    fail(
        "{}: tensor '{}' is beyond num_hidden_layers {} + num_nextn_predict_layers {} of "
        "config.json "
        "(expected layers 0..{}); the config describes fewer layers than the checkpoint holds",
        store.get(name).file->string(), name, c.num_hidden_layers, c.num_nextn_predict_layers,
        known - 1);
  }
}

}  // namespace

std::optional<int64_t> layer_index(std::string_view name) {
  constexpr std::string_view prefix = "model.layers.";
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  constexpr int64_t kCap = 1'000'000'000'000'000'000;
  int64_t index = 0;
  for (char ch : name.substr(0, dot)) {
    if (ch < '0' || ch > '9') return std::nullopt;
    index = index >= kCap / 10 ? kCap : index * 10 + (ch - '0');
  }
  return index;
}

ModelWeights bind_weights(const TensorStore& store, const ModelConfig& c) {
  check_no_extra_layers(store, c);
  Binder b(store, c);
  ModelWeights w;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  w.embed_tokens = b.linear("model.embed_tokens", V, H);
  w.norm = b.vec("model.norm.weight", H);
  if (store.contains("lm_head.weight") || store.contains("lm_head.qweight") ||
      !c.tie_word_embeddings) {
    w.lm_head = b.linear("lm_head", V, H);
  } else {
    w.lm_head = w.embed_tokens.slice_rows(0, V, "lm_head");
  }

  const int64_t nh = c.num_attention_heads;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = fmt::format("model.layers.{}.", L);
    LayerWeights lw;
    lw.input_layernorm = b.vec(p + "input_layernorm.weight", H);
    lw.post_attention_layernorm = b.vec(p + "post_attention_layernorm.weight", H);
    AttentionWeights& a = lw.attn;
    const std::string ap = p + "self_attn.";
    a.q_a_proj = b.linear(ap + "q_a_proj", c.q_lora_rank, H);
    a.q_a_layernorm = b.vec(ap + "q_a_layernorm.weight", c.q_lora_rank);
    a.q_b_proj = b.linear(ap + "q_b_proj", nh * c.qk_head_dim(), c.q_lora_rank);
    a.kv_a_proj_with_mqa =
        b.linear(ap + "kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, H);
    a.kv_a_layernorm = b.vec(ap + "kv_a_layernorm.weight", c.kv_lora_rank);
    a.kv_b_proj =
        b.linear(ap + "kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    a.o_proj = b.linear(ap + "o_proj", H, nh * c.v_head_dim);
    if (c.indexer_full[L]) {
      const std::string ip = ap + "indexer.";
      IndexerWeights iw;
      iw.wq_b = b.linear(ip + "wq_b", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
      iw.wk = b.linear(ip + "wk", c.index_head_dim, H);
      iw.k_norm_weight = b.vec(ip + "k_norm.weight", c.index_head_dim);
      iw.k_norm_bias = b.vec(ip + "k_norm.bias", c.index_head_dim);
      iw.weights_proj = b.linear(ip + "weights_proj", c.index_n_heads, H);
      a.indexer = std::move(iw);
    } else if (store.contains(ap + "indexer.wk.weight") ||
               store.contains(ap + "indexer.wk.qweight")) {
      // transformers builds no indexer on a "shared" layer (and check_every_tensor_used would
      // refuse it less clearly).
      fail(
          "{}: layer {} is an IndexShare \"shared\" layer in config.json (indexer_types / "
          "index_topk_pattern) but the checkpoint holds an indexer for it ('{}indexer.wk'); the "
          "config and the weights describe different models",
          store.dir().string(), L, ap);
    }
    const std::string mp = p + "mlp.";
    if (c.layer_is_moe[L]) {
      MoeWeights m;
      m.router = b.linear(mp + "gate", c.n_routed_experts, H);
      m.correction_bias = b.vec(mp + "gate.e_score_correction_bias", c.n_routed_experts);
      m.experts = b.experts(mp + "experts.", c.n_routed_experts, H, c.moe_intermediate_size);
      if (c.n_shared_experts > 0)
        m.shared = b.mlp(mp + "shared_experts.", H, c.moe_intermediate_size * c.n_shared_experts);
      lw.moe = std::move(m);
    } else {
      lw.dense = b.mlp(mp, H, c.intermediate_size);
    }
    w.layers.push_back(std::move(lw));
  }
  check_every_tensor_used(store, c, b.used());
  return w;
}

}  // namespace whittle
