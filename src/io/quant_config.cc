// QuantConfig: parsing and the per-module rules (see quant_config.h for the rules and where vLLM
// states them). The parser is written once for both JSON types; only the ordered one knows the
// file's key order, which the first-match rules need.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/quant_config.h"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "io/json_excerpt.h"
#include "util/error.h"

namespace whittle {

// A compiled regex with Python's re.match (anchored at the start) and re.search semantics.
class PythonRegex {
 public:
  PythonRegex(std::string_view pattern, std::string& error) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
    if (!code_) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(code, message.data(), message.size());
      error = fmt::format("{} at offset {}", reinterpret_cast<const char*>(message.data()), offset);
    }
  }
  ~PythonRegex() { pcre2_code_free(code_); }
  PythonRegex(const PythonRegex&) = delete;
  PythonRegex& operator=(const PythonRegex&) = delete;
  bool ok() const { return code_ != nullptr; }

  // 1 on a match, 0 on none, a negative PCRE2 code on failure (e.g. the match limit: a pattern
  // that backtracks without end on this name).
  int match(std::string_view subject, bool anchored) const {
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    if (!data || !context) {
      pcre2_match_data_free(data);
      pcre2_match_context_free(context);
      return PCRE2_ERROR_NOMEMORY;
    }
    // Module names are short; a million steps is far beyond any sensible pattern.
    pcre2_set_match_limit(context, 1000000);
    const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(),
                               0, anchored ? PCRE2_ANCHORED : 0, data, context);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
    if (rc >= 0) return 1;
    return rc == PCRE2_ERROR_NOMATCH ? 0 : rc;
  }

 private:
  pcre2_code* code_ = nullptr;
};

namespace {

using ojson = nlohmann::ordered_json;

// Typed access to one object of quantization_config with errors naming the file and the field.
template <class Json>
class QuantFields {
 public:
  // `source` is copied, as model_config's Fields does: a reference to a caller's temporary
  // path string is how generation_config.json's errors once read freed memory.
  QuantFields(const Json& j, std::string source, std::string prefix)
      : j_(j), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const Json& raw(const char* key) const { return j_.at(key); }
  std::string name(std::string_view key) const { return prefix_ + std::string(key); }
  const std::string& source() const { return source_; }

  [[noreturn]] void bad(std::string_view key, std::string_view expected, const Json& v) const {
    fail("{}: field '{}' must be {}, got {}", source_, name(key), expected, json_excerpt(v));
  }
  void require(const char* key, std::string_view why) const {
    if (!has(key)) fail("{}: missing required field '{}' ({})", source_, name(key), why);
  }

  // GPTQ bit widths whittle reads; `allow_16bit`: auto-round's bits >= 16 ("keep in 16 bit").
  int bits(const char* key, bool allow_16bit = false) const {
    const Json& v = raw(key);
    if (!v.is_number_integer()) bad(key, "an integer (4 or 8)", v);
    if (v.is_number_unsigned() ? v.template get<uint64_t>() > 64 : v.template get<int64_t>() > 64)
      bad(key, allow_16bit ? "4, 8, or 16 and above for 16 bit" : "4 or 8", v);
    const int b = static_cast<int>(v.template get<int64_t>());
    if (b == 4 || b == 8 || (allow_16bit && b >= 16)) return b;
    fail("{}: field '{}' is {}; whittle reads 4- and 8-bit GPTQ weights{}", source_, name(key), b,
         allow_16bit ? " (16 or more keeps a module in 16 bit)" : "");
  }
  int64_t group_size(const char* key) const {
    const Json& v = raw(key);
    if (!v.is_number_integer()) bad(key, "a positive integer or -1", v);
    if (v.is_number_unsigned() ? v.template get<uint64_t>() > (uint64_t{1} << 31)
                               : v.template get<int64_t>() > (int64_t{1} << 31))
      bad(key, "a positive integer or -1", v);
    const int64_t g = v.template get<int64_t>();
    if (g <= 0 && g != -1) bad(key, "a positive integer or -1 (one group per row)", v);
    return g;
  }
  bool boolean(const char* key) const {
    const Json& v = raw(key);
    if (!v.is_boolean()) bad(key, "true or false", v);
    return v.template get<bool>();
  }
  std::string string(const char* key) const {
    const Json& v = raw(key);
    if (!v.is_string()) bad(key, "a string", v);
    return v.template get<std::string>();
  }

