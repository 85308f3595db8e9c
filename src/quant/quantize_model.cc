#include "quant/quantize_model.h"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <chrono>
#include <map>
#include <set>
#include <unordered_map>

#include "io/checkpoint_io.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/glm_moe_dsa.h"
#include "quant/gptq_pack.h"
#include "quant/sample_store.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/progress.h"

namespace whittle {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

QuantMethod parse_quant_method(const std::string& name) {
  if (name == "rtn") return QuantMethod::kRtn;
  if (name == "gptq") return QuantMethod::kGptq;
  if (name == "autoround") return QuantMethod::kAutoRound;
  fail("--method: '{}' is not one of autoround, gptq, rtn", name);
}

const char* quant_method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::kRtn:
      return "rtn";
    case QuantMethod::kGptq:
      return "gptq";
    case QuantMethod::kAutoRound:
      return "autoround";
  }
  return "?";
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The calibration samples run through the layers in order: their hidden states live in a
// SampleStore (memory or scratch file) between layers, and one batch at a time is in a Batch. A
// layer's KV cache is dropped once every batch has been through it.
class Chain {
 public:
  Chain(const GlmMoeDsa& model, std::span<const std::vector<int32_t>> samples, int64_t batch,
        uint64_t budget, const fs::path& scratch_dir)
      : hidden_(model.config().hidden_size),
        caches_(samples.size(), KvCache(model.config())),
        store_(static_cast<int64_t>(samples.size()), static_cast<int64_t>(samples[0].size()),
               model.config().hidden_size, budget, scratch_dir) {
    for (size_t first = 0; first < samples.size(); first += static_cast<size_t>(batch)) {
      std::vector<SequenceInput> seqs;
      for (size_t i = first; i < std::min(samples.size(), first + static_cast<size_t>(batch));
           ++i) {
        if (samples[i].size() != samples[0].size())
          fail("internal: calibration samples of different lengths");
        seqs.push_back({samples[i], &caches_[i], false});
      }
      batches_.push_back(model.embed(std::move(seqs)));
      first_sample_.push_back(static_cast<int64_t>(first));
      save(batches_.size() - 1);
    }
  }
  // Runs layer L on every batch (the result kept, or only observed).
  void run(const GlmMoeDsa& model, int64_t L, const LayerWeights& w, ForwardObserver* observer,
           bool observe_only = false) {
    for (size_t i = 0; i < batches_.size(); ++i) {
      Batch& b = batches_[i];
      load(i);
      model.forward_layer(L, w, b, observer);
      if (!observe_only) save(i);
      b.hidden = {};
      for (int64_t s = 0; s < b.sequences(); ++s) b.sequence(s).cache->layers[L].clear();
    }
  }
  const SampleStore& store() const { return store_; }

 private:
  void load(size_t i) {
    Batch& b = batches_[i];
    b.hidden.resize(static_cast<size_t>(b.rows() * hidden_));
    for (int64_t s = 0; s < b.sequences(); ++s)
      store_.get(first_sample_[i] + s, b.hidden.data() + b.first_row(s) * hidden_);
  }
  void save(size_t i) {
    Batch& b = batches_[i];
    for (int64_t s = 0; s < b.sequences(); ++s)
      store_.put(first_sample_[i] + s, b.hidden.data() + b.first_row(s) * hidden_);
    b.hidden = {};
  }

  int64_t hidden_;
  std::vector<KvCache> caches_;
  std::vector<Batch> batches_;
  std::vector<int64_t> first_sample_;
  SampleStore store_;
};

// Linears that read the same input share one Hessian: named by the group of their input.
std::string input_group(const std::string& module) {
  const size_t dot = module.rfind('.');
  const std::string parent = module.substr(0, dot), leaf = module.substr(dot + 1);
  const bool indexer = parent.ends_with(".indexer");
  const std::string attn = indexer ? parent.substr(0, parent.rfind('.')) : parent;
  if (leaf == "gate_proj" || leaf == "up_proj") return parent + ".<mlp input>";
  if (leaf == "q_a_proj" || leaf == "kv_a_proj_with_mqa" || (indexer && leaf == "wk") ||
      (indexer && leaf == "weights_proj"))
    return attn + ".<attention input>";
  if (leaf == "q_b_proj" || (indexer && leaf == "wq_b")) return attn + ".<query latent>";
  return module;
}

