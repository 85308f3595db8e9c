#include "io/model_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/json_excerpt.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Typed field access with errors that name the file and the field. Written for both JSON types:
// config.json is read as ordered_json (quantization rules depend on key order), callers and tests
// may hand a plain json.
template <class Json>
class Fields {
 public:
  // `source` is copied: callers pass temporaries such as `path.string()`.
  // `prefix` names a nested object in messages ("rope_scaling.").
  Fields(const Json& j, std::string source, std::string prefix = "")
      : j_(j), source_(std::move(source)), prefix_(std::move(prefix)) {}
  Fields(Json&&, std::string, std::string = "") = delete;  // j_ would dangle

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t integer(const char* key) const {
    if (!has(key)) fail("{}: missing required field '{}'", source_, name(key));
    const Json& v = j_.at(key);
    if (!v.is_number_integer())
      fail("{}: field '{}' must be an integer, got {}", source_, name(key), json_excerpt(v));
    if (!in_range(v))
      fail("{}: field '{}' is {}, outside [-{}, {}]", source_, name(key), json_excerpt(v),
           kMaxField, kMaxField);
    return v.template get<int64_t>();
  }
  static constexpr int64_t kMaxField = (int64_t{1} << 31) - 1;
  // Sizes reach BLAS as int: anything past 2^31 - 1 is a corrupt file, not a model.
  static bool in_range(const Json& v) {
    return v.is_number_unsigned()
               ? v.template get<uint64_t>() <= static_cast<uint64_t>(kMaxField)
               : v.template get<int64_t>() >= -kMaxField && v.template get<int64_t>() <= kMaxField;
  }
  int64_t integer(const char* key, int64_t fallback) const {
    return has(key) ? integer(key) : fallback;
  }
  int64_t positive(const char* key) const {
    int64_t v = integer(key);
    if (v <= 0) fail("{}: field '{}' must be positive, got {}", source_, name(key), v);
    return v;
  }
  int64_t positive(const char* key, int64_t fallback) const {
    return has(key) ? positive(key) : fallback;
  }

  // JSON has no NaN or infinity, but a literal such as 1e999 parses to infinity.
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const Json& v = j_.at(key);
    if (!v.is_number())
      fail("{}: field '{}' must be a number, got {}", source_, name(key), json_excerpt(v));
    const double x = v.template get<double>();
    if (!std::isfinite(x))
      fail("{}: field '{}' must be a finite number, got {}", source_, name(key), x);
    return x;
  }
  double positive_number(const char* key, double fallback) const {
    const double x = number(key, fallback);
    if (!(x > 0)) fail("{}: field '{}' must be a positive number, got {}", source_, name(key), x);
    return x;
  }
  // A positive number that stays positive and finite in float32, where the forward pass uses it
  // (an epsilon of 1e-50 would become 0 there and divide by zero).
  double positive_float(const char* key, double fallback) const {
    const double x = positive_number(key, fallback);
    const float f = static_cast<float>(x);
    if (!(f > 0) || !std::isfinite(f))
      fail("{}: field '{}' is {}, outside float32's positive range [{}, {}]", source_, name(key), x,
           std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max());
    return x;
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const Json& v = j_.at(key);
    if (!v.is_boolean())
      fail("{}: field '{}' must be true or false, got {}", source_, name(key), json_excerpt(v));
    return v.template get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const Json& v = j_.at(key);
    if (!v.is_string())
      fail("{}: field '{}' must be a string, got {}", source_, name(key), json_excerpt(v));
    return v.template get<std::string>();
  }
  std::vector<std::string> strings(const char* key) const {
    std::vector<std::string> out;
    if (!has(key)) return out;
    const Json& v = j_.at(key);
    if (!v.is_array())
      fail("{}: field '{}' must be a list of strings, got {}", source_, name(key), json_excerpt(v));
    for (const Json& e : v) {
      if (!e.is_string())
        fail("{}: field '{}' must be a list of strings, got {}", source_, name(key),
             json_excerpt(v));
      out.push_back(e.template get<std::string>());
    }
    return out;
  }
  // An integer or a list of integers (eos_token_id).
  std::vector<int64_t> integers(const char* key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const Json& v = j_.at(key);
    if (v.is_number_integer()) return {integer(key)};
    if (!v.is_array())
      fail("{}: field '{}' must be an integer or a list of integers, got {}", source_, name(key),
           json_excerpt(v));
    for (const Json& e : v) {
      if (!e.is_number_integer())
        fail("{}: field '{}' must hold integers, got {}", source_, name(key), json_excerpt(e));
      if (!in_range(e))
        fail("{}: field '{}' holds {}, outside [-{}, {}]", source_, name(key), json_excerpt(e),
             kMaxField, kMaxField);
      out.push_back(e.template get<int64_t>());
    }
    return out;
  }
  const Json& raw(const char* key) const { return j_.at(key); }
  const std::string& source() const { return source_; }
  std::string name(const char* key) const { return prefix_ + key; }

 private:
  const Json& j_;
  std::string source_, prefix_;
};