 private:
  const Json& j_;
  std::string source_, prefix_;
};

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::shared_ptr<const PythonRegex> compile_rule(std::string_view pattern, const std::string& key,
                                                const std::string& field,
                                                const std::string& source) {
  std::string error;
  auto regex = std::make_shared<const PythonRegex>(pattern, error);
  if (!regex->ok())
    fail("{}: field '{}' has key \"{}\" whose regex does not compile: {}", source, field, key,
         error);
  return regex;
}

// The override fields of a rule (`+:` dict or extra_config entry). Other keys (data_type, act_bits,
// damp_percent, ...) are not read by vLLM and are ignored.
template <class Json>
void read_overrides(const QuantFields<Json>& f, QuantConfig::Rule& rule, bool auto_round) {
  if (f.has("bits")) rule.bits = f.bits("bits", /*allow_16bit=*/auto_round);
  if (f.has("group_size")) rule.group_size = f.group_size("group_size");
  if (f.has("sym")) rule.sym = f.boolean("sym");
  if (!auto_round && f.has("desc_act")) rule.desc_act = f.boolean("desc_act");
}

// `dynamic` (gptq): "-:regex" skips, "+:regex" or a bare regex overrides.
template <class Json>
void read_dynamic(const QuantFields<Json>& f, QuantConfig& q, bool order_known) {
  if (!f.has("dynamic")) return;
  const Json& dynamic = f.raw("dynamic");
  if (!dynamic.is_object())
    f.bad("dynamic", "an object mapping regexes to overrides (\"-:regex\" keeps 16 bit)", dynamic);
  if (!order_known && dynamic.size() > 1)
    fail(
        "{}: field '{}' has {} rules and the first match wins, but it was read without the file's "
        "key order (parse config.json as nlohmann::ordered_json)",
        f.source(), f.name("dynamic"), dynamic.size());
  for (auto it = dynamic.begin(); it != dynamic.end(); ++it) {
    QuantConfig::Rule rule;
    rule.key = it.key();
    std::string_view pattern = rule.key;
    // vLLM: key.startswith("-:") skips; otherwise key.removeprefix("+:") is the pattern.
    if (pattern.starts_with("-:")) {
      rule.skip = true;
      pattern.remove_prefix(2);
    } else if (pattern.starts_with("+:")) {
      pattern.remove_prefix(2);
    }
    const std::string field = f.name("dynamic");
    const Json& value = it.value();
    if (!value.is_object())
      fail("{}: field '{}' maps \"{}\" to {}; expected an object of overrides ({{}} for \"-:\")",
           f.source(), field, rule.key, json_excerpt(value));
    if (!rule.skip) {
      QuantFields<Json> o(value, f.source(), field + "[\"" + rule.key + "\"].");
      read_overrides(o, rule, /*auto_round=*/false);
    }
    rule.regex = compile_rule(pattern, rule.key, field, f.source());
    q.rules.push_back(std::move(rule));
  }
}

// vLLM's test for a regex key in extra_config (inc.py / auto_round.py REGEX_SPECIAL_CHARS).
bool looks_like_regex(std::string_view key) {
  return key.find_first_of("*+?^$()[]{}|\\") != std::string_view::npos;
}

template <class Json>
void read_extra_config(const QuantFields<Json>& f, QuantConfig& q, bool order_known) {
  if (!f.has("extra_config")) return;
  const Json& extra = f.raw("extra_config");
  if (!extra.is_object())
    f.bad("extra_config", "an object mapping module names to settings", extra);
  size_t regexes = 0;
  for (auto it = extra.begin(); it != extra.end(); ++it) regexes += looks_like_regex(it.key());
  if (!order_known && regexes > 1)
    fail(
        "{}: field '{}' has {} regex entries and the first match wins, but it was read without the "
        "file's key order (parse config.json as nlohmann::ordered_json)",
        f.source(), f.name("extra_config"), regexes);
  const std::string field = f.name("extra_config");
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    QuantConfig::Rule rule;
    rule.key = it.key();
    rule.exact = !looks_like_regex(rule.key);
    const Json& value = it.value();
    if (!value.is_object())
      fail("{}: field '{}' maps \"{}\" to {}; expected an object of settings", f.source(), field,
           rule.key, json_excerpt(value));
    QuantFields<Json> o(value, f.source(), field + "[\"" + rule.key + "\"].");
    read_overrides(o, rule, /*auto_round=*/true);
    if (!rule.exact) rule.regex = compile_rule(rule.key, rule.key, field, f.source());
    q.rules.push_back(std::move(rule));
  }
}

