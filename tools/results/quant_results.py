#!/usr/bin/env python3
"""Tables of the int4 quantization results on the bundled model (issue 10).

    .venv/bin/python tools/results/quant_results.py [--results /work/results_q]

Reads what scripts/quant_results.sh wrote: RESULTS/<run>/{ppl,arith,loops08,loops0}.json (`whittle eval --json`,
parsed as tools/results/reap_results.py parses them), RESULTS/models/<run>/quantize_report.json (per-layer loss
and seconds) and, for auto-round's own export, RESULTS/autoround_ref/autoround_blocks.json (bench/
autoround_reference.py). Prints markdown: the quality table (perplexity per held-out file and geometric mean,
arithmetic accuracy ± SE, loops), paired arithmetic differences against bf16, the per-layer losses (GPTQ: its
proxy objective against RTN's on the same Hessians; AutoRound: the layer output MSE with RTN's and the tuned
codes, whittle beside auto-round), and the seconds each quantization took. Missing runs show as "—".
"""

import argparse
import json
from pathlib import Path

from reap_results import HEADER, load_run, paired, row

RUNS = [("bf16", "bf16 (unquantized)"), ("rtn-g128", "RTN W4G128"), ("gptq-g128", "GPTQ W4G128"),
        ("autoround-g128", "AutoRound W4G128 (whittle)"), ("autoround_ref-g128", "AutoRound W4G128 (auto-round 0.16.1)"),
        ("reap25", "REAP 25 % (bf16)"), ("reap25-autoround-g128", "REAP 25 % + AutoRound W4G128 (the recipe)"),
        ("rtn-g-1", "RTN W4 per-row"), ("gptq-g-1", "GPTQ W4 per-row"), ("autoround-g-1", "AutoRound W4 per-row")]


def report(results, run):
    p = results / "models" / run / "quantize_report.json"
    return json.loads(p.read_text()) if p.is_file() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="/work/results_q", type=Path)
    args = ap.parse_args()
    res = args.results
    runs = {name: load_run(res, name) for name, _ in RUNS}

    print(HEADER)
    for name, label in RUNS:
        print(row(label, runs[name]))

    print("\nPaired arithmetic difference against bf16 (same 400 problems; points, ± SE; better / worse):\n")
    base = runs["bf16"]
    for name, label in RUNS[1:]:
        r = runs[name]
        if "acc_items" in r and "acc_items" in base:
            m, se, up, down = paired(r, base)
            print(f"- {label}: {100 * m:+.1f} ± {100 * se:.1f} ({up} / {down})")

    print("\nPer-layer loss (GPTQ: tr((W−Q)H(W−Q)ᵀ) summed over the layer's Linears, GPTQ / RTN on the same H;"
          " AutoRound: the layer output's MSE over the 128 samples, tuned / RTN codes, both on the quantized "
          "chain's inputs):\n")
    ref = res / "autoround_ref" / "autoround_blocks.json"
    ref_blocks = json.loads(ref.read_text()).get("blocks", []) if ref.is_file() else []
    for name in ["gptq-g128", "autoround-g128", "reap25-autoround-g128", "gptq-g-1", "autoround-g-1"]:
        rep = report(res, name)
        if not rep:
            continue
        cells = [f"L{l['layer']}: {l['loss']:.4g} / {l['loss_rtn']:.4g} ({l['loss'] / l['loss_rtn']:.2f}, "
                 f"{l['seconds']:.0f} s)" for l in rep["layers"] if l.get("loss_rtn")]
        total = sum(l["seconds"] for l in rep["layers"])
        print(f"- {name}: " + "; ".join(cells) + f"; total {total:.0f} s")
    if ref_blocks:
        print("- auto-round 0.16.1 (its own log, loss at iteration 0 → best, on its mini-batches): " + "; ".join(
            f"L{i}: {b.get('loss_iter0', float('nan')):.4g} → {b.get('loss_best', float('nan')):.4g} "
            f"({b.get('seconds', float('nan')):.0f} s)" for i, b in enumerate(ref_blocks)))


if __name__ == "__main__":
    main()
