#include "prune/expert_selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "util/error.h"

namespace whittle {
namespace {

// Vigna's splitmix64 finaliser: spreads (seed, layer) over the engine's 64-bit seed.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, n) for n >= 1, by rejection (no modulo bias): accept x < 2^64 - (2^64 mod n).
uint64_t uniform_below(std::mt19937_64& engine, uint64_t n) {
  const uint64_t rem = (std::numeric_limits<uint64_t>::max() % n + 1) % n;  // 2^64 mod n
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - rem;        // accept x <= limit
  uint64_t x = engine();
  while (x > limit) x = engine();
  return x % n;
}

// position[e] = where expert e lands in a seeded Fisher–Yates shuffle of 0..E-1.
std::vector<double> random_positions(int64_t n_experts, uint64_t seed, int64_t layer_index) {
  std::mt19937_64 engine(splitmix64(splitmix64(seed) + static_cast<uint64_t>(layer_index)));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = n_experts - 1; i >= 1; --i) {
    const uint64_t j = uniform_below(engine, static_cast<uint64_t>(i) + 1);
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  std::vector<double> position(static_cast<size_t>(n_experts));
  for (int64_t p = 0; p < n_experts; ++p) position[order[p]] = static_cast<double>(p);
  return position;
}

// Ratios that drop exactly `drop` of `n_experts` experts, for error messages.
std::string ratio_for(int64_t drop, int64_t n_experts) {
  return fmt::format("{} (ratio {:.6g})", drop,
                     static_cast<double>(drop) / static_cast<double>(n_experts));
}

void check_stats(const ExpertStats& s, int64_t layer_index, int64_t expert) {
  const std::pair<const char*, double> fields[] = {{"count", s.count},
                                                   {"sum_gate_norm", s.sum_gate_norm},
                                                   {"sum_norm", s.sum_norm},
                                                   {"sum_gate", s.sum_gate},
                                                   {"max_norm", s.max_norm}};
  for (const auto& [name, value] : fields)
    if (!std::isfinite(value) || value < 0)
      fail(
          "layer {} expert {}: calibration statistic {} is {}; statistics must be finite and "
          "non-negative (a NaN or Inf expert output norm means the calibration forward overflowed "
          "or the weights hold NaN/Inf; check the checkpoint and the calibration data)",
          layer_index, expert, name, value);
}

}  // namespace

std::string_view criterion_name(PruneCriterion criterion) {
  switch (criterion) {
    case PruneCriterion::kReap:
      return "reap";
    case PruneCriterion::kFrequency:
      return "frequency";
    case PruneCriterion::kEan:
      return "ean";
    case PruneCriterion::kRandom:
      return "random";
  }
  fail("internal: unknown pruning criterion {}", static_cast<int>(criterion));
}

PruneCriterion parse_criterion(std::string_view name) {
  for (PruneCriterion c : {PruneCriterion::kReap, PruneCriterion::kFrequency, PruneCriterion::kEan,
                           PruneCriterion::kRandom})
    if (name == criterion_name(c)) return c;
  fail("unknown pruning method '{}': expected one of reap, frequency, ean, random", name);
}

int64_t experts_to_drop(int64_t E, const SelectionOptions& o) {
  const double ratio = o.ratio;
  if (!(ratio > 0.0 && ratio < 1.0))
    fail(
        "pruning ratio {} is out of range: it is the fraction of each MoE layer's routed experts "
        "to drop and must be greater than 0 and less than 1 (e.g. 0.25 drops 64 of 256)",
        ratio);
  if (E < 1) fail("internal: selecting among {} routed experts", E);
  const int64_t k = o.experts_per_token;
  if (k < 1 || k > E)
    fail("num_experts_per_tok = {} must be between 1 and the {} routed experts", k, E);
  if (o.n_group < 1 || E % o.n_group != 0)
    fail("n_group = {} must be at least 1 and divide the {} routed experts into equal groups",
         o.n_group, E);
  if (o.topk_group < 1 || o.topk_group > o.n_group)
    fail("topk_group = {} must be between 1 and n_group = {}", o.topk_group, o.n_group);

  // int(E * ratio) in double, as the reference and llm-compressor compute it.
  const int64_t drop = static_cast<int64_t>(static_cast<double>(E) * ratio);
  if (drop == 0)
    fail(
        "pruning ratio {} drops floor({} × {}) = 0 of the {} routed experts per layer: nothing "
        "would be pruned; use a ratio of at least 1/{} = {:.6g} to drop one expert",
        ratio, E, ratio, E, E, 1.0 / static_cast<double>(E));
  if (E - drop < k)
    fail(
        "pruning ratio {} keeps {} of the {} routed experts per layer, fewer than the "
        "num_experts_per_tok = {} every token is routed to; {}",
        ratio, E - drop, E, k,
        E > k ? "drop at most " + ratio_for(E - k, E) : std::string("no expert can be dropped"));

  if (o.n_group > 1) {
    const int64_t group = E / o.n_group;
    if (drop % o.n_group != 0) {
      const int64_t below = drop / o.n_group * o.n_group, above = below + o.n_group;
      std::string options;
      if (below > 0) options = ratio_for(below, E);
      if (above < E) options += (options.empty() ? "" : " or ") + ratio_for(above, E);
      fail(
          "pruning ratio {} drops {} of the {} routed experts per layer, which cannot be split "
          "equally over n_group = {} expert groups of {}; choose a ratio that drops a multiple of "
          "{}: {}",
          ratio, drop, E, o.n_group, group, o.n_group, options);
    }
    const int64_t keep_per_group = group - drop / o.n_group;
    // The group-limited router scores each group by the sum of its two best experts.
    const int64_t min_keep = std::max<int64_t>(2, (k + o.topk_group - 1) / o.topk_group);
    if (keep_per_group < min_keep) {
      const int64_t max_drop = (group - min_keep) * o.n_group;
      fail(
          "pruning ratio {} keeps {} of the {} experts in each of the n_group = {} groups; {}, so "
          "each group must keep at least {}; drop at most {} experts per layer{}",
          ratio, keep_per_group, group, o.n_group,
          keep_per_group < 2
              ? std::string("the router scores a group by its two best experts")
              : fmt::format("a token is routed into topk_group = {} groups, which would hold {} "
                            "experts, fewer than num_experts_per_tok = {}",
                            o.topk_group, o.topk_group * keep_per_group, k),
          min_keep, max_drop, max_drop > 0 ? ": " + ratio_for(max_drop, E) : std::string());
    }
  }
  return drop;
}

double expert_score(const ExpertStats& s, PruneCriterion criterion) {
  switch (criterion) {
    case PruneCriterion::kReap:
      // The conditional mean over routed tokens; a never-routed expert scores 0 (reap.md key fact
      // 4).
      return s.count > 0 ? s.sum_gate_norm / s.count : 0.0;
    case PruneCriterion::kFrequency:
      return s.count;
    case PruneCriterion::kEan:
      return s.sum_norm;
    case PruneCriterion::kRandom:
      break;
  }
  fail("internal: the {} criterion has no per-expert score; use select_experts",
       criterion_name(criterion));
}

LayerSelection select_experts(std::span<const ExpertStats> layer, const SelectionOptions& o,
                              int64_t layer_index) {
  const int64_t E = static_cast<int64_t>(layer.size());
  if (E < 1) fail("layer {}: no routed experts to select from", layer_index);
  if (E > std::numeric_limits<int32_t>::max())
    fail("layer {}: {} routed experts is more than expert ids can number", layer_index, E);
  for (int64_t e = 0; e < E; ++e) check_stats(layer[e], layer_index, e);
  const int64_t drop = experts_to_drop(E, o);

  LayerSelection sel;
  if (o.criterion == PruneCriterion::kRandom) {
    sel.score = random_positions(E, o.seed, layer_index);
  } else {
    sel.score.resize(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) sel.score[e] = expert_score(layer[e], o.criterion);
  }

  // Drop order: score ascending, then count ascending, then index descending (see the header).
  auto drops_before = [&](int32_t a, int32_t b) {
    if (sel.score[a] != sel.score[b]) return sel.score[a] < sel.score[b];
    if (layer[a].count != layer[b].count) return layer[a].count < layer[b].count;
    return a > b;
  };
  const int64_t group = E / o.n_group, drop_per_group = drop / o.n_group;
  std::vector<bool> is_dropped(static_cast<size_t>(E), false);
  std::vector<int32_t> order(static_cast<size_t>(group));
  for (int64_t g = 0; g < o.n_group; ++g) {
    std::iota(order.begin(), order.end(), static_cast<int32_t>(g * group));
    std::sort(order.begin(), order.end(), drops_before);
    for (int64_t i = 0; i < drop_per_group; ++i) is_dropped[order[i]] = true;
    const double cut = sel.score[order[drop_per_group - 1]];
    if (cut == sel.score[order[drop_per_group]])
      sel.tied_at_cut +=
          std::count_if(order.begin(), order.end(), [&](int32_t e) { return sel.score[e] == cut; });
  }
  for (int32_t e = 0; e < E; ++e) (is_dropped[e] ? sel.dropped : sel.kept).push_back(e);
  return sel;
}

}  // namespace whittle
