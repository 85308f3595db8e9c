// `whittle prune MODEL OUT --ratio R [--method reap|frequency|ean|random] [--calib FILE...]`:
// REAP expert pruning. Calibration samples run through the unpruned model layer-major (one
// layer's weights resident), the REAP statistics of every routed expert are gathered with the
// model's true routing, every MoE layer drops the same floor(E x R) lowest-scoring experts, and the
// pruned checkpoint is written tensor by tensor with reap_report.json beside it.
#include <fmt/core.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/checkpoint_io.h"
#include "io/npy.h"

#include "cli/calibration_cli.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "model/glm_moe_dsa.h"
#include "prune/calibration.h"
#include "prune/checkpoint_surgery.h"
#include "prune/expert_selection.h"
#include "prune/reap_observer.h"
#include "prune/reap_report.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/progress.h"

namespace whittle::cli {

namespace fs = std::filesystem;

Command add_prune(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "prune",
      "Remove a share of every MoE layer's routed experts (REAP) and write the checkpoint");
  struct Options {
    std::string model, out, method = "reap";
    double ratio = 0;
    std::vector<std::string> calib;
    std::string stats_from, save_calibration;
    int64_t samples = 128, seqlen = 0, batch = 8, threads = 0;
    uint64_t seed = 42;
    bool force = false, drop_mtp = false, sequential = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("OUT", o->out, "Output folder for the pruned checkpoint")->required();
  cmd->add_option("--ratio", o->ratio,
                  "Share of each MoE layer's routed experts to remove, in (0, 1)")
      ->required()
      ->check(kProbability);
  cmd->add_option("--method", o->method, "Expert score: reap, frequency, ean or random")
      ->check(CLI::IsMember({"reap", "frequency", "ean", "random"}));
  cmd->add_option("--calib", o->calib,
                  "Calibration files: plain text (documents separated by <|endoftext|>) or .jsonl "
                  "(\"text\" or \"messages\"); default: MODEL/calibration.txt");
  cmd->add_option("--samples", o->samples, "Calibration samples")->check(kPositiveInteger);
  cmd->add_option("--seqlen", o->seqlen,
                  "Tokens per calibration sample (default: 2048, or the model's context if "
                  "shorter)")
      ->check(kPositiveInteger);
  cmd->add_option("--batch", o->batch, "Samples per forward batch")->check(kPositiveInteger);
  cmd->add_option("--seed", o->seed, "Seed of the sample order and of --method random")
      ->check(kSeed);
  cmd->add_flag("--sequential", o->sequential,
                "Prune as you go (llm-compressor's sequential pipeline): observe each MoE layer "
                "on the outputs of the layers before it already pruned; default: every layer "
                "observed on the unpruned model");
  cmd->add_option("--stats", o->stats_from,
                  "Reuse the statistics of a previous run's reap_report.json instead of "
                  "calibrating (another ratio or method cut from the same calibration)");
  cmd->add_option("--save-calibration", o->save_calibration,
                  "Also write the packed calibration token ids to this .npy file (int32 "
                  "[samples, seqlen]), for outside tools to score the same tokens");
  cmd->add_flag("--force", o->force, "Replace OUT if it exists");
  cmd->add_flag("--drop-mtp", o->drop_mtp,
                "Remove the MTP layers (num_nextn_predict_layers 0) instead of pruning them");
  add_threads_option(cmd, o->threads);
  return [=] {
    require_model_folder(o->model);
    const ModelConfig config = ModelConfig::load(o->model);
    int64_t moe_layers = 0;
    for (int64_t L = 0; L < config.num_hidden_layers; ++L) moe_layers += config.layer_is_moe[L];
    if (moe_layers == 0) fail("{}: the model has no MoE layers to prune", o->model);
    SelectionOptions selection;
    selection.criterion = parse_criterion(o->method);
    selection.ratio = o->ratio;
    selection.seed = o->seed;
    selection.n_group = config.n_group;
    selection.topk_group = config.topk_group;
    selection.experts_per_token = config.num_experts_per_tok;
    const bool random = selection.criterion == PruneCriterion::kRandom;
    // Refused now rather than after hours of calibration.
    const int64_t drop = experts_to_drop(config.n_routed_experts, selection);
    if (fs::exists(fs::symlink_status(o->out)) && !o->force)
      fail("{}: already exists; pass --force to replace it", o->out);
    if (!o->stats_from.empty() && (o->sequential || !o->calib.empty() || random))
      fail("--stats: reuses a previous calibration; it cannot be combined with {}",
           o->sequential ? "--sequential"
           : random      ? "--method random"
                         : "--calib");
    if (o->sequential && random)
      fail(
          "--sequential: --method random does not calibrate, so there is nothing to prune as "
          "you go");
    {
      // A destination that cannot be written is found now, not after the calibration: the
      // temporary folder the checkpoint will be written to is created and removed again.
      AtomicDir probe(o->out, o->force);
    }

    ThreadPool pool(checked_thread_count(o->threads));
    std::vector<std::vector<ExpertStats>> stats(static_cast<size_t>(config.num_hidden_layers));
    nlohmann::ordered_json calibration = nullptr;
    if (!o->stats_from.empty()) {
      stats = read_report_stats(o->stats_from, config);
      calibration = {{"statistics_from", o->stats_from}};
    } else if (!random) {
      const LoadedCalibration calib = load_cli_calibration(
          {o->model, o->calib, o->samples, o->seqlen, o->seed, o->save_calibration},
          config.max_position_embeddings);
      const CalibrationSet& set = calib.set;
      const int64_t samples = static_cast<int64_t>(set.samples.size()), seqlen = calib.seqlen;
      GlmMoeDsa model = GlmMoeDsa::load(o->model, pool);
      Progress progress("calibration", samples * seqlen * config.num_hidden_layers, "token-layers");
      KeepExperts prune_as_you_go = nullptr;
      if (o->sequential)
        prune_as_you_go = [&](int64_t layer, const std::vector<ExpertStats>& s) {
          return select_experts(s, selection, layer).kept;
        };
      stats = collect_reap_stats(model, set.samples, o->batch, &progress, prune_as_you_go);
      progress.finish();
      calibration = calib.record;
      calibration["routing"] =
          "true routing: biased selection, applied (renormalised, scaled) weights";
    }

    ExpertKeep keep;
    keep.kept_per_layer.resize(static_cast<size_t>(config.num_hidden_layers));
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (int64_t L = 0; L < config.num_hidden_layers; ++L) {
      if (!config.layer_is_moe[L]) continue;
      if (stats[L].empty()) stats[L].resize(static_cast<size_t>(config.n_routed_experts));
      const LayerSelection s = select_experts(stats[L], selection, L);
      keep.kept_per_layer[L] = s.kept;
      layers.push_back(layer_report(L, stats[L], s));
    }
    const nlohmann::ordered_json report = {
        {"method", o->method},
        {"ratio", o->ratio},
        {"experts_before", config.n_routed_experts},
        {"experts_after", config.n_routed_experts - drop},
        {"dropped_per_layer", drop},
        {"tie_break", "score ascending, then count ascending, then expert index descending"},
        {"observation", random          ? "none"
                        : o->sequential ? "sequential"
                                        : "unpruned"},
        {"calibration", calibration},
        {"layers", layers}};
    PruneWriteOptions write;
    write.overwrite = o->force;
    write.drop_mtp = o->drop_mtp;
    write.extra_files["reap_report.json"] = report.dump(1) + "\n";
    // The source's model card describes the unpruned model: it is kept, under a note saying what
    // this checkpoint is.
    const fs::path card = fs::path(o->model) / "README.md";
    if (fs::is_regular_file(card))
      write.extra_files["README.md"] = card_with_note(
          read_file(card),
          fmt::format("> **Pruned with `whittle prune`:** {} of the {} routed experts of each of "
                      "the {} MoE layers kept ({}, ratio {}, {}; every expert's "
                      "statistics and the kept and dropped sets are in `reap_report.json`). The "
                      "model card below is the source model's, unchanged: it describes the model "
                      "before pruning.\n\n",
                      config.n_routed_experts - drop, config.n_routed_experts, moe_layers,
                      o->method, o->ratio,
                      random          ? "no calibration"
                      : o->sequential ? "statistics gathered while pruning layer by layer"
                                      : "statistics from the unpruned model"));
    const PruneWriteResult r = write_pruned_checkpoint(o->model, o->out, config, keep, write);
    fmt::print(stderr,
               "wrote {}: {} of {} routed experts kept in each of {} MoE layers ({}), {} tensors\n",
               o->out, config.n_routed_experts - drop, config.n_routed_experts, moe_layers,
               o->method, r.tensors_written);
    return 0;
  };
}

}  // namespace whittle::cli
