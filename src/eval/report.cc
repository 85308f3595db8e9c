// Human tables for eval results; see report.h.
#include "eval/report.h"

#include <fmt/core.h>

#include <algorithm>

namespace whittle {
namespace {

using nlohmann::ordered_json;

std::string shown(const ordered_json& v) {
  return v.is_null() ? "none" : v.get<std::string>();
}

// Left-aligned first column as wide as its longest entry.
size_t name_width(const ordered_json& files, const char* key, size_t at_least) {
  size_t w = at_least;
  for (const auto& f : files) w = std::max(w, f[key].get<std::string>().size());
  return w;
}

std::string perplexity(const ordered_json& r) {
  std::string out =
      fmt::format("ppl: {} | ctx {} stride {} | doc-start {}\n", r["model"].get<std::string>(),
                  r["ctx"].get<int64_t>(), r["stride"].get<int64_t>(), shown(r["doc_start"]));
  const size_t w = name_width(r["files"], "file", 5);
  out += fmt::format("{:<{}}  {:>9}  {:>9}  {:>10}  {:>9}  {:>10}  {:>9}\n", "file", w, "tokens",
                     "scored", "bytes", "nll/tok", "ppl", "bits/byte");
  auto row = [&](const std::string& name, const ordered_json& x) {
    out += fmt::format("{:<{}}  {:>9}  {:>9}  {:>10}  {:>9.4f}  {:>10.3f}  {:>9.4f}\n", name, w,
                       x["tokens"].get<int64_t>(), x["scored_tokens"].get<int64_t>(),
                       x["bytes"].get<int64_t>(), x["nll_per_token"].get<double>(),
                       x["ppl"].get<double>(), x["bits_per_byte"].get<double>());
  };
  for (const auto& f : r["files"]) row(f["file"].get<std::string>(), f);
  if (r["files"].size() > 1) row("all", r["total"]);
  return out;
}

std::string answers(const ordered_json& r) {
  std::string out = fmt::format(
      "{}: {} | greedy, at most {} new tokens | answer after the first '####'\n",
      r["task"].get<std::string>(), r["model"].get<std::string>(), r["max_tokens"].get<int64_t>());
  const size_t w = name_width(r["files"], "file", 5);
  out += fmt::format("{:<{}}  {:>7}  {:>7}  {:>8}  {:>9}\n", "file", w, "items", "correct",
                     "accuracy", "no answer");
  auto row = [&](const std::string& name, int64_t items, int64_t correct, int64_t none) {
    out += fmt::format("{:<{}}  {:>7}  {:>7}  {:>7.1f}%  {:>9}\n", name, w, items, correct,
                       items ? 100.0 * correct / items : 0.0, none);
  };
  for (const auto& f : r["files"])
    row(f["file"].get<std::string>(), f["items"].get<int64_t>(), f["correct"].get<int64_t>(),
        f["no_answer"].get<int64_t>());
  if (r["files"].size() > 1)
    row("all", r["items"].get<int64_t>(), r["correct"].get<int64_t>(),
        r["no_answer"].get<int64_t>());
  return out;
}

std::string loops(const ordered_json& r) {
  const auto n = r["prompts"].get<int64_t>(), looping = r["looping"].get<int64_t>();
  std::string out = fmt::format(
      "loops: {} | {} prompts, temperature {:g}, top-p {:g}, seed {}, at most {} new tokens\n"
      "rule: the last max({}, {}*p) tokens repeat with some period p\n",
      r["model"].get<std::string>(), n, r["temperature"].get<double>(), r["top_p"].get<double>(),
      r["seed"].get<uint64_t>(), r["max_tokens"].get<int64_t>(),
      r["rule"]["min_tail"].get<int64_t>(), r["rule"]["min_repeats"].get<int64_t>());
  out += fmt::format("looping  {}/{} ({:.1f}%)\n", looping, n, n ? 100.0 * looping / n : 0.0);
  for (const auto& item : r["outputs"])
    if (item["loops"].get<bool>())
      out += fmt::format("  #{:<3} {}: period {}, last {} tokens repeat\n",
                         item["index"].get<int64_t>(), item["source"].get<std::string>(),
                         item["period"].get<int64_t>(), item["repeated_tail"].get<int64_t>());
  return out;
}

}  // namespace

std::string format_report(const ordered_json& r) {
  const std::string task = r["task"].get<std::string>();
  if (task == "ppl") return perplexity(r);
  if (task == "arith" || task == "gsm8k") return answers(r);
  if (task == "loops") return loops(r);
  return r.dump(2) + "\n";
}

}  // namespace whittle
