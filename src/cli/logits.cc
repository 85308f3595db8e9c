// `whittle logits MODEL --ids 1,2,3 --out FILE.npy`: the logits of every position as a float32
// [T, vocab] .npy array, so anyone can compare whittle with another implementation.
#include <fmt/core.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "io/npy.h"
#include "model/glm_moe_dsa.h"
#include "util/error.h"

namespace whittle::cli {

Command add_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits",
                                 "Write the logits of every position of a token sequence as .npy");
  struct Options {
    std::string model, out, mode = "prefill";
    std::string ids;
    int64_t threads = 0;
    bool reference = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "Hugging Face model folder")->required();
  cmd->add_option("--ids", o->ids, "Token ids, comma-separated (e.g. 1,2,3)")->required();
  cmd->add_option("--out", o->out, "Output .npy file (float32, [T, vocab])")->required();
  cmd->add_option("--mode", o->mode,
                  "prefill: one pass over all ids; decode: one token at a time from the cache")
      ->check(CLI::IsMember({"prefill", "decode"}));
  add_threads_option(cmd, o->threads);
  add_reference_option(cmd, o->reference);
  return [=] {
    require_model_folder(o->model);
    const std::vector<int64_t> given = parse_id_list(o->ids, "--ids");
    ThreadPool pool(checked_thread_count(o->threads));
    GlmMoeDsa model =
        GlmMoeDsa::load(o->model, pool, o->reference ? Kernels::kReference : Kernels::kFast);
    const ModelConfig& config = model.config();
    if (static_cast<int64_t>(given.size()) > config.max_position_embeddings)
      fail("--ids: {} tokens exceed the model's context of {} (max_position_embeddings)",
           given.size(), config.max_position_embeddings);
    std::vector<int32_t> ids;
    for (int64_t id : given) {
      if (id < 0 || id >= config.vocab_size)
        fail("--ids: token id {} is outside the vocabulary [0, {})", id, config.vocab_size);
      ids.push_back(static_cast<int32_t>(id));
    }
    const int64_t T = static_cast<int64_t>(ids.size()), V = config.vocab_size;
    KvCache cache(config);
    std::vector<float> logits;
    if (o->mode == "prefill") {
      logits = model.prefill(ids, cache);
    } else {
      logits.reserve(static_cast<size_t>(T * V));
      for (int32_t id : ids) {
        std::vector<float> row = model.decode(id, cache);
        logits.insert(logits.end(), row.begin(), row.end());
      }
    }
    const int64_t shape[] = {T, V};
    write_npy(o->out, logits, shape);
    fmt::print(stderr, "wrote {} [{}, {}] float32\n", o->out, T, V);
    return 0;
  };
}

}  // namespace whittle::cli
