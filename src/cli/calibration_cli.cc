#include "cli/calibration_cli.h"

#include <fmt/core.h>

#include <memory>

#include "io/npy.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"

namespace whittle::cli {

namespace fs = std::filesystem;

namespace {
// The model's chat template when whittle renders it, for calibration lines holding `messages`;
// without one such lines are refused by the calibration reader, naming the line.
std::unique_ptr<Glm5ChatTemplate> chat_template_or_null(const fs::path& model) {
  try {
    return std::make_unique<Glm5ChatTemplate>(Glm5ChatTemplate::load(model));
  } catch (const Error&) {
    return nullptr;
  }
}
}  // namespace

LoadedCalibration load_cli_calibration(const CalibrationRequest& r, int64_t context) {
  std::vector<fs::path> files(r.files.begin(), r.files.end());
  if (files.empty()) {
    const fs::path fallback = r.model / "calibration.txt";
    if (!fs::exists(fallback))
      fail("--calib: no calibration files given and {} does not exist; pass --calib FILE",
           fallback.string());
    files.push_back(fallback);
  }
  LoadedCalibration out;
  out.seqlen = r.seqlen > 0 ? r.seqlen : std::min<int64_t>(2048, context);
  if (out.seqlen > context)
    fail("--seqlen: {} tokens exceed the model's context of {} (max_position_embeddings)",
         out.seqlen, context);
  const BpeTokenizer tokenizer = BpeTokenizer::load(r.model / "tokenizer.json");
  const std::unique_ptr<Glm5ChatTemplate> chat = chat_template_or_null(r.model);
  out.set = load_calibration(files, tokenizer, chat.get(), {r.samples, out.seqlen, r.seed});
  if (!out.set.warning.empty()) fmt::print(stderr, "whittle: warning: {}\n", out.set.warning);
  const int64_t samples = static_cast<int64_t>(out.set.samples.size());
  if (!r.save_ids.empty()) {
    std::vector<int32_t> ids;
    for (const std::vector<int32_t>& sample : out.set.samples)
      ids.insert(ids.end(), sample.begin(), sample.end());
    write_npy(r.save_ids, ids, std::vector<int64_t>{samples, out.seqlen});
  }
  nlohmann::ordered_json names = nlohmann::ordered_json::array();
  for (const fs::path& f : files) names.push_back(f.string());
  out.record = {{"files", names},
                {"samples", samples},
                {"seqlen", out.seqlen},
                {"seed", r.seed},
                {"documents", out.set.documents},
                {"documents_used", out.set.documents_used},
                {"fingerprint", fmt::format("{:016x}", out.set.fingerprint)}};
  return out;
}

}  // namespace whittle::cli
