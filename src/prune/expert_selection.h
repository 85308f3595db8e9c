// Which routed experts a MoE layer keeps: the selection step of `whittle prune` (issue 9 point 3;
// specs reap.md §2.4 and §3.3, corrected by reap_vs_code.md). A pure function of the calibration
// statistics and the options; it reads no model and writes nothing.
//
// Rules:
// - Every MoE layer drops the same number n_drop = floor(E × ratio) of its E routed experts,
// computed
//   as (int64)(E × ratio) in double, as both Python implementations do (int(E * ratio)). There is
//   no cross-layer ranking. A ratio outside (0, 1), or one whose n_drop is 0, is refused
//   (llm-compressor also fails on n_drop == 0: a "pruned" checkpoint identical to its input is
//   never what was meant).
// - Scores (lowest dropped first): REAP = sum_gate_norm / count, 0 for a never-routed expert
// (reap.md
//   key fact 4; both implementations, reap_vs_code.md confirmation 1); frequency = count; EAN =
//   sum_norm. All three are >= 0 and 0 for a never-routed expert, so never-routed experts go first.
// - Tie-break, deterministic: score ascending, then count ascending, then expert index descending
//   (the order reap.md key fact 5 proposes). Count second means an expert never routed to is
//   dropped before a routed one of equal score (a REAP or EAN score of exactly 0 from zero outputs
//   or gates); index descending last means that among true ties the later expert goes and the
//   earlier survives.
// - Random: the experts are ranked by a Fisher–Yates shuffle of 0..E-1 drawn from std::mt19937_64
//   (whose output the standard fixes for a given seed) seeded with splitmix64(splitmix64(seed) +
//   layer_index); step i (from E-1 down to 1) swaps position i with position j, j uniform in [0, i]
//   by rejection: draw x, reject while x >= 2^64 - (2^64 mod (i+1)), then j = x mod (i+1). An
//   expert's random score is its position in the shuffled order (0 dropped first). Same seed and
//   layer, same set on every platform; each layer draws a different set.
// - Grouped routing (n_group > 1, reap.md §3.3 with reap_vs_code.md D6): E must be divisible by
//   n_group, and n_drop by n_group (refused otherwise, naming the nearest ratios that work, rather
//   than rounding n_drop / n_group as llm-compressor silently does); each contiguous group of
//   E / n_group experts drops n_drop / n_group by the rules above. Each group must keep at least 2
//   experts (the group-limited router scores a group by its two best experts: reap_vs_code.md §3
//   item 7), and the topk_group groups a token may use must still hold num_experts_per_tok experts:
//   topk_group × (E / n_group − n_drop / n_group) >= k. Without groups: E − n_drop >= k.
// - Statistics that are negative or not finite (NaN/Inf norms from the calibration forward) are
//   refused, naming the layer and expert: a ranking made from them would be arbitrary (torch.topk
//   ranks NaN as largest, so the reference silently keeps such experts: reap_vs_code.md §3 item 6).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace whittle {

// Accumulated over the calibration tokens routed to one expert of one MoE layer; `gate` is the
// weight actually multiplied into the expert's output (true routing), the norm is ‖expert output‖₂
// before that multiply.
struct ExpertStats {
  double count = 0, sum_gate_norm = 0, sum_norm = 0, sum_gate = 0, max_norm = 0;
};

enum class PruneCriterion { kReap, kFrequency, kEan, kRandom };

// "reap", "frequency", "ean", "random".
std::string_view criterion_name(PruneCriterion criterion);
// The inverse of criterion_name; throws Error naming the accepted names for anything else.
PruneCriterion parse_criterion(std::string_view name);

struct SelectionOptions {
  PruneCriterion criterion = PruneCriterion::kReap;
  double ratio = 0;               // fraction of each layer's routed experts to drop, in (0, 1)
  uint64_t seed = 0;              // kRandom only
  int64_t n_group = 1;            // config.json n_group: contiguous expert groups of the router
  int64_t topk_group = 1;         // config.json topk_group: groups a token may be routed into
  int64_t experts_per_token = 0;  // config.json num_experts_per_tok (k)
};

struct LayerSelection {
  std::vector<int32_t> kept;     // ascending: the survivors in their original order
  std::vector<int32_t> dropped;  // ascending
  std::vector<double> score;     // per expert, the value ranked (kRandom: shuffled position)
  // Experts whose score equals the score at the cut when the cut falls inside a run of equal
  // scores (summed over groups; 0 when no tie was decided by the tie-break).
  int64_t tied_at_cut = 0;
};

// n_drop for a layer of `n_experts` routed experts, after checking every rule that does not depend
// on the statistics (ratio, groups, reachability). Call it before calibrating, to refuse an
// impossible ratio before hours of forward passes. Throws Error with a message naming the ratio,
// the experts and the groups.
int64_t experts_to_drop(int64_t n_experts, const SelectionOptions& options);

// The score of one expert under kReap, kFrequency or kEan (see the rules above); kRandom has no
// per-expert score (it depends on the seed and the layer) and is an internal error here.
double expert_score(const ExpertStats& stats, PruneCriterion criterion);

// The selection for one MoE layer (`layer_index` is the decoder layer: it seeds kRandom and names
// the layer in errors). Throws Error for impossible options or bad statistics.
LayerSelection select_experts(std::span<const ExpertStats> layer, const SelectionOptions& options,
                              int64_t layer_index);

}  // namespace whittle