// Accumulates the inputs of the Linears that lead each tracked group.
class HessianObserver : public ForwardObserver {
 public:
  explicit HessianObserver(ThreadPool* pool) : pool_(pool) {}
  void track(const std::string& leader, HessianAccumulator* acc) { acc_[leader] = acc; }
  void linear_input(const Weight& w, const float* x, int64_t rows) override {
    auto it = acc_.find(w.module());
    if (it != acc_.end()) it->second->add(x, rows, pool_);
  }

 private:
  ThreadPool* pool_;
  std::unordered_map<std::string, HessianAccumulator*> acc_;
};

// The layer with every quantized Linear read from its packed tensors, as the checkpoint will
// hold them.
LayerWeights substitute(const LayerWeights& w, const std::map<std::string, GptqPacked>& packed) {
  LayerWeights q = w;
  q.for_each_linear([&](Weight& lin) {
    auto it = packed.find(lin.module());
    if (it != packed.end()) lin = it->second.view(lin.module());
  });
  return q;
}

// quantize_report.json: what was done to every layer, and why each kept module was kept.
ordered_json report_json(const QuantizeResult& r, const ordered_json& qc) {
  ordered_json layers = ordered_json::array();
  for (const LayerReport& l : r.layers) {
    ordered_json j = {
        {"layer", l.layer}, {"quantized", l.quantized}, {"kept", l.kept}, {"seconds", l.seconds}};
    if (l.loss_rtn > 0 || l.loss > 0) {
      j["loss_rtn"] = l.loss_rtn;
      j["loss"] = l.loss;
    }
    if (l.best_iter >= 0) j["best_iter"] = l.best_iter;
    layers.push_back(j);
  }
  ordered_json kept = ordered_json::object();
  for (const auto& layer : r.plan.layers)
    for (const LinearPlan& p : layer)
      if (!p.quantize) kept[p.module] = p.kept_because;
  return {{"quantization_config", qc},
          {"quantized_modules", r.plan.quantized()},
          {"kept_modules", kept},
          {"warnings", r.plan.warnings},
          {"layers", layers},
          {"loss",
           "gptq: sum over the layer's Linears of tr((W - Q) H (W - Q)^T) with GPTQ's and with "
           "RTN's codes; autoround: the layer's output mean squared error over every calibration "
           "sample (quantized-chain inputs, full-precision targets) with RTN's and with the tuned "
           "codes"}};
}

}  // namespace