double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// transformers' order (modeling_rope_utils.convert_rope_params_to_dict): legacy `rope_scaling`
// replaces `rope_parameters`; theta from there, else top-level `rope_theta`, else 10000. A missing
// original_max_position_embeddings becomes max_position_embeddings (standardize_rope_params; a
// top-level `original_max_position_embeddings` is NOT used by 5.23: it is set too late).
template <class Json>
RopeConfig parse_rope(const Fields<Json>& f, int64_t max_position_embeddings) {
  RopeConfig rope;
  const char* params_key = f.has("rope_scaling")      ? "rope_scaling"
                           : f.has("rope_parameters") ? "rope_parameters"
                                                      : nullptr;
  rope.theta = f.number("rope_theta", 10000.0);
  if (params_key) {
    const Json& params = f.raw(params_key);
    if (!params.is_object())
      fail("{}: field '{}' must be an object, got {}", f.source(), params_key,
           json_excerpt(params));
    Fields<Json> p(params, f.source(), std::string(params_key) + ".");
    rope.type = p.string("rope_type", p.string("type", "default"));
    rope.theta = p.number("rope_theta", rope.theta);
    const bool yarn = rope.type == "yarn";
    if (yarn && !p.has("factor"))
      fail(
          "{}: yarn rope parameters need 'factor' (transformers reads rope_parameters[\"factor\"])",
          f.source());
    // The YaRN values must keep the frequencies finite: factor divides them in float32, and the
    // betas go through a logarithm.
    rope.factor = yarn ? p.positive_float("factor", 1.0) : p.number("factor", 1.0);
    rope.original_max_position_embeddings =
        p.positive("original_max_position_embeddings", max_position_embeddings);
    // Python's `get("beta_fast") or 32`: 0 falls back too.
    rope.beta_fast = p.number("beta_fast", 0.0);
    if (rope.beta_fast == 0.0) rope.beta_fast = 32.0;
    rope.beta_slow = p.number("beta_slow", 0.0);
    if (rope.beta_slow == 0.0) rope.beta_slow = 1.0;
    for (const auto& [key, value] :
         {std::pair{"beta_fast", rope.beta_fast}, {"beta_slow", rope.beta_slow}})
      if (yarn && value < 0)
        fail("{}: field '{}' must be positive (YaRN takes its logarithm), got {}", f.source(),
             p.name(key), value);
    rope.mscale = p.number("mscale", 0.0);
    rope.mscale_all_dim = p.number("mscale_all_dim", 0.0);
    rope.truncate = p.boolean("truncate", true);
    if (p.has("attention_factor"))
      rope.attention_factor_override =
          yarn ? p.positive_number("attention_factor", 1.0) : p.number("attention_factor", 1.0);
    if (p.number("partial_rotary_factor", 1.0) != 1.0)
      fail("{}: partial_rotary_factor {} is not supported (MLA rotates all qk_rope_head_dim dims)",
           f.source(), p.number("partial_rotary_factor", 1.0));
  }
  if (rope.type != "default" && rope.type != "yarn")
    fail("{}: rope type '{}' is not supported (expected \"default\" or \"yarn\")", f.source(),
         rope.type);
  if (!(rope.theta > 0)) fail("{}: rope_theta must be positive, got {}", f.source(), rope.theta);
  // YaRN's correction range divides by log(rope_theta).
  if (rope.type == "yarn" && rope.theta == 1.0)
    fail("{}: rope_theta must not be 1 with yarn rope parameters (YaRN divides by log(rope_theta))",
         f.source());
  if (rope.type == "yarn") {
    const double factor = rope.attention_factor();
    if (!std::isfinite(factor) || !(factor > 0))
      fail(
          "{}: yarn mscale {} and mscale_all_dim {} with factor {} give an attention factor of {} "
          "(expected a "
          "positive finite number)",
          f.source(), rope.mscale, rope.mscale_all_dim, rope.factor, factor);
  }
  return rope;
}