// A list of strings, or of lists of strings (flattened, as vLLM's maybe_update_config does); a
// string is split at commas when `comma_string`.
template <class Json>
std::vector<std::string> read_names(const QuantFields<Json>& f, const char* key,
                                    bool comma_string) {
  std::vector<std::string> out;
  if (!f.has(key)) return out;
  const Json& v = f.raw(key);
  const char* expected =
      comma_string ? "a comma-separated string or a list of strings" : "a list of strings";
  if (comma_string && v.is_string()) {
    std::string_view s = v.template get_ref<const std::string&>();
    while (true) {
      const size_t comma = s.find(',');
      out.emplace_back(s.substr(0, comma));
      if (comma == std::string_view::npos) break;
      s.remove_prefix(comma + 1);
    }
    return out;
  }
  if (!v.is_array()) f.bad(key, expected, v);
  for (const Json& item : v) {
    if (item.is_string()) {
      out.push_back(item.template get<std::string>());
    } else if (!comma_string && item.is_array()) {
      for (const Json& inner : item) {
        if (!inner.is_string()) f.bad(key, "a list of strings or of lists of strings", v);
        out.push_back(inner.template get<std::string>());
      }
    } else {
      f.bad(key, expected, v);
    }
  }
  return out;
}

template <class Json>
std::optional<QuantConfig> parse(const Json& config, const std::string& source, bool order_known) {
  if (!config.is_object() || !config.contains("quantization_config")) return std::nullopt;
  const Json& qc = config.at("quantization_config");
  if (qc.is_null()) return std::nullopt;
  if (!qc.is_object())
    fail("{}: field 'quantization_config' must be an object, got {}", source, json_excerpt(qc));
  QuantFields<Json> f(qc, source, "quantization_config.");
  f.require("quant_method", "\"gptq\" or \"auto-round\"");
  const std::string method = lower(f.string("quant_method"));
  // DeepSeek-style FP8 blocks: the weight loader reads them from weight_scale_inv.
  if (method == "fp8") return std::nullopt;

  QuantConfig q;
  q.source = source;
  if (method == "gptq") {
    q.quant_method = "gptq";
    for (const char* key : {"bits", "group_size", "desc_act"})
      f.require(key, "vLLM's GPTQConfig.from_config requires it");
    q.defaults.bits = f.bits("bits");
    q.defaults.group_size = f.group_size("group_size");
    q.defaults.desc_act = f.boolean("desc_act");
    // Without `sym` vLLM cannot use Marlin and runs the gptq kernel, which reads the zero points
    // from qzeros; sym=false says the same here.
    q.defaults.sym = f.has("sym") ? f.boolean("sym") : false;
    if (f.has("checkpoint_format")) {
      const std::string format = f.string("checkpoint_format");
      if (format == "gptq_v2")
        q.checkpoint_format = 2;
      else if (format != "gptq" && !format.empty())
        fail(
            "{}: field 'quantization_config.checkpoint_format' is \"{}\"; whittle reads \"gptq\" "
            "(v1, also when absent) and \"gptq_v2\"",
            source, format);
    }
    if (f.has("lm_head")) q.lm_head = f.boolean("lm_head");
    q.modules_in_block_to_quantize =
        read_names(f, "modules_in_block_to_quantize", /*comma_string=*/false);
    read_dynamic(f, q, order_known);
  } else if (method == "auto-round" || method == "auto_round") {
    q.quant_method = "auto-round";
    q.packing_format =
        f.has("packing_format") ? f.string("packing_format") : std::string("auto_round:auto_gptq");
    if (q.packing_format != "auto_round:auto_gptq")
      fail(
          "{}: field 'quantization_config.packing_format' is \"{}\"; whittle reads AutoRound's "
          "GPTQ layout only (\"auto_round:auto_gptq\", written for symmetric int weights); "
          "re-export with --format auto_gptq or auto_round",
          source, q.packing_format);
    const std::string data_type = f.has("data_type") ? f.string("data_type") : "int";
    if (data_type != "int")
      fail("{}: field 'quantization_config.data_type' is \"{}\"; whittle reads \"int\" weights",
           source, data_type);
    for (const char* key : {"backend", "vllm_backend"})
      if (f.has(key)) {
        const std::string backend = f.string(key);
        if (backend.find("awq") != std::string::npos)
          fail("{}: field 'quantization_config.{}' is \"{}\"; the GPTQ layout needs a gptq backend",
               source, key, backend);
      }
    for (const char* key : {"bits", "group_size"})
      f.require(key, "vLLM's AutoRound config requires it");
    q.defaults.bits = f.bits("bits");
    q.defaults.group_size = f.group_size("group_size");
    q.defaults.sym = f.has("sym") ? f.boolean("sym") : true;
    q.defaults.desc_act = false;  // vLLM builds AutoRound's GPTQ layers with desc_act=False
    const char* blocks_key =
        f.has("block_name_to_quantize") ? "block_name_to_quantize" : "to_quant_block_names";
    q.block_name_to_quantize = read_names(f, blocks_key, /*comma_string=*/true);
    read_extra_config(f, q, order_known);
  } else {
    fail(
        "{}: field 'quantization_config.quant_method' is \"{}\"; whittle reads \"gptq\" and "
        "\"auto-round\" in GPTQ layout (and \"fp8\" blocks)",
        source, f.string("quant_method"));
  }
  return q;
}

