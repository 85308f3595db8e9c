#!/usr/bin/env python3
"""Tables and plot of the REAP pruning results on the bundled model (issue 9).

    .venv/bin/python tools/results/reap_results.py [--results /work/results] [--png docs/reap_pruning.png]

Reads what scripts/reap_results.sh wrote: RESULTS/<run>/{ppl,arith,loops08,loops0}.json (one line of
`whittle eval --json` each; runs named baseline, <calib>-<method>-<ratio> with calib train|prose, and
none-random-<ratio>) and RESULTS/pruned/<run>/reap_report.json (the kept experts). Prints markdown:

- the main table (training-distribution calibration; random has none): perplexity per held-out file,
  geometric mean over the four, arithmetic accuracy with its binomial standard error, loops at T 0.8
  and greedy;
- paired arithmetic differences between criteria at each ratio (same 400 problems: the standard error
  of the mean per-problem difference, which is smaller than the unpaired one when answers correlate);
- the calibration comparison (train: MODEL/calibration.txt, the training mix; v1: the calibration file
  that preceded it, domains in proportion to their training tokens; prose: prose only);
- how many experts two criteria (or two calibrations) keep in common;
- the share of the routings and of the REAP mass of a calibration set (RESULTS/stats/train.json and, if
  present, RESULTS/stats/domains/<domain>.json: REAP statistics of one domain's training text) that fall
  on the experts each run drops;
- the seconds each evaluation took.

Writes a two-panel PNG: arithmetic accuracy and geometric-mean perplexity against the share of experts
removed (floor(32 x ratio) / 32: --ratio 0.40 removes 12 of 32),
one line per criterion (solid: training-distribution calibration; dashed: prose only).
Missing runs are shown as "—" and left out of the plot, so it can be run while results come in.
"""

import argparse
import json
import math
from pathlib import Path

DOMAINS = ["prose", "code", "arith", "chat"]
METHODS = ["reap", "frequency", "ean", "random"]
RATIOS = ["0.25", "0.40", "0.50"]
CALIBS = ["train", "v1", "prose"]
DROP_RUNS = [("train", "reap"), ("train", "frequency"), ("train", "ean"), ("none", "random"), ("prose", "reap"),
             ("prose", "frequency"), ("prose", "ean"), ("v1", "reap"), ("v1", "frequency"), ("v1", "ean")]
# floor(32 x ratio) experts are dropped per layer (src/prune/expert_selection.h): 8, 12, 16 of 32
SHARE = {"0": 0.0, "0.25": 8 / 32, "0.40": 12 / 32, "0.50": 16 / 32}
COLORS = {"reap": "tab:blue", "frequency": "tab:orange", "ean": "tab:green", "random": "tab:gray"}