template <class Json>
std::vector<bool> parse_layer_kinds(const Fields<Json>& f, const char* key, const std::string& yes,
                                    const std::string& no, int64_t layers) {
  std::vector<std::string> kinds = f.strings(key);
  if (kinds.empty()) return {};
  if (static_cast<int64_t>(kinds.size()) != layers)
    fail("{}: field '{}' has {} entries but num_hidden_layers is {}", f.source(), key, kinds.size(),
         layers);
  std::vector<bool> out;
  for (const auto& k : kinds) {
    if (k != yes && k != no)
      fail("{}: field '{}' holds '{}', expected \"{}\" or \"{}\"", f.source(), key, k, yes, no);
    out.push_back(k == yes);
  }
  return out;
}

// transformers' GlmMoeDsaConfig.__post_init__ (5.23), used when `indexer_types` is absent or
// null: a string maps each character through {"F": "full", "S": "shared"} (any other character,
// lower case included, is a KeyError there); a list is taken as indexer_types as it is. The
// modeling code then reads entries 0 .. num_hidden_layers - 1: a shorter pattern fails
// (IndexError), a longer one has its tail ignored (it is still checked character by character).
// A list entry other than "shared" would silently run as "full" in transformers; whittle refuses
// anything but "full" and "shared".
template <class Json>
std::vector<bool> parse_index_pattern(const Fields<Json>& f, int64_t layers) {
  const Json& v = f.raw("index_topk_pattern");
  std::vector<bool> out;
  if (v.is_string()) {
    const std::string& s = v.template get_ref<const std::string&>();
    for (size_t i = 0; i < s.size(); ++i) {
      const auto ch = static_cast<unsigned char>(s[i]);
      if (ch != 'F' && ch != 'S')
        fail(
            "{}: field 'index_topk_pattern' holds {} at position {}; expected \"F\" (full) or "
            "\"S\" (shared), upper case",
            f.source(),
            ch >= 0x20 && ch < 0x7f ? fmt::format("'{}'", static_cast<char>(ch))
                                    : fmt::format("byte 0x{:02x}", ch),
            i);
      out.push_back(ch == 'F');
    }
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      const Json& e = v[i];
      if (!e.is_string() || (e != "full" && e != "shared"))
        fail(
            "{}: field 'index_topk_pattern' holds {} at position {}; a list pattern is taken as "
            "indexer_types and needs \"full\" or \"shared\"",
            f.source(), json_excerpt(e), i);
      out.push_back(e == "full");
    }
  } else {
    fail(
        "{}: field 'index_topk_pattern' must be a string of \"F\"/\"S\" (one per layer) or a "
        "list of \"full\"/\"shared\", got {}",
        f.source(), json_excerpt(v));
  }
  if (static_cast<int64_t>(out.size()) < layers)
    fail(
        "{}: field 'index_topk_pattern' has {} entries but num_hidden_layers is {} (one per layer "
        "is needed; transformers fails on the missing ones)",
        f.source(), out.size(), layers);
  out.resize(layers);
  return out;
}

constexpr int64_t kMaxLayers = 65536;

// Stop ids must be tokens the model can produce.
void check_eos_ids(const std::vector<int64_t>& ids, int64_t vocab_size, const std::string& source) {
  for (int64_t id : ids)
    if (id < 0 || id >= vocab_size)
      fail("{}: field 'eos_token_id' holds {}, outside the vocabulary [0, {}) (vocab_size)", source,
           id, vocab_size);
}

}  // namespace