QuantizeResult quantize_checkpoint(const fs::path& in, const fs::path& out,
                                   const QuantizeOptions& opts, ThreadPool& pool) {
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec))
    fail("{}: the output folder is the input model folder", out.string());
  GlmMoeDsa model = GlmMoeDsa::load(in, pool);
  const ModelConfig& c = model.config();
  const WeightSource& source = model.weights();
  const TensorStore& store = source.store();
  const int64_t N = c.num_hidden_layers;

  ordered_json cfg = read_json_file(in / "config.json");
  if (cfg.contains("quantization_config") && cfg["quantization_config"].is_object()) {
    const ordered_json& q = cfg["quantization_config"];
    const std::string method = q.value("quant_method", "");
    if (method != "fp8")
      fail(
          "{}: the model is already quantized (quantization_config.quant_method '{}'); "
          "quantize its 16-bit original",
          (in / "config.json").string(), method);
  }
  for (const LayerWeights& lw : source.weights().layers)
    lw.for_each_linear([&](const Weight& w) {
      if (w.format() == WeightFormat::kGptq)
        fail("{}: {} is already GPTQ-quantized; quantize the 16-bit original", in.string(),
             w.module());
    });

  QuantizeResult result;
  result.plan = plan_quantization(c, source.weights(), opts.plan);
  const QuantPlan& plan = result.plan;
  if (plan.quantized() == 0)
    fail("{}: no Linear is left to quantize under these rules{}", in.string(),
         plan.warnings.empty() ? "" : fmt::format(" ({})", fmt::join(plan.warnings, "; ")));
  if (opts.method != QuantMethod::kRtn && opts.samples.empty())
    fail("--method {}: needs calibration samples", quant_method_name(opts.method));

  ordered_json extra = ordered_json::object();
  if (opts.method == QuantMethod::kRtn) extra["iters"] = 0;
  if (opts.method == QuantMethod::kAutoRound) {
    extra["iters"] = opts.autoround.iters;
    extra["lr"] =
        opts.autoround.lr > 0 ? opts.autoround.lr : 1.0 / static_cast<double>(opts.autoround.iters);
    extra["batch_size"] = opts.autoround.batch;
    extra["seed"] = opts.autoround.seed;
  }
  if (opts.method == QuantMethod::kGptq) extra["damp_percent_of_mean_diag"] = opts.gptq.damp;
  if (!opts.calibration.is_null()) extra["calibration"] = opts.calibration;
  const ordered_json qc =
      quantization_config(plan, opts.plan.spec, quant_method_name(opts.method), extra);
  check_quantization_config(plan, qc, opts.plan.vllm_rules);
  if (opts.show_progress)
    for (const std::string& w : plan.warnings) fmt::print(stderr, "whittle: warning: {}\n", w);

  // The checkpoint's tensors by layer (MTP layers and the rest go with "other").
  std::map<int64_t, std::vector<std::string>> by_layer;
  std::vector<std::string> other;
  for (const std::string& name : store.names()) {
    auto split = split_layer(name);
    if (split && split->first < N)
      by_layer[split->first].push_back(name);
    else
      other.push_back(name);
  }

  AtomicDir dir(out, opts.overwrite);
  {
    std::map<std::string, std::string> metadata;
    if (store.file_count() > 0) metadata = store.file(0).metadata();
    SafeTensorsWriter writer(dir.path(),
                             opts.max_shard_bytes ? opts.max_shard_bytes : shard_bytes_like(store),
                             std::move(metadata));
    auto add = [&](const std::string& name, DType dtype, std::span<const int64_t> shape,
                   std::span<const std::byte> bytes) {
      writer.add(name, dtype, shape, bytes);
      ++result.tensors_written;
      result.bytes_written += bytes.size();
    };
    auto add_packed = [&](const std::string& module, const GptqPacked& p) {
      const int64_t P = 32 / p.spec.bits;
      add(module + ".qweight", DType::I32, std::vector<int64_t>{p.cols / P, p.rows},
          as_bytes_span(p.qweight));
      add(module + ".qzeros", DType::I32, std::vector<int64_t>{p.groups, p.rows / P},
          as_bytes_span(p.qzeros));
      add(module + ".scales", DType::F16, std::vector<int64_t>{p.groups, p.rows},
          as_bytes_span(p.scales));
      add(module + ".g_idx", DType::I32, std::vector<int64_t>{p.cols}, as_bytes_span(p.g_idx));
    };
    // A tensor as it is, except block FP8, which becomes BF16 (its scale_inv is dropped).
    auto copy = [&](const std::string& name) {
      if (name.ends_with("_scale_inv") && store.contains(name.substr(0, name.size() - 10)) &&
          store.get(name.substr(0, name.size() - 10)).dtype() == DType::F8_E4M3)
        return;
      const TensorView v = store.get(name);
      if (v.dtype() == DType::F8_E4M3 && store.contains(name + "_scale_inv")) {
        const std::vector<float> f = store.load_f32(name, v.shape());
        std::vector<uint16_t> b(f.size());
        for (size_t i = 0; i < f.size(); ++i) b[i] = f32_to_bf16(f[i]);
        add(name, DType::BF16, v.shape(), as_bytes_span(b));
      } else {
        add(name, v.dtype(), v.shape(), v.bytes);
      }
      store.advise(v.bytes, MemoryAdvice::kDontNeed);
    };
    for (const std::string& name : other) copy(name);

    // Writes layer L: packed modules where their source tensors were, everything else copied.
    auto write_layer = [&](int64_t L, const std::map<std::string, GptqPacked>& packed) {
      std::set<std::string> consumed;
      std::map<std::string, std::vector<std::string>> fused;  // fused tensor -> modules, in order
      for (const auto& [module, p] : packed) {
        if (store.contains(module + ".weight")) {
          consumed.insert(module + ".weight");
          consumed.insert(module + ".weight_scale_inv");
          continue;
        }
        // transformers' fused experts: mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I].
        const size_t e = module.rfind(".experts.");
        const std::string leaf = module.substr(module.rfind('.') + 1);
        const std::string name =
            module.substr(0, e + 8) + (leaf == "down_proj" ? ".down_proj" : ".gate_up_proj");
        fused[name].push_back(module);
      }
      for (const std::string& name : by_layer[L]) {
        if (name.ends_with(".weight") && packed.contains(name.substr(0, name.size() - 7))) {
          add_packed(name.substr(0, name.size() - 7), packed.at(name.substr(0, name.size() - 7)));
        } else if (fused.contains(name)) {
          // Every expert's modules, expert by expert, gate before up.
          std::vector<std::string> modules = fused[name];
          std::sort(modules.begin(), modules.end(), [](const std::string& a, const std::string& b) {
            auto expert = [](const std::string& m) {
              size_t used = 0;
              return *leading_int(std::string_view(m).substr(m.rfind(".experts.") + 9), &used);
            };
            return std::pair(expert(a), a) < std::pair(expert(b), b);
          });
          const int64_t E = store.get(name).shape().at(0);
          if (static_cast<int64_t>(modules.size()) != E * (name.ends_with("gate_up_proj") ? 2 : 1))
            fail(
                "{}: only some experts of {} are quantized; a fused expert tensor is quantized "
                "whole",
                in.string(), name);
          for (const std::string& m : modules) add_packed(m, packed.at(m));
        } else if (!consumed.contains(name)) {
          copy(name);
        }
      }
    };

    const bool calibrated = opts.method != QuantMethod::kRtn;
    std::unique_ptr<Chain> q_chain, fp_chain;
    const uint64_t budget = opts.method == QuantMethod::kAutoRound
                                ? opts.activation_budget_bytes / 2
                                : opts.activation_budget_bytes;
    if (calibrated)
      q_chain = std::make_unique<Chain>(model, opts.samples, opts.batch, budget, dir.path());
    if (opts.method == QuantMethod::kAutoRound)
      fp_chain = std::make_unique<Chain>(model, opts.samples, opts.batch, budget, dir.path());

    for (int64_t L = 0; L < N; ++L) {
      const auto t0 = std::chrono::steady_clock::now();
      const LayerWeights& w = source.acquire(L);
      const std::vector<LinearPlan>& lp = plan.layers[static_cast<size_t>(L)];
      LayerReport report;
      report.layer = L;
      for (const LinearPlan& p : lp) (p.quantize ? report.quantized : report.kept) += 1;
      std::map<std::string, const Weight*> weight_of;
      w.for_each_linear([&](const Weight& x) { weight_of[x.module()] = &x; });
      std::map<std::string, GptqPacked> packed;

      if (opts.method == QuantMethod::kRtn) {
        for (const LinearPlan& p : lp) {
          if (!p.quantize) continue;
          const Weight& w16 = *weight_of.at(p.module);
          const std::vector<float> f = w16.to_f32();
          packed[p.module] =
              pack_gptq(quantize_rtn(p.module, f.data(), p.rows, p.cols, opts.plan.spec));
          // Nothing reads it again: its pages leave now, not at the end of the layer (a GLM-5
          // MoE layer is 12 GB of bf16).
          w16.for_each_range(
              [&](std::span<const std::byte> r) { store.advise(r, MemoryAdvice::kDontNeed); });
        }
      } else if (opts.method == QuantMethod::kGptq) {
        // Hessian groups: a leader Linear (the first of the group in the layer) per input.
        std::map<std::string, std::vector<const LinearPlan*>> members;
        std::vector<std::string> order;
        std::map<std::string, std::string> leader;
        w.for_each_linear([&](const Weight& x) {
          const std::string g = input_group(x.module());
          if (!leader.contains(g)) {
            leader[g] = x.module();
            order.push_back(g);
          }
        });
        for (const LinearPlan& p : lp)
          if (p.quantize) members[input_group(p.module)].push_back(&p);
        // A GLM-5 MoE layer is ~770 Linears and can take an hour on few cores: progress by Linear.
        std::unique_ptr<Progress> progress;
        if (opts.show_progress)
          progress = std::make_unique<Progress>(fmt::format("layer {}/{}", L + 1, N),
                                                report.quantized, "modules");
        // Chunks of groups whose Hessians fit the budget; each chunk is one observing pass.
        size_t g = 0;
        while (g < order.size()) {
          std::map<std::string, std::unique_ptr<HessianAccumulator>> acc;
          HessianObserver observer(&pool);
          uint64_t bytes = 0;
          for (; g < order.size(); ++g) {
            if (!members.contains(order[g])) continue;
            const int64_t K = members[order[g]].front()->cols;
            const uint64_t b = static_cast<uint64_t>(K * K) * sizeof(float) * 2;
            if (!acc.empty() && bytes + b > opts.hessian_budget_bytes) break;
            bytes += b;
            auto a = std::make_unique<HessianAccumulator>(K);
            observer.track(leader[order[g]], a.get());
            acc[order[g]] = std::move(a);
          }
          if (acc.empty()) break;
          q_chain->run(model, L, w, &observer, /*observe_only=*/true);
          for (auto& [group, a] : acc) {
            const std::vector<const LinearPlan*>& ms = members[group];
            if (a->count() == 0) {
              // No calibration token reached it (a routed expert never chosen): RTN, as
              // AutoRound leaves such an expert.
              for (const LinearPlan* p : ms) {
                const std::vector<float> f = weight_of.at(p->module)->to_f32();
                packed[p->module] =
                    pack_gptq(quantize_rtn(p->module, f.data(), p->rows, p->cols, opts.plan.spec));
                if (progress) progress->advance();
              }
              continue;
            }
            const std::vector<float> h = a->hessian();
            const GptqFactor factor = gptq_factor(group, h, a->cols(), opts.gptq);
            for (const LinearPlan* p : ms) {
              const std::vector<float> f = weight_of.at(p->module)->to_f32();
              const QuantizedLinear q = gptq_quantize(p->module, f.data(), p->rows, p->cols, factor,
                                                      opts.plan.spec, opts.gptq, nullptr, &pool);
              const QuantizedLinear r =
                  quantize_rtn(p->module, f.data(), p->rows, p->cols, opts.plan.spec);
              report.loss +=
                  gptq_proxy_loss(f.data(), q.dequantize().data(), p->rows, p->cols, h.data());
              report.loss_rtn +=
                  gptq_proxy_loss(f.data(), r.dequantize().data(), p->rows, p->cols, h.data());
              packed[p->module] = pack_gptq(q);
              if (progress) {
                progress->set_note(
                    fmt::format("loss {:.4g} (RTN {:.4g})", report.loss, report.loss_rtn));
                progress->advance();
              }
            }
          }
        }
        if (progress) progress->finish();
      } else {
        fp_chain->run(model, L, w, nullptr);
        LayerTuning tuning;
        std::unique_ptr<Progress> progress;
        if (opts.show_progress)
          progress = std::make_unique<Progress>(fmt::format("layer {}/{}", L + 1, N),
                                                opts.autoround.iters, "iters");
        std::vector<QuantizedLinear> tuned =
            autoround_layer(c, L, w, lp, q_chain->store(), fp_chain->store(), opts.plan.spec,
                            opts.autoround, pool, progress.get(), &tuning);
        if (progress) progress->finish();
        for (QuantizedLinear& q : tuned) packed[q.module] = pack_gptq(q);
        report.loss_rtn = tuning.full_rtn_loss;
        report.loss = tuning.full_best_loss;
        report.best_iter = tuning.best_iter;
      }
      if (calibrated) q_chain->run(model, L, substitute(w, packed), nullptr);
      write_layer(L, packed);
      source.release(L);
      report.seconds = seconds_since(t0);
      if (opts.show_progress)
        fmt::print(stderr, "layer {}/{}: {} quantized, {} kept{} ({:.1f} s)\n", L + 1, N,
                   report.quantized, report.kept,
                   opts.method == QuantMethod::kRtn
                       ? ""
                       : fmt::format(", loss {:.4g} (RTN {:.4g})", report.loss, report.loss_rtn),
                   report.seconds);
      result.layers.push_back(report);
    }
    writer.finish();
  }

  // config.json: the quantization_config, dtype float16 as auto-round writes it (the scales are
  // fp16; unquantized tensors keep their dtype in the files).
  cfg["quantization_config"] = qc;
  if (cfg.contains("dtype")) cfg["dtype"] = "float16";
  cfg["torch_dtype"] = "float16";
  write_file_atomic(dir.path() / "config.json", dump_hf_json(cfg));
  write_file_atomic(dir.path() / "quantization_config.json", dump_hf_json(qc));
  write_file_atomic(dir.path() / "quantize_report.json", report_json(result, qc).dump(1) + "\n");
  const fs::path card = in / "README.md";
  if (fs::is_regular_file(card))
    write_file_atomic(
        dir.path() / "README.md",
        card_with_note(read_file(card),
                       fmt::format("> **Quantized with `whittle quantize --method {}`:** {} "
                                   "Linear modules int{} (group {}, symmetric, GPTQ format), {} "
                                   "kept in 16 bit (`quantization_config` in config.json says "
                                   "which). The model card below is the source model's.\n\n",
                                   quant_method_name(opts.method), plan.quantized(),
                                   opts.plan.spec.bits, opts.plan.spec.group_size, plan.kept())));
  copy_side_files(in, dir.path(), [](const std::string& name) {
    return name == "quantization_config.json" || name == "README.md";
  });
  dir.commit();
  return result;
}

}  // namespace whittle
