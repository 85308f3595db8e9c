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
import re
from pathlib import Path

import numpy as np

from reap_results import HEADER, load_run, paired, row

RUNS = [("bf16", "bf16 (unquantized)"), ("rtn-g128", "RTN W4G128"), ("gptq-g128", "GPTQ W4G128"),
        ("autoround-g128", "AutoRound W4G128 (whittle)"), ("autoround_ref-g128", "AutoRound W4G128 (auto-round 0.16.1)"),
        ("reap25", "REAP 25 % (bf16)"), ("reap25-autoround-g128", "REAP 25 % + AutoRound W4G128 (the recipe)"),
        ("rtn-g-1", "RTN W4 per-row"), ("gptq-g-1", "GPTQ W4 per-row"), ("autoround-g-1", "AutoRound W4 per-row"),
        ("autoround-g128-seed1", "AutoRound W4G128 (whittle), --seed 1"),
        ("autoround-g128-seed2", "AutoRound W4G128 (whittle), --seed 2")]


def report(results, run):
    p = results / "models" / run / "quantize_report.json"
    return json.loads(p.read_text()) if p.is_file() else None


def codes(model_dir):
    """{module: int4 codes [N, K] as uint8} of a GPTQ v1 checkpoint (qweight packs 8 codes per int32 along K)."""
    from safetensors import safe_open
    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), "np") as s:
            for k in s.keys():
                if k.endswith(".qweight"):
                    q = s.get_tensor(k).view(np.uint32)  # [K/8, N]
                    shifts = (4 * np.arange(8, dtype=np.uint32))[None, :, None]
                    c = (q[:, None, :] >> shifts) & 0xF  # [K/8, 8, N]
                    out[k[: -len(".qweight")]] = c.reshape(-1, q.shape[1]).T.astype(np.uint8)
    return out


def code_agreement(a, b):
    """Share of int4 codes that differ between two checkpoints, over the modules both quantize, per layer and in all."""
    per_layer, total = {}, [0, 0]
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape:
            continue
        layer = int(re.search(r"layers\.(\d+)\.", name).group(1))
        d, n = int((a[name] != b[name]).sum()), a[name].size
        cell = per_layer.setdefault(layer, [0, 0])
        cell[0] += d
        cell[1] += n
        total[0] += d
        total[1] += n
    return per_layer, total, len(set(a) & set(b)), len(set(a) ^ set(b))