// One group per row makes act-order a no-op (GPTQMarlinConfig normalises it the same way).
ModuleQuant normalised(ModuleQuant m) {
  if (m.group_size == -1) m.desc_act = false;
  return m;
}

bool is_lm_head(std::string_view module) {
  return module == "lm_head" || module.ends_with(".lm_head");
}

}  // namespace

std::string describe(const ModuleQuant& q) {
  std::string s = fmt::format("int{} g{}", q.bits, q.group_size);
  if (!q.sym) s += " asym";
  if (q.desc_act) s += " act-order";
  return s;
}

std::optional<QuantConfig> QuantConfig::from_config_json(const nlohmann::ordered_json& config,
                                                         const std::string& source) {
  return parse(config, source, /*order_known=*/true);
}

std::optional<QuantConfig> QuantConfig::from_config_json(const nlohmann::json& config,
                                                         const std::string& source) {
  return parse(config, source, /*order_known=*/false);
}

bool QuantConfig::matches(const Rule& rule, std::string_view name, bool anchored) const {
  if (rule.exact) return name == rule.key;
  const int rc = rule.regex->match(name, anchored);
  if (rc < 0) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(rc, message.data(), message.size());
    fail("{}: quantization_config key \"{}\" cannot be matched against \"{}\": {}", source,
         rule.key, name, reinterpret_cast<const char*>(message.data()));
  }
  return rc == 1;
}

