#include "model/weights.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>

#include "util/error.h"

namespace whittle {

namespace {

class Binder {
 public:
  explicit Binder(const TensorStore& store) : store_(store) {}
  explicit Binder(TensorStore&&) = delete;  // store_ would dangle

  std::vector<float> vec(const std::string& name, int64_t n) const {
    return store_.load_f32(name, {n});
  }

  Linear linear(const std::string& name, int64_t out, int64_t in) const {
    return Linear{out, in, store_.load_f32(name, {out, in})};
  }

  MlpWeights mlp(const std::string& prefix, int64_t hidden, int64_t inter) const {
    return MlpWeights{linear(prefix + "gate_proj.weight", inter, hidden),
                      linear(prefix + "up_proj.weight", inter, hidden),
                      linear(prefix + "down_proj.weight", hidden, inter)};
  }

  // Routed experts, per-expert or fused.
  std::vector<MlpWeights> experts(const std::string& prefix, int64_t n, int64_t hidden,
                                  int64_t inter) const {
    std::vector<MlpWeights> out;
    const std::string fused_gate_up = prefix + "gate_up_proj", fused_down = prefix + "down_proj";
    if (store_.contains(fused_gate_up) || store_.contains(fused_down)) {
      std::vector<float> gu = store_.load_f32(fused_gate_up, {n, 2 * inter, hidden});
      std::vector<float> down = store_.load_f32(fused_down, {n, hidden, inter});
      const size_t block = static_cast<size_t>(inter * hidden);
      for (int64_t e = 0; e < n; ++e) {
        MlpWeights m;
        const float* g =
            gu.data() + static_cast<size_t>(e) * 2 * block;  // gate rows first, then up
        m.gate_proj = Linear{inter, hidden, std::vector<float>(g, g + block)};
        m.up_proj = Linear{inter, hidden, std::vector<float>(g + block, g + 2 * block)};
        const float* d = down.data() + static_cast<size_t>(e) * block;
        m.down_proj = Linear{hidden, inter, std::vector<float>(d, d + block)};
        out.push_back(std::move(m));
      }
      return out;
    }
    for (int64_t e = 0; e < n; ++e)
      out.push_back(mlp(fmt::format("{}{}.", prefix, e), hidden, inter));
    return out;
  }

 private:
  const TensorStore& store_;
};

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

ModelWeights load_weights(const TensorStore& store, const ModelConfig& c) {
  check_no_extra_layers(store, c);
  Binder b(store);
  ModelWeights w;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  w.embed_tokens = store.load_f32("model.embed_tokens.weight", {V, H});
  w.norm = b.vec("model.norm.weight", H);
  if (store.contains("lm_head.weight") || !c.tie_word_embeddings) {
    w.lm_head = b.linear("lm_head.weight", V, H);
  } else {
    w.lm_head = Linear{V, H, w.embed_tokens};
  }

  const int64_t nh = c.num_attention_heads;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = fmt::format("model.layers.{}.", L);
    LayerWeights lw;
    lw.input_layernorm = b.vec(p + "input_layernorm.weight", H);
    lw.post_attention_layernorm = b.vec(p + "post_attention_layernorm.weight", H);
    AttentionWeights& a = lw.attn;
    const std::string ap = p + "self_attn.";
    a.q_a_proj = b.linear(ap + "q_a_proj.weight", c.q_lora_rank, H);
    a.q_a_layernorm = b.vec(ap + "q_a_layernorm.weight", c.q_lora_rank);
    a.q_b_proj = b.linear(ap + "q_b_proj.weight", nh * c.qk_head_dim(), c.q_lora_rank);
    a.kv_a_proj_with_mqa =
        b.linear(ap + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, H);
    a.kv_a_layernorm = b.vec(ap + "kv_a_layernorm.weight", c.kv_lora_rank);
    a.kv_b_proj =
        b.linear(ap + "kv_b_proj.weight", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    a.o_proj = b.linear(ap + "o_proj.weight", H, nh * c.v_head_dim);
    if (c.indexer_full[L]) {
      const std::string ip = ap + "indexer.";
      IndexerWeights iw;
      iw.wq_b = b.linear(ip + "wq_b.weight", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
      iw.wk = b.linear(ip + "wk.weight", c.index_head_dim, H);
      iw.k_norm_weight = b.vec(ip + "k_norm.weight", c.index_head_dim);
      iw.k_norm_bias = b.vec(ip + "k_norm.bias", c.index_head_dim);
      iw.weights_proj = b.linear(ip + "weights_proj.weight", c.index_n_heads, H);
      a.indexer = std::move(iw);
    }
    const std::string mp = p + "mlp.";
    if (c.layer_is_moe[L]) {
      MoeWeights m;
      m.router = b.linear(mp + "gate.weight", c.n_routed_experts, H);
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
  return w;
}

}  // namespace whittle