def tuning_log(results, run):
    """Per layer from whittle's quantize log: (best mini-batch loss, iterations/s of the last progress line)."""
    p = results / "logs" / f"quantize-{run}.log"
    if not p.is_file():
        return {}
    found = {}
    for m in re.finditer(r"layer (\d+)/\d+: 200/200 iters \| ([\d.]+) iters/s .*?best ([\d.e+-]+) at", p.read_text()):
        found[int(m.group(1)) - 1] = (float(m.group(3)), float(m.group(2)))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="/work/results_q", type=Path)
    args = ap.parse_args()
    res = args.results
    runs = {name: load_run(res, name) for name, _ in RUNS}

    base = runs["bf16"]
    print("Compact (docs/RESULTS.md): perplexity per held-out file, its geometric mean and change, arithmetic "
          "accuracy and its paired change, loops.\n")
    print("| model | ppl prose | code | arith | chat | geo-mean | Δ geo-mean | arith accuracy | Δ arith (paired) "
          "| loops T 0.8 | loops greedy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, label in RUNS:
        r = runs[name]
        if "ppl_geo" not in r or "acc" not in r:
            continue
        d = r["ppl_dom"]
        dp = "—" if r is base else f"{100 * (r['ppl_geo'] / base['ppl_geo'] - 1):+.2f} %"
        da = "—"
        if r is not base and "acc_items" in base:
            m, se, _, _ = paired(r, base)
            da = f"{100 * m:+.1f} ± {100 * se:.1f}"
        print(f"| {label} | {d['prose']:.2f} | {d['code']:.2f} | {d['arith']:.3f} | {d['chat']:.2f} | "
              f"{r['ppl_geo']:.3f} | {dp} | {100 * r['acc']:.1f} % ± {100 * r['acc_se']:.1f} | {da} | "
              f"{r['loops08_n'][0]}/{r['loops08_n'][1]} | {r['loops0_n'][0]}/{r['loops0_n'][1]} |")
    print()

    print(HEADER)
    for name, label in RUNS:
        print(row(label, runs[name]))

    print("\nPaired arithmetic difference against bf16 (same 400 problems; points, ± SE; better / worse):\n")
    for name, label in RUNS[1:]:
        r = runs[name]
        if "acc_items" in r and "acc_items" in base:
            m, se, up, down = paired(r, base)
            print(f"- {label}: {100 * m:+.1f} ± {100 * se:.1f} ({up} / {down})")

    print("\nPerplexity increase over bf16 (geometric mean of the four files; all tokens), in %:\n")
    for name, label in RUNS[1:]:
        r = runs[name]
        if "ppl_geo" in r and "ppl_geo" in base:
            ref = runs["reap25"] if name.startswith("reap25-") and "ppl_geo" in runs["reap25"] else base
            print(f"- {label}: {100 * (r['ppl_geo'] / ref['ppl_geo'] - 1):+.3f} / "
                  f"{100 * (r['ppl_all'] / ref['ppl_all'] - 1):+.3f}" + (" (over REAP 25 %)" if ref is not base else ""))

    print("\nPaired arithmetic differences between the int4 models (points, ± SE; first better / second better):\n")
    for a, b in [("autoround-g128", "autoround_ref-g128"), ("autoround-g128", "gptq-g128"), ("gptq-g128", "rtn-g128"),
                 ("autoround-g128", "rtn-g128"), ("autoround-g-1", "gptq-g-1"), ("gptq-g-1", "rtn-g-1"),
                 ("reap25-autoround-g128", "reap25"), ("autoround-g128-seed1", "autoround-g128"),
                 ("autoround-g128-seed2", "autoround-g128"), ("autoround-g128-seed1", "autoround_ref-g128"),
                 ("autoround-g128-seed2", "autoround_ref-g128")]:
        if "acc_items" in runs[a] and "acc_items" in runs[b]:
            m, se, up, down = paired(runs[a], runs[b])
            print(f"- {a} − {b}: {100 * m:+.1f} ± {100 * se:.1f} ({up} / {down})")

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
            f"L{i}: {b['ar_log']['loss_iter0']:.4g} → {b['ar_log']['loss_best']:.4g} ({b.get('block_s', 0):.0f} s)"
            for i, b in enumerate(ref_blocks) if "ar_log" in b))

    mine = report(res, "autoround-g128")
    if mine and ref_blocks:
        logged = tuning_log(res, "autoround-g128")
        print("\nAutoRound side by side, per decoder block (same model, calibration ids and settings). Loss: the raw"
              " MSE of the block output on one mini-batch of 8, the best over the 200 iterations (the iterate each"
              " keeps); time: the whole block (targets, tuning, outputs for the next block).\n")
        print("| block | whittle best mini-batch MSE | auto-round best mini-batch MSE | whittle s | auto-round s "
              "(of it tuning) | auto-round / whittle |")
        print("|---|---:|---:|---:|---:|---:|")
        for b in ref_blocks:
            i = b["index"]
            lw = next((l for l in mine["layers"] if l["layer"] == i), None)
            if lw is None:
                continue
            best = logged.get(i, (float("nan"), 0))[0]
            print(f"| {i} | {best:.4g} | {b.get('raw_mse_min', float('nan')):.4g} | {lw['seconds']:.1f} | "
                  f"{b.get('block_s', 0):.1f} ({b.get('tune_s', 0):.1f}) | {b.get('block_s', 0) / lw['seconds']:.2f} |")

    ref_dir = res / "autoround_ref" / "export"
    if (ref_dir / "config.json").is_file() and (res / "models" / "autoround-g128").is_dir():
        print("\nShare of int4 codes that differ (modules both quantize):\n")
        c = {n: codes(d) for n, d in [("whittle AutoRound", res / "models" / "autoround-g128"),
                                      ("auto-round AutoRound", ref_dir), ("RTN", res / "models" / "rtn-g128")]}
        for x, y in [("whittle AutoRound", "auto-round AutoRound"), ("whittle AutoRound", "RTN"),
                     ("auto-round AutoRound", "RTN")]:
            per_layer, total, common, only = code_agreement(c[x], c[y])
            layers = "; ".join(f"L{l}: {100 * d / n:.2f} %" for l, (d, n) in sorted(per_layer.items()))
            print(f"- {x} vs {y}: {100 * total[0] / max(total[1], 1):.2f} % of {total[1]:,} codes "
                  f"({common} modules; {only} in one only): {layers}")

if __name__ == "__main__":
    main()