// gptq, as vLLM's get_linear_quant_method: a first-matching "-:" rule or a module outside
// modules_in_block_to_quantize stays 16 bit; a first-matching override replaces the fields it
// sets. `rule_name` is what the regexes see, `list_name` what the module list is tested against.
std::optional<ModuleQuant> QuantConfig::resolve(std::string_view rule_name,
                                                std::string_view list_name, bool check_list) const {
  if (is_lm_head(list_name) && !lm_head) return std::nullopt;
  if (check_list && !modules_in_block_to_quantize.empty() &&
      std::none_of(modules_in_block_to_quantize.begin(), modules_in_block_to_quantize.end(),
                   [&](const std::string& m) { return list_name.find(m) != std::string::npos; }))
    return std::nullopt;
  ModuleQuant m = defaults;
  for (const Rule& rule : rules) {
    if (!matches(rule, rule_name, /*anchored=*/true)) continue;
    if (rule.skip) return std::nullopt;
    m.bits = rule.bits.value_or(m.bits);
    m.group_size = rule.group_size.value_or(m.group_size);
    m.sym = rule.sym.value_or(m.sym);
    m.desc_act = rule.desc_act.value_or(m.desc_act);
    break;
  }
  return normalised(m);
}

// auto-round, as vLLM's AutoRoundConfig.get_layer_config for an unfused Linear.
std::optional<ModuleQuant> QuantConfig::resolve_auto_round(std::string_view module) const {
  const Rule* rule = nullptr;
  for (const Rule& r : rules)
    if (r.exact && r.key == module) rule = &r;
  // Outside the quantized blocks (and lm_head, unless named exactly) a module is 16 bit unless an
  // entry sets its bits.
  bool quantized = true;
  if (!rule) {
    quantized = !is_lm_head(module);
    if (!block_name_to_quantize.empty())
      quantized = std::any_of(block_name_to_quantize.begin(), block_name_to_quantize.end(),
                              [&](const std::string& b) { return module.starts_with(b); });
    for (const Rule& r : rules)
      if (!r.exact && matches(r, module, /*anchored=*/false)) {
        rule = &r;
        break;
      }
  }
  ModuleQuant m = defaults;
  int bits = quantized ? m.bits : 16;
  if (!quantized) {
    m.group_size = -1;
    m.sym = true;
  }
  if (rule) {
    bits = rule->bits.value_or(bits);
    m.group_size = rule->group_size.value_or(m.group_size);
    m.sym = rule->sym.value_or(m.sym);
  }
  if (bits >= 16) return std::nullopt;
  m.bits = bits;
  return normalised(m);
}

std::optional<ModuleQuant> QuantConfig::for_module(std::string_view module) const {
  if (quant_method == "auto-round") return resolve_auto_round(module);
  return resolve(module, module, /*check_list=*/true);
}

std::optional<ModuleQuant> QuantConfig::for_module_as_vllm(std::string_view module) const {
  // AutoRound: vLLM resolves each shard of a fused module by its own name and refuses shards that
  // disagree, so the per-name answer is vLLM's.
  if (quant_method == "auto-round") return resolve_auto_round(module);
  const std::string fused = vllm_module_name(module);
  // FusedMoE is decided from the dynamic rules alone (get_moe_quant_method); fused Linears test
  // the module list shard by shard (is_layer_gptq_quantized).
  const bool experts = fused.ends_with(".mlp.experts") && fused != module;
  return resolve(fused, module, /*check_list=*/!experts);
}

std::string QuantConfig::vllm_module_name(std::string_view module) {
  const size_t dot = module.rfind('.');
  const std::string_view parent = dot == std::string_view::npos ? "" : module.substr(0, dot);
  const std::string_view leaf = dot == std::string_view::npos ? module : module.substr(dot + 1);
  // "<...>.mlp.experts.<e>.<proj>" -> "<...>.mlp.experts"
  if (leaf == "gate_proj" || leaf == "up_proj" || leaf == "down_proj") {
    const size_t experts = parent.rfind(".experts.");
    if (experts != std::string_view::npos &&
        parent.find('.', experts + 9) == std::string_view::npos && experts + 9 < parent.size())
      return std::string(parent.substr(0, experts + 8));
  }
  if (leaf == "gate_proj" || leaf == "up_proj") return std::string(parent) + ".gate_up_proj";
  if (leaf == "q_a_proj" || leaf == "kv_a_proj_with_mqa")
    return std::string(parent) + ".fused_qkv_a_proj";
  return std::string(module);
}

}  // namespace whittle