def loops(ids, min_tail=64, min_repeats=3):
    """docs/EVAL.md's loop rule on a token list: the last max(64, 3p) tokens repeat with period p."""
    n = len(ids)
    for p in range(1, n // min_repeats + 1):
        t = max(min_tail, min_repeats * p)
        if t > n:
            break
        if all(ids[i] == ids[i - p] for i in range(n - t + p, n)):
            return True
    return False


_TOKENIZER = []


def tokenizer():
    """The model's tokenizer (tokenizers package) or None: used only to re-tokenize arith outputs."""
    if not _TOKENIZER:
        try:
            from tokenizers import Tokenizer

            _TOKENIZER.append(Tokenizer.from_file("models/tiny-glm5/tokenizer.json"))
        except Exception:  # noqa: BLE001 - optional column
            _TOKENIZER.append(None)
    return _TOKENIZER[0]


def read_task(path):
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return json.loads(path.read_text().splitlines()[0])


def load_run(results, run):
    d = results / run
    r = {"run": run}
    for part in ["ppl", "arith", "loops08", "loops0", "loopsq08"]:
        r[part] = read_task(d / f"{part}.json")
        sec = d / f"{part}.seconds"
        r[part + "_s"] = int(sec.read_text()) if sec.is_file() else None
    if r["ppl"]:
        files = {Path(f["file"]).stem: f for f in r["ppl"]["files"]}
        r["ppl_dom"] = {k: files[k]["ppl"] for k in DOMAINS if k in files}
        r["ppl_geo"] = math.exp(sum(math.log(v) for v in r["ppl_dom"].values()) / len(r["ppl_dom"]))
        r["ppl_all"] = r["ppl"]["total"]["ppl"]
    if r["arith"]:
        a = r["arith"]
        r["acc"] = a["accuracy"]
        r["acc_se"] = math.sqrt(a["accuracy"] * (1 - a["accuracy"]) / a["items"])
        r["acc_files"] = {Path(f["file"]).stem: f for f in a["files"]}
        r["no_answer"] = a["no_answer"]
        # greedy answers that run on to the end of the context (or --max-tokens) without EOS or a #### line
        r["runaway"] = sum(1 for o in a["outputs"] if o["stop"] in ("context full", "max tokens"))
        tok = tokenizer()
        if tok is not None:  # arith outputs re-tokenized (about the generated ids), put to the loop rule
            r["arith_loops"] = sum(1 for o in a["outputs"]
                                   if loops(tok.encode(o["output"], add_special_tokens=False).ids))
        r["acc_items"] = {(o["file"], o["line"]): bool(o["correct"]) for o in a["outputs"]}
    for part in ["loops08", "loops0", "loopsq08"]:
        if r[part]:
            r[part + "_n"] = (r[part]["looping"], r[part]["prompts"])
            r[part + "_long"] = sum(1 for o in r[part]["outputs"] if o["stop"] != "eos")
            arith_src = [o for o in r[part]["outputs"] if Path(o["source"].split("@")[0]).name == "arith.txt"]
            r[part + "_arith"] = (sum(1 for o in arith_src if o["loops"]), len(arith_src))
    return r


def run_name(calib, method, ratio):
    if ratio == "0":
        return "baseline"
    return f"none-random-{ratio}" if method == "random" else f"{calib}-{method}-{ratio}"


def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def loops_str(r, part):
    """looping/prompts (outputs that never reach EOS)"""
    v = r.get(part + "_n")
    return "—" if v is None else f"{v[0]}/{v[1]} ({r[part + '_long']})"


def acc_str(r):
    if "acc" not in r:
        return "—"
    return f"{100 * r['acc']:.1f} ± {100 * r['acc_se']:.1f}"


def acc_split(r):
    if "acc_files" not in r:
        return "—"
    f = r["acc_files"]
    return " / ".join(f"{100 * f[k]['accuracy']:.0f}" for k in ["arith_one_step", "arith_two_step"] if k in f)


def row(label, r):
    dom = r.get("ppl_dom", {})
    cells = [label] + [fmt(dom.get(k)) for k in DOMAINS] + [fmt(r.get("ppl_geo")), acc_str(r), acc_split(r),
                                                            fmt(r.get("no_answer"), "d"), fmt(r.get("runaway"), "d"),
                                                            fmt(r.get("arith_loops"), "d"),
                                                            loops_str(r, "loops08"), loops_str(r, "loops0"),
                                                            ("—" if "loops0_arith" not in r else
                                                             "%d/%d" % r["loops0_arith"]),
                                                            loops_str(r, "loopsq08")]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| model | ppl prose | ppl code | ppl arith | ppl chat | ppl geo-mean | arith acc % (± SE) "
          "| 1-step / 2-step % | no answer | runaway | arith loops | loops T 0.8 | loops greedy "
          "| of which arith.txt | loops T 0.8 arith q. |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def paired(a, b):
    """Mean per-problem accuracy difference a − b on the problems both answered, and its standard error."""
    keys = sorted(set(a["acc_items"]) & set(b["acc_items"]))
    d = [int(a["acc_items"][k]) - int(b["acc_items"][k]) for k in keys]
    n = len(d)
    m = sum(d) / n
    var = sum((x - m) ** 2 for x in d) / (n - 1)
    return m, math.sqrt(var / n), sum(1 for x in d if x > 0), sum(1 for x in d if x < 0)


def kept_sets(results, run):
    p = results / "pruned" / run / "reap_report.json"
    if not p.is_file():
        return None
    rep = json.loads(p.read_text())
    return {L["layer"]: set(L["kept"]) for L in rep["layers"]}


def overlap(k1, k2):
    if k1 is None or k2 is None:
        return None
    return sum(len(k1[L] & k2[L]) for L in k1), sum(len(k1[L]) for L in k1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="/work/results")
    ap.add_argument("--png", default="docs/reap_pruning.png")
    args = ap.parse_args()
    res = Path(args.results)

    runs = {}
    for d in sorted(res.iterdir()):
        if d.is_dir() and d.name not in ("pruned", "stats", "logs", "calib"):
            runs[d.name] = load_run(res, d.name)
    base = runs.get("baseline", {"run": "baseline"})

    out = []
    out.append("### Training-distribution calibration (random: no calibration)\n")
    out.append(HEADER)
    out.append(row("unpruned", base))
    for ratio in RATIOS:
        for m in METHODS:
            name = run_name("train", m, ratio)
            out.append(row(f"{m} {int(round(float(ratio) * 100))}%", runs.get(name, {})))
    out.append("")

    out.append("### Paired arithmetic differences (percentage points; + = the first criterion better)\n")
    out.append("| ratio | comparison | Δ acc (pp) | SE (pp) | problems only the first gets | only the second |")
    out.append("|---|---|---:|---:|---:|---:|")
    for ratio in RATIOS:
        for a, b in [("reap", "frequency"), ("reap", "ean"), ("reap", "random"), ("frequency", "ean"),
                     ("ean", "random"), ("frequency", "random")]:
            ra, rb = runs.get(run_name("train", a, ratio), {}), runs.get(run_name("train", b, ratio), {})
            if "acc_items" in ra and "acc_items" in rb:
                m, se, wa, wb = paired(ra, rb)
                out.append(f"| {ratio} | {a} − {b} | {100 * m:+.1f} | {100 * se:.1f} | {wa} | {wb} |")
    for ratio in RATIOS:
        for m_ in ["reap", "frequency", "ean"]:
            for other in ["prose", "v1"]:
                ra, rb = runs.get(run_name("train", m_, ratio), {}), runs.get(run_name(other, m_, ratio), {})
                if "acc_items" in ra and "acc_items" in rb:
                    m, se, wa, wb = paired(ra, rb)
                    out.append(f"| {ratio} | {m_}: train − {other} calibration | {100 * m:+.1f} | {100 * se:.1f} "
                               f"| {wa} | {wb} |")
    out.append("")

    out.append("### Calibration: training mix (default) vs v1 (token shares) vs prose only\n")
    out.append(HEADER)
    out.append(row("unpruned", base))
    for m in ["reap", "frequency", "ean"]:
        for ratio in RATIOS:
            for calib in CALIBS:
                r = runs.get(run_name(calib, m, ratio))
                if r and (r.get("ppl") or r.get("arith")):
                    out.append(row(f"{m} {int(round(float(ratio) * 100))}% ({calib})", r))
    out.append("")

    out.append("### Experts kept in common (of 5 layers × kept per layer)\n")
    out.append("| ratio | reap ∩ frequency | reap ∩ ean | frequency ∩ ean | reap: train ∩ prose "
               "| frequency: train ∩ prose | ean: train ∩ prose | reap: train ∩ v1 | frequency: train ∩ v1 "
               "| ean: train ∩ v1 |")
    out.append("|---|" + "---:|" * 9)
    for ratio in RATIOS:
        ks = {(c, m): kept_sets(res, run_name(c, m, ratio)) for c in CALIBS for m in METHODS[:3]}
        cells = []
        for k1, k2 in [(("train", "reap"), ("train", "frequency")), (("train", "reap"), ("train", "ean")),
                       (("train", "frequency"), ("train", "ean")), (("train", "reap"), ("prose", "reap")),
                       (("train", "frequency"), ("prose", "frequency")), (("train", "ean"), ("prose", "ean")),
                       (("train", "reap"), ("v1", "reap")), (("train", "frequency"), ("v1", "frequency")),
                       (("train", "ean"), ("v1", "ean"))]:
            o = overlap(ks[k1], ks[k2])
            cells.append("—" if o is None else f"{o[0]}/{o[1]}")
        out.append(f"| {ratio} | " + " | ".join(cells) + " |")
    out.append("")

    # share of the routings (top-k slots) and of the REAP mass (sum of gate x ||out||) of a calibration
    # set that land on the experts a run drops
    stat_sets = [("training mix (calibration.txt)", res / "stats" / "train.json")]
    stat_sets += [(f"{d} (training text)", res / "stats" / "domains" / f"{d}.json") for d in DOMAINS]
    for title, path in stat_sets:
        if not path.is_file():
            continue
        st = {L["layer"]: L["experts"] for L in json.loads(path.read_text())["layers"]}
        out.append(f"### Dropped share of the routings / of the REAP mass (Σ gate·‖out‖) of {title}\n")
        out.append("| ratio | " + " | ".join(f"{m} ({c})" for c, m in DROP_RUNS) + " |")
        out.append("|---|" + "---:|" * len(DROP_RUNS))
        for ratio in RATIOS:
            cells = []
            for c, m in DROP_RUNS:
                k = kept_sets(res, run_name(c, m, ratio))
                if k is None:
                    cells.append("—")
                    continue
                tot, drop = [0.0, 0.0], [0.0, 0.0]
                for L, ex in st.items():
                    for i, e in enumerate(ex):
                        for j, key in enumerate(["count", "sum_gate_norm"]):
                            tot[j] += e[key]
                            if i not in k[L]:
                                drop[j] += e[key]
                cells.append(f"{100 * drop[0] / tot[0]:.0f}% / {100 * drop[1] / tot[1]:.0f}%")
            out.append(f"| {ratio} | " + " | ".join(cells) + " |")
        out.append("")

    out.append("### Wall seconds per evaluation (2 jobs side by side, 1 thread each, shared 2-core machine)\n")
    out.append("| run | ppl | arith | loops T 0.8 | loops greedy | loops T 0.8 arith q. |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        secs = [r.get(p + "_s") for p in ["ppl", "arith", "loops08", "loops0", "loopsq08"]]
        if not any(secs):
            continue
        out.append(f"| {name} | " + " | ".join(str(s_ or "—") for s_ in secs) + " |")
    print("\n".join(out))

    plot(runs, base, args.png)


def plot(runs, base, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.2), dpi=90)
    series = [(m, "train", "-") for m in METHODS] + [(m, "prose", "--") for m in ["reap", "frequency", "ean"]]
    for m, calib, ls in series:
        xs, acc, ppl = [], [], []
        for ratio in ["0"] + RATIOS:
            r = base if ratio == "0" else runs.get(run_name(calib, m, ratio), {})
            if "acc" in r and "ppl_geo" in r:
                xs.append(SHARE[ratio])
                acc.append(100 * r["acc"])
                ppl.append(r["ppl_geo"])
        if len(xs) < 2:
            continue
        label = m if calib == "train" else f"{m} (prose calib.)"
        ax1.plot(xs, acc, ls, marker="o", ms=3, color=COLORS[m], label=label, lw=1.2)
        ax2.plot(xs, ppl, ls, marker="o", ms=3, color=COLORS[m], label=label, lw=1.2)
    ax1.set_title("arithmetic accuracy (400 problems)", fontsize=9)
    ax1.set_ylabel("accuracy %", fontsize=8)
    ax2.set_title("perplexity, geo-mean of prose/code/arith/chat", fontsize=9)
    ax2.set_ylabel("perplexity", fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xlabel("--ratio (experts removed per layer)", fontsize=8)
        ax.set_xticks([0, 0.25, 0.375, 0.5])
        ax.set_xticklabels(["0", "0.25\n(8/32)", "0.40\n(12/32)", "0.50\n(16/32)"])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=6.5, frameon=False)
    fig.suptitle("tiny-glm5 (32 experts top-4): expert pruning criteria", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    print(f"\nwrote {png} ({Path(png).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
