// `whittle quantize MODEL OUT [--method autoround|gptq|rtn] [--bits 4] [--group-size 128]
// [--iters 200] [--lr auto] [--samples 128] [--seqlen 2048] [--batch 8] [--seed 42]
// [--keep REGEX...] [--calib FILE...]`: int4/int8 weight-only quantization to a GPTQ-format
// checkpoint that vLLM, SGLang, transformers (gptqmodel) and whittle load (quant/quantize_model.h).
#include <fmt/core.h>

#include <filesystem>

#include "cli/calibration_cli.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "io/model_config.h"
#include "quant/quantize_model.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace whittle::cli {

namespace fs = std::filesystem;

Command add_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "quantize",
      "Quantize the Linear layers to int4/int8 (AutoRound, GPTQ or RTN) and write a GPTQ "
      "checkpoint");
  struct Options {
    std::string model, out, method = "autoround", lr = "auto", save_calibration;
    int bits = 4;
    int64_t group_size = 128, iters = 200, samples = 128, seqlen = 0, batch = 8, threads = 0;
    uint64_t seed = 42;
    std::vector<std::string> keep, calib;
    bool force = false, no_vllm_rules = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (16-bit or FP8)")->required();
  cmd->add_option("OUT", o->out, "Output folder for the quantized checkpoint")->required();
  cmd->add_option("--method", o->method,
                  "autoround (tuned rounding, the recipe), gptq, or rtn (round to nearest, no "
                  "data)")
      ->check(CLI::IsMember({"autoround", "gptq", "rtn"}));
  cmd->add_option("--bits", o->bits, "Bits per weight: 4 or 8");
  cmd->add_option("--group-size", o->group_size,
                  "Inputs per scale: 32, 64, 128, or -1 for one scale per output row");
  cmd->add_option("--iters", o->iters, "AutoRound: SignSGD steps per decoder layer")
      ->check(kPositiveInteger);
  cmd->add_option("--lr", o->lr, "AutoRound: learning rate, or auto (1 / iters)");
  cmd->add_option("--samples", o->samples, "Calibration samples")->check(kPositiveInteger);
  cmd->add_option("--seqlen", o->seqlen,
                  "Tokens per calibration sample (default: 2048, or the model's context if "
                  "shorter)")
      ->check(kPositiveInteger);
  cmd->add_option("--batch", o->batch, "Samples per AutoRound step and per forward batch")
      ->check(kPositiveInteger);
  cmd->add_option("--seed", o->seed, "Seed of the sample order and of AutoRound's mini-batches")
      ->check(kSeed);
  cmd->add_option("--keep", o->keep,
                  "Also keep modules matching this regex in 16 bit (Python re.match on the module "
                  "name, as the loaders apply quantization_config.dynamic), e.g. "
                  "'.*shared_experts.*'");
  cmd->add_option("--calib", o->calib,
                  "Calibration files (gptq, autoround): plain text or .jsonl; default: "
                  "MODEL/calibration.txt");
  cmd->add_option("--save-calibration", o->save_calibration,
                  "Also write the packed calibration token ids to this .npy file");
  cmd->add_flag("--no-vllm-rules", o->no_vllm_rules,
                "Also quantize shapes vLLM's Marlin kernels refuse (outputs % 64, inputs % 128) "
                "and fused shards one by one; transformers and whittle load the result, vLLM "
                "may not");
  cmd->add_flag("--force", o->force, "Replace OUT if it exists");
  add_threads_option(cmd, o->threads);
  return [=] {
    require_model_folder(o->model);
    const ModelConfig config = ModelConfig::load(o->model);
    QuantizeOptions q;
    q.method = parse_quant_method(o->method);
    q.plan.spec = {o->bits, o->group_size};
    q.plan.keep = o->keep;
    q.plan.vllm_rules = !o->no_vllm_rules;
    q.batch = o->batch;
    q.overwrite = o->force;
    q.autoround.iters = o->iters;
    q.autoround.batch = o->batch;
    q.autoround.seed = o->seed;
    if (o->lr != "auto") {
      try {
        size_t used = 0;
        q.autoround.lr = std::stod(o->lr, &used);
        if (used != o->lr.size() || !(q.autoround.lr > 0)) throw std::invalid_argument("");
      } catch (const std::exception&) {
        fail("--lr: '{}' is not a positive number or auto", o->lr);
      }
    }
    if (fs::exists(fs::symlink_status(o->out)) && !o->force)
      fail("{}: already exists; pass --force to replace it", o->out);
    {
      // A destination that cannot be written is found now, not after the calibration.
      AtomicDir probe(o->out, o->force);
    }
    // RTN uses no calibration; it still writes the ids when asked (for outside tools to score).
    if (q.method != QuantMethod::kRtn || !o->save_calibration.empty()) {
      const LoadedCalibration calib = load_cli_calibration(
          {o->model, o->calib, o->samples, o->seqlen, o->seed, o->save_calibration},
          config.max_position_embeddings);
      if (q.method != QuantMethod::kRtn) {
        q.samples = calib.set.samples;
        q.calibration = calib.record;
      }
    }
    ThreadPool pool(checked_thread_count(o->threads));
    const QuantizeResult r = quantize_checkpoint(o->model, o->out, q, pool);
    fmt::print(stderr,
               "wrote {}: {} Linear modules quantized ({}, int{} g{}), {} kept, {} tensors\n",
               o->out, r.plan.quantized(), o->method, o->bits, o->group_size, r.plan.kept(),
               r.tensors_written);
    return 0;
  };
}

}  // namespace whittle::cli