double RopeConfig::attention_factor() const {
  if (type == "default") return 1.0;
  if (attention_factor_override) return *attention_factor_override;
  if (mscale != 0.0 && mscale_all_dim != 0.0)
    return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim);
  return yarn_mscale(factor, 1.0);
}

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  // transformers' yarn_apply_mscale: only for non-default rope with mscale_all_dim set.
  if (rope.type != "default" && rope.mscale_all_dim != 0.0) {
    double m = yarn_mscale(rope.factor, rope.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

namespace {

template <class Json>
ModelConfig parse_config(const Json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: config is not a JSON object", source);
  Fields<Json> f(j, source);
  ModelConfig c;
  c.model_type = f.string("model_type", "");
  if (c.model_type.empty()) fail("{}: missing required field 'model_type'", source);
  const bool glm = c.model_type == "glm_moe_dsa";
  const bool dsv32 = c.model_type == "deepseek_v32";
  if (!glm && !dsv32)
    fail("{}: unknown model_type '{}' (whittle supports \"glm_moe_dsa\" and \"deepseek_v32\")",
         source, c.model_type);
  c.architectures = f.strings("architectures");

  c.vocab_size = f.positive("vocab_size");
  c.hidden_size = f.positive("hidden_size");
  c.num_hidden_layers = f.positive("num_hidden_layers");
  // Per-layer tables are built here, before any weight is read: 2^31 - 1 layers took 5 s and 0.5 GB
  // for a 1 KB file. Released models have at most a few hundred layers.
  if (c.num_hidden_layers > kMaxLayers)
    fail("{}: field 'num_hidden_layers' is {}, beyond whittle's limit of {} layers", source,
         c.num_hidden_layers, kMaxLayers);
  c.num_attention_heads = f.positive("num_attention_heads");
  c.num_key_value_heads = f.positive("num_key_value_heads", c.num_attention_heads);
  if (c.num_key_value_heads != c.num_attention_heads)
    fail("{}: num_key_value_heads ({}) must equal num_attention_heads ({}) for MLA", source,
         c.num_key_value_heads, c.num_attention_heads);

  c.q_lora_rank = f.integer("q_lora_rank", 0);
  if (c.q_lora_rank <= 0)
    fail("{}: field 'q_lora_rank' must be a positive integer: the DSA indexer reads the q latent",
         source);
  c.kv_lora_rank = f.positive("kv_lora_rank");
  c.qk_nope_head_dim = f.positive("qk_nope_head_dim");
  c.qk_rope_head_dim = f.positive("qk_rope_head_dim");
  if (c.qk_rope_head_dim % 2)
    fail("{}: qk_rope_head_dim ({}) must be even", source, c.qk_rope_head_dim);
  c.v_head_dim = f.positive("v_head_dim");
  if (f.has("qk_head_dim") && f.integer("qk_head_dim") != c.qk_head_dim())
    fail("{}: qk_head_dim ({}) contradicts qk_nope_head_dim + qk_rope_head_dim ({})", source,
         f.integer("qk_head_dim"), c.qk_head_dim());
  c.attention_bias = f.boolean("attention_bias", false);
  if (c.attention_bias) fail("{}: attention_bias=true is not supported", source);

  c.index_n_heads = f.positive("index_n_heads", glm ? 32 : 64);
  c.index_head_dim = f.positive("index_head_dim", 128);
  c.index_topk = f.positive("index_topk", 2048);
  if (c.index_head_dim <= c.qk_rope_head_dim)
    fail("{}: index_head_dim ({}) must exceed qk_rope_head_dim ({})", source, c.index_head_dim,
         c.qk_rope_head_dim);

  c.intermediate_size = f.positive("intermediate_size");
  c.first_k_dense_replace = f.integer("first_k_dense_replace", 3);
  c.layer_is_moe = parse_layer_kinds(f, "mlp_layer_types", "sparse", "dense", c.num_hidden_layers);
  if (c.layer_is_moe.empty()) {
    int64_t dense = std::clamp<int64_t>(c.first_k_dense_replace, 0, c.num_hidden_layers);
    c.layer_is_moe.assign(c.num_hidden_layers, true);
    for (int64_t i = 0; i < dense; ++i) c.layer_is_moe[i] = false;
  }
  const bool any_moe =
      std::find(c.layer_is_moe.begin(), c.layer_is_moe.end(), true) != c.layer_is_moe.end();
  if (any_moe) {
    c.moe_intermediate_size = f.positive("moe_intermediate_size");
    c.n_routed_experts = f.positive("n_routed_experts");
    c.num_experts_per_tok = f.positive("num_experts_per_tok");
    c.n_shared_experts = f.integer("n_shared_experts", 1);
    if (c.n_shared_experts < 0) fail("{}: n_shared_experts must not be negative", source);
    c.n_group = f.positive("n_group", glm ? 1 : 8);
    c.topk_group = f.positive("topk_group", glm ? 1 : 4);
    if (c.num_experts_per_tok > c.n_routed_experts)
      fail("{}: num_experts_per_tok ({}) exceeds n_routed_experts ({})", source,
           c.num_experts_per_tok, c.n_routed_experts);
    if (c.n_routed_experts % c.n_group)
      fail("{}: n_routed_experts ({}) is not divisible by n_group ({})", source, c.n_routed_experts,
           c.n_group);
    if (c.n_group > 1 && c.n_routed_experts / c.n_group < 2)
      fail("{}: n_group ({}) leaves fewer than 2 experts per group", source, c.n_group);
    if (c.topk_group > c.n_group)
      fail("{}: topk_group ({}) exceeds n_group ({})", source, c.topk_group, c.n_group);
    if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group))
      fail("{}: num_experts_per_tok ({}) exceeds the experts in topk_group groups", source,
           c.num_experts_per_tok);
  }
  c.norm_topk_prob = f.boolean("norm_topk_prob", true);
  // Multiplies every routed expert's weight in float32: 0, a negative or an overflowing value makes
  // the MoE output nonsense.
  c.routed_scaling_factor = f.positive_float("routed_scaling_factor", 2.5);
  c.scoring_func = f.string("scoring_func", "sigmoid");
  if (c.scoring_func != "sigmoid")
    fail("{}: scoring_func '{}' is not supported (expected \"sigmoid\")", source, c.scoring_func);
  c.hidden_act = f.string("hidden_act", "silu");
  if (c.hidden_act != "silu")
    fail("{}: hidden_act '{}' is not supported (expected \"silu\")", source, c.hidden_act);

  // 1 / sqrt(mean(x^2) + eps) in float32: eps <= 0 gives inf / NaN on a zero row.
  c.rms_norm_eps = f.positive_float("rms_norm_eps", glm ? 1e-5 : 1e-6);
  c.max_position_embeddings = f.positive("max_position_embeddings", glm ? 202752 : 163840);
  c.rope = parse_rope(f, c.max_position_embeddings);
  if (const double scale = c.softmax_scale(); !std::isfinite(scale) || !(scale > 0))
    fail(
        "{}: yarn mscale_all_dim {} with factor {} gives an attention softmax scale of {} "
        "(expected a positive "
        "finite number)",
        source, c.rope.mscale_all_dim, c.rope.factor, scale);
  // transformers hard-codes the pairing and ignores these keys: MLA is interleaved in both models,
  // the indexer is interleaved in glm_moe_dsa and half-split in deepseek_v32. A checkpoint asking
  // for anything else contradicts the architecture.
  c.rope_interleave = f.boolean("rope_interleave", true);
  c.indexer_rope_interleave = f.boolean("indexer_rope_interleave", glm);
  if (glm && (!c.rope_interleave || !c.indexer_rope_interleave))
    fail(
        "{}: glm_moe_dsa uses interleaved RoPE; rope_interleave/indexer_rope_interleave=false "
        "contradict it",
        source);
  if (dsv32 && (!c.rope_interleave || c.indexer_rope_interleave))
    fail(
        "{}: deepseek_v32 uses interleaved RoPE in MLA and half-split RoPE in the indexer; "
        "rope_interleave=false / indexer_rope_interleave=true contradict it",
        source);

  // deepseek_v32 builds an indexer in every layer; transformers ignores indexer_types (and has no
  // index_topk_pattern) there. For glm_moe_dsa the precedence is transformers':
  // indexer_types, else index_topk_pattern, else index_topk_freq / index_skip_topk_offset.
  if (glm)
    c.indexer_full = parse_layer_kinds(f, "indexer_types", "full", "shared", c.num_hidden_layers);
  if (dsv32) c.indexer_full.assign(c.num_hidden_layers, true);
  if (c.indexer_full.empty() && f.has("index_topk_pattern")) {
    c.indexer_full = parse_index_pattern(f, c.num_hidden_layers);
    if (!c.indexer_full[0])
      fail(
          "{}: field 'index_topk_pattern' makes layer 0 \"S\" (shared), but a shared layer reuses "
          "the previous layer's selection and layer 0 has none",
          source);
  }
  if (c.indexer_full.empty()) {
    int64_t freq = std::max<int64_t>(f.integer("index_topk_freq", 1), 1);
    int64_t offset = f.integer("index_skip_topk_offset", 2);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      c.indexer_full.push_back(std::max<int64_t>(i - offset + 1, 0) % freq == 0);
    if (!c.indexer_full[0])
      fail(
          "{}: fields 'index_topk_freq' ({}) and 'index_skip_topk_offset' ({}) make layer 0 "
          "\"shared\", but layer 0 has no earlier layer to share with",
          source, freq, offset);
  }
  if (!c.indexer_full[0])
    fail("{}: indexer_types[0] is \"shared\" but there is no earlier layer", source);

  c.num_nextn_predict_layers = f.integer("num_nextn_predict_layers", 0);
  if (c.num_nextn_predict_layers < 0 || c.num_nextn_predict_layers > kMaxLayers)
    fail("{}: field 'num_nextn_predict_layers' is {}, outside [0, {}]", source,
         c.num_nextn_predict_layers, kMaxLayers);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.eos_token_ids = f.integers("eos_token_id");
  check_eos_ids(c.eos_token_ids, c.vocab_size, source);
  if (f.has("bos_token_id")) c.bos_token_id = f.integer("bos_token_id");
  if (f.has("pad_token_id")) c.pad_token_id = f.integer("pad_token_id");
  c.torch_dtype = f.string("dtype", f.string("torch_dtype", "bfloat16"));
  c.quantization = QuantConfig::from_config_json(j, source);
  return c;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  return parse_config(j, source);
}

ModelConfig ModelConfig::from_json(const nlohmann::ordered_json& j, const std::string& source) {
  return parse_config(j, source);
}

void ModelConfig::read_generation_config(const json& g, const std::string& source) {
  if (!g.is_object()) fail("{}: generation config is not a JSON object", source);
  Fields<json> f(g, source);
  std::vector<int64_t> eos = f.integers("eos_token_id");
  check_eos_ids(eos, vocab_size, source);
  if (!eos.empty()) eos_token_ids = eos;
  // Sampling defaults, checked as transformers' logits warpers check them.
  if (f.has("temperature")) {
    temperature = f.number("temperature", 1.0);
    if (*temperature < 0)
      fail("{}: field 'temperature' must not be negative, got {}", source, *temperature);
  }
  if (f.has("top_p")) {
    top_p = f.number("top_p", 1.0);
    if (!(*top_p > 0 && *top_p <= 1))
      fail("{}: field 'top_p' must be in (0, 1], got {}", source, *top_p);
  }
  if (f.has("top_k")) {
    top_k = f.integer("top_k");
    if (*top_k < 0) fail("{}: field 'top_k' must not be negative, got {}", source, *top_k);
  }
  if (f.has("do_sample")) do_sample = f.boolean("do_sample", false);
  if (f.has("max_new_tokens")) max_new_tokens = f.positive("max_new_tokens");
}

ModelConfig ModelConfig::load(const fs::path& dir) {
  const fs::path path = dir / "config.json";
  if (!fs::exists(path)) fail("{}: missing config.json (is this a model folder?)", dir.string());
  // Ordered: quantization_config's first-match rules follow the file's key order.
  const auto j =
      nlohmann::ordered_json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail("{}: malformed JSON", path.string());
  ModelConfig c = from_json(j, path.string());

  const fs::path gen_path = dir / "generation_config.json";
  if (fs::exists(gen_path)) {
    json g = json::parse(read_file(gen_path), nullptr, false);
    if (g.is_discarded()) fail("{}: malformed JSON", gen_path.string());
    c.read_generation_config(g, gen_path.string());
  }
  return c;
}

}  // namespace whittle
